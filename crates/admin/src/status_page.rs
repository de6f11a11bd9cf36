//! `/status`: one HTML page, rendered here from a [`StatusSnapshot`], with no scripts and no
//! external assets; a `<meta http-equiv="refresh">` reloads it. Everything that comes from
//! clients or the logs (user names, paths, addresses, messages) is HTML-escaped.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use ferroftp_server::{RecentError, StatusSnapshot, TransferSnapshot};

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.5em}\
table{border-collapse:collapse}th,td{padding:.25em .7em;border-bottom:1px solid #ddd;text-align:left}\
td.number{text-align:right;font-variant-numeric:tabular-nums}\
.draining{color:#a40}.level-ERROR{color:#b00}.level-WARN{color:#a60}";

/// The status page: `snapshot` and `errors` (newest first) as of `now`, reloading itself
/// every `refresh_seconds`.
pub fn render_status_page(
    snapshot: &StatusSnapshot,
    errors: &[RecentError],
    now: SystemTime,
    refresh_seconds: u32,
) -> String {
    let mut page = String::with_capacity(4096 + snapshot.sessions.len() * 256);
    // Writing to a String cannot fail.
    let _ = write_page(&mut page, snapshot, errors, now, refresh_seconds);
    page
}

fn write_page(
    page: &mut String,
    snapshot: &StatusSnapshot,
    errors: &[RecentError],
    now: SystemTime,
    refresh_seconds: u32,
) -> std::fmt::Result {
    write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{refresh_seconds}\">\
         <title>ferroftp status</title><style>{STYLE}</style></head><body>\n\
         <h1>ferroftp</h1>\n"
    )?;
    let state = if snapshot.draining {
        "<span class=\"draining\">draining</span>"
    } else if snapshot.accepting {
        "accepting"
    } else {
        "not accepting"
    };
    writeln!(
        page,
        "<p id=\"summary\">Up {} · {state} · {} session{} · passive ports: {} of {} in use</p>",
        duration_text(snapshot.uptime),
        snapshot.sessions.len(),
        if snapshot.sessions.len() == 1 {
            ""
        } else {
            "s"
        },
        snapshot.passive_in_use,
        snapshot.passive_capacity,
    )?;
    writeln!(
        page,
        "<p id=\"defender\">Defender: {} address{} banned (<code>GET /bans</code>)</p>",
        snapshot.banned_addresses,
        if snapshot.banned_addresses == 1 {
            ""
        } else {
            "es"
        },
    )?;

    page.push_str("<h2>Sessions</h2>\n");
    if snapshot.sessions.is_empty() {
        page.push_str("<p>No session is open.</p>\n");
    } else {
        page.push_str(
            "<table id=\"sessions\"><thead><tr><th>#</th><th>User</th><th>Client</th>\
             <th>Listener</th><th>Connected</th><th>Idle</th><th>Transfer</th>\
             <th>Bytes</th><th>Rate</th></tr></thead><tbody>\n",
        );
        for session in &snapshot.sessions {
            write!(
                page,
                "<tr><td class=\"number\">{}</td><td class=\"user\">{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td>",
                session.id,
                session
                    .user
                    .as_deref()
                    .map_or_else(|| "<i>not logged in</i>".to_owned(), escape),
                escape(&session.client.to_string()),
                escape(&session.listener),
                duration_text(session.connected_for),
                duration_text(session.idle_for),
            )?;
            match &session.transfer {
                Some(transfer) => write_transfer(page, transfer)?,
                None => page.push_str("<td>—</td><td></td><td></td>"),
            }
            page.push_str("</tr>\n");
        }
        page.push_str("</tbody></table>\n");
    }

    page.push_str("<h2>Recent warnings and errors</h2>\n");
    if errors.is_empty() {
        page.push_str("<p>None since the start.</p>\n");
    } else {
        page.push_str(
            "<table id=\"errors\"><thead><tr><th>When</th><th>Level</th><th>Message</th>\
             </tr></thead><tbody>\n",
        );
        for error in errors {
            let age = now.duration_since(error.at).unwrap_or_default();
            writeln!(
                page,
                "<tr><td>{} ago</td><td class=\"level-{}\">{}</td><td>{}</td></tr>",
                duration_text(age),
                error.level,
                error.level,
                escape(&error.message),
            )?;
        }
        page.push_str("</tbody></table>\n");
    }
    page.push_str("</body></html>\n");
    Ok(())
}

fn write_transfer(page: &mut String, transfer: &TransferSnapshot) -> std::fmt::Result {
    write!(
        page,
        "<td class=\"transfer\">{} <span class=\"path\">{}</span> for {}</td>\
         <td class=\"number bytes\" data-bytes=\"{}\">{} bytes</td><td class=\"number\">{}/s</td>",
        transfer.direction.as_str(),
        escape(&transfer.path),
        duration_text(transfer.elapsed),
        transfer.bytes,
        transfer.bytes,
        size_text(transfer.rate()),
    )
}

/// `&`, `<`, `>`, `"` and `'` as entities: safe in text and in quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`: the two largest units.
fn duration_text(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (days, hours, minutes, seconds) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else if minutes > 0 {
        format!("{minutes}m {seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// Bytes in binary units with one decimal: `512 B`, `1.5 KiB`, `20.0 MiB`.
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroftp_server::{SessionSnapshot, TransferDirection};

    fn snapshot(sessions: Vec<SessionSnapshot>) -> StatusSnapshot {
        StatusSnapshot {
            uptime: Duration::from_secs(3725),
            sessions,
            passive_in_use: 1,
            passive_capacity: 101,
            accepting: true,
            draining: false,
            banned_addresses: 0,
        }
    }

    fn session(user: Option<&str>, transfer: Option<TransferSnapshot>) -> SessionSnapshot {
        SessionSnapshot {
            id: 7,
            user: user.map(str::to_owned),
            client: "192.0.2.10:40123".parse().unwrap(),
            listener: "127.0.0.1:2121".to_owned(),
            connected_for: Duration::from_secs(65),
            idle_for: Duration::from_secs(3),
            transfer,
        }
    }

    #[test]
    fn escapes_everything_that_clients_supply() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        let hostile = TransferSnapshot {
            direction: TransferDirection::Upload,
            path: "/<img src=x onerror=alert(1)>.txt".to_owned(),
            bytes: 1,
            elapsed: Duration::from_secs(1),
        };
        let errors = [RecentError {
            at: SystemTime::UNIX_EPOCH,
            level: "WARN",
            message: "login failed user=<b>mallory</b>".to_owned(),
        }];
        let page = render_status_page(
            &snapshot(vec![session(Some("<u>eve</u>"), Some(hostile))]),
            &errors,
            SystemTime::UNIX_EPOCH + Duration::from_secs(30),
            5,
        );
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<u>"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(page.contains("/&lt;img src=x onerror=alert(1)&gt;.txt"));
        assert!(page.contains("&lt;u&gt;eve&lt;/u&gt;"));
        assert!(page.contains("login failed user=&lt;b&gt;mallory&lt;/b&gt;"));
        assert!(page.contains("<td>30s ago</td>"));
    }

    #[test]
    fn shows_a_running_transfer_with_its_bytes_and_rate() {
        let transfer = TransferSnapshot {
            direction: TransferDirection::Download,
            path: "/big.bin".to_owned(),
            bytes: 3 * 1024 * 1024,
            elapsed: Duration::from_secs(2),
        };
        let page = render_status_page(
            &snapshot(vec![session(Some("alice"), Some(transfer))]),
            &[],
            SystemTime::now(),
            5,
        );
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(page.contains("<td class=\"user\">alice</td>"));
        assert!(page.contains("download <span class=\"path\">/big.bin</span> for 2s"));
        assert!(page.contains("data-bytes=\"3145728\">3145728 bytes</td>"));
        assert!(page.contains("1.5 MiB/s"));
        assert!(page.contains("192.0.2.10:40123"));
        assert!(page.contains("Up 1h 2m · accepting · 1 session · passive ports: 1 of 101 in use"));
        assert!(page.contains("None since the start."));
        // No external assets: nothing to fetch.
        assert!(!page.contains("src="));
        assert!(!page.contains("href="));
    }

    #[test]
    fn an_idle_server_and_a_draining_one() {
        let mut idle = snapshot(Vec::new());
        let page = render_status_page(&idle, &[], SystemTime::now(), 5);
        assert!(page.contains("No session is open."));
        assert!(page.contains("· 0 sessions ·"));
        assert!(page.contains("Defender: 0 addresses banned"));
        idle.banned_addresses = 1;
        let page = render_status_page(&idle, &[], SystemTime::now(), 5);
        assert!(page.contains("Defender: 1 address banned (<code>GET /bans</code>)"));
        idle.draining = true;
        let page = render_status_page(&idle, &[], SystemTime::now(), 5);
        assert!(page.contains("<span class=\"draining\">draining</span>"));
        let page = render_status_page(
            &snapshot(vec![session(None, None)]),
            &[],
            SystemTime::now(),
            5,
        );
        assert!(page.contains("<i>not logged in</i>"));
    }

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(duration_text(Duration::from_secs(0)), "0s");
        assert_eq!(duration_text(Duration::from_secs(250)), "4m 10s");
        assert_eq!(duration_text(Duration::from_secs(7500)), "2h 5m");
        assert_eq!(duration_text(Duration::from_secs(273_600)), "3d 4h");
        assert_eq!(size_text(512), "512 B");
        assert_eq!(size_text(1536), "1.5 KiB");
        assert_eq!(size_text(20 * 1024 * 1024), "20.0 MiB");
    }
}
