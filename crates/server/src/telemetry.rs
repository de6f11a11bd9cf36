//! The server's metrics, recorded through the `metrics` facade: nothing is kept unless a
//! recorder is installed (the admin listener installs the Prometheus one). Every name is
//! here, once; every label takes values from a fixed set (verbs outside the command table
//! are `other`), except `user`, which only appears when per-user metrics are on and then
//! names accounts of the users file (only logged-in users). docs/operations.md, "Metrics",
//! lists the series and their meaning.
//!
//! Each call is one registry lookup in the recorder: per session, command, reply or
//! transfer, never per chunk of data.

use std::time::Duration;

use ferroftp_proto::command::Verb;

use crate::TransferDirection;

impl TransferDirection {
    /// `download`, `upload` or `listing`: the `direction` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Upload => "upload",
            Self::Listing => "listing",
        }
    }
}

/// Sessions accepted, by `listener`.
pub const SESSIONS_TOTAL: &str = "ferroftp_sessions_total";
/// Sessions open now, by `listener` (a gauge set when scraped).
pub const SESSIONS_OPEN: &str = "ferroftp_sessions_open";
/// Login attempts, by `result`: `ok`, `rejected`, `unavailable`.
pub const LOGINS_TOTAL: &str = "ferroftp_logins_total";
/// Command lines received, by `verb`.
pub const COMMANDS_TOTAL: &str = "ferroftp_commands_total";
/// Replies sent, by `class` (`1xx` … `5xx`).
pub const REPLIES_TOTAL: &str = "ferroftp_replies_total";
/// Finished transfers, by `direction` and `result` (`ok`, `failed`, `aborted`).
pub const TRANSFERS_TOTAL: &str = "ferroftp_transfers_total";
/// Bytes moved by finished transfers, by `direction` and `result`.
pub const TRANSFER_BYTES_TOTAL: &str = "ferroftp_transfer_bytes_total";
/// Duration of finished transfers (histogram), by `direction`.
pub const TRANSFER_DURATION_SECONDS: &str = "ferroftp_transfer_duration_seconds";
/// From an upload's last byte to its publication: the fsync and the rename (histogram).
pub const UPLOAD_COMMIT_SECONDS: &str = "ferroftp_upload_commit_duration_seconds";
/// Passive ports held by sessions (a gauge set when scraped).
pub const PASSIVE_PORTS_IN_USE: &str = "ferroftp_passive_ports_in_use";
/// Ports of the passive range (a gauge set when scraped).
pub const PASSIVE_PORTS_CAPACITY: &str = "ferroftp_passive_ports_capacity";
/// PASV/EPSV answered 425 because every port was taken.
pub const PASSIVE_EXHAUSTED_TOTAL: &str = "ferroftp_passive_exhausted_total";
/// A port handed again to the client that used it within the reuse delay (no other free).
pub const PASSIVE_EARLY_REUSE_TOTAL: &str = "ferroftp_passive_early_reuse_total";
/// Data connections refused or not made, by `cause`: `timeout`, `foreign_peer`, `bounce`.
pub const DATA_CONNECTIONS_REFUSED_TOTAL: &str = "ferroftp_data_connections_refused_total";
/// TLS handshakes, by `connection` (`control`, `data`) and `result` (`ok`, `failed`).
pub const TLS_HANDSHAKES_TOTAL: &str = "ferroftp_tls_handshakes_total";
/// Protected data connections refused because they did not resume the session's TLS session
/// (counted where the check is, in `transfer/connect.rs`).
pub const TLS_REUSE_REFUSED_TOTAL: &str = "ferroftp_tls_reuse_refused_total";
/// PROXY protocol headers refused, by `reason`: `untrusted` (from a source not in
/// `proxy_protocol.trusted`), `invalid` (from a trusted source, malformed or missing).
pub const PROXY_HEADERS_REJECTED_TOTAL: &str = "ferroftp_proxy_headers_rejected_total";
/// Addresses banned by the defender (each ban once).
pub const DEFENDER_BANS_TOTAL: &str = "ferroftp_defender_bans_total";
/// Connections refused at accept because their address is banned.
pub const DEFENDER_REFUSED_TOTAL: &str = "ferroftp_defender_refused_connections_total";
/// Events scored by the defender, by `event` (`DefenderEvent::as_str`).
pub const DEFENDER_EVENTS_TOTAL: &str = "ferroftp_defender_events_total";
/// Addresses banned now (a gauge set when scraped).
pub const DEFENDER_BANNED_ADDRESSES: &str = "ferroftp_defender_banned_addresses";
/// Configuration reloads, by `result` (`ok`, `failed`).
pub const RELOADS_TOTAL: &str = "ferroftp_reloads_total";
/// Per user (`admin.per_user_metrics`): logins that succeeded, by `user`.
pub const USER_LOGINS_TOTAL: &str = "ferroftp_user_logins_total";
/// Per user: finished transfers, by `user`, `direction` and `result`.
pub const USER_TRANSFERS_TOTAL: &str = "ferroftp_user_transfers_total";
/// Per user: bytes of finished transfers, by `user`, `direction` and `result`.
pub const USER_TRANSFER_BYTES_TOTAL: &str = "ferroftp_user_transfer_bytes_total";

/// Every series with its help text, for the exporter's `# HELP` lines.
pub const DESCRIPTIONS: &[(&str, &str)] = &[
    (SESSIONS_TOTAL, "Control connections accepted, by listener."),
    (SESSIONS_OPEN, "Sessions open now, by listener."),
    (
        LOGINS_TOTAL,
        "Login attempts by result (ok, rejected, unavailable).",
    ),
    (
        COMMANDS_TOTAL,
        "Command lines received, by verb (other: not a known verb).",
    ),
    (REPLIES_TOTAL, "Replies sent, by code class."),
    (
        TRANSFERS_TOTAL,
        "Finished transfers by direction and result.",
    ),
    (
        TRANSFER_BYTES_TOTAL,
        "Bytes moved by finished transfers, by direction and result.",
    ),
    (
        TRANSFER_DURATION_SECONDS,
        "Duration of finished transfers, by direction.",
    ),
    (
        UPLOAD_COMMIT_SECONDS,
        "Time from an upload's last byte to its publication (fsync and rename).",
    ),
    (PASSIVE_PORTS_IN_USE, "Passive ports held by sessions now."),
    (PASSIVE_PORTS_CAPACITY, "Ports in the passive range."),
    (
        PASSIVE_EXHAUSTED_TOTAL,
        "PASV/EPSV refused with 425: every passive port in use.",
    ),
    (
        PASSIVE_EARLY_REUSE_TOTAL,
        "Passive ports handed to the same client again within the reuse delay.",
    ),
    (
        DATA_CONNECTIONS_REFUSED_TOTAL,
        "Data connections refused or not made, by cause (timeout, foreign_peer, bounce).",
    ),
    (
        TLS_HANDSHAKES_TOTAL,
        "TLS handshakes by connection (control, data) and result.",
    ),
    (
        TLS_REUSE_REFUSED_TOTAL,
        "Protected data connections refused: no resumption of the session's TLS session.",
    ),
    (
        PROXY_HEADERS_REJECTED_TOTAL,
        "PROXY protocol headers refused, by reason (untrusted, invalid).",
    ),
    (
        DEFENDER_BANS_TOTAL,
        "Client addresses banned by the defender.",
    ),
    (
        DEFENDER_REFUSED_TOTAL,
        "Connections closed at accept because their address is banned.",
    ),
    (
        DEFENDER_EVENTS_TOTAL,
        "Events scored against client addresses, by event.",
    ),
    (DEFENDER_BANNED_ADDRESSES, "Client addresses banned now."),
    (RELOADS_TOTAL, "Configuration reloads by result."),
    (USER_LOGINS_TOTAL, "Successful logins per user."),
    (
        USER_TRANSFERS_TOTAL,
        "Finished transfers per user, direction and result.",
    ),
    (
        USER_TRANSFER_BYTES_TOTAL,
        "Bytes of finished transfers per user, direction and result.",
    ),
];

/// The series that are histograms, with their buckets in seconds.
pub const HISTOGRAMS: &[(&str, &[f64])] = &[
    (
        TRANSFER_DURATION_SECONDS,
        &[
            0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0,
        ],
    ),
    (
        UPLOAD_COMMIT_SECONDS,
        &[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0,
        ],
    ),
];

/// Creates, at 0, every series whose labels are known in advance (all but the verbs, the
/// listeners and the users), so that a rate or an alert on them works from the start instead
/// of from their first event. Called once a recorder is installed.
pub fn register_known_series() {
    for result in ["ok", "rejected", "unavailable"] {
        metrics::counter!(LOGINS_TOTAL, "result" => result).increment(0);
    }
    for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
        metrics::counter!(REPLIES_TOTAL, "class" => class).increment(0);
    }
    for direction in [
        TransferDirection::Download,
        TransferDirection::Upload,
        TransferDirection::Listing,
    ] {
        let direction = direction.as_str();
        for result in [
            TransferResult::Ok,
            TransferResult::Failed,
            TransferResult::Aborted,
        ] {
            let result = result.as_str();
            metrics::counter!(TRANSFERS_TOTAL, "direction" => direction, "result" => result)
                .increment(0);
            metrics::counter!(TRANSFER_BYTES_TOTAL, "direction" => direction, "result" => result)
                .increment(0);
        }
    }
    for cause in ["timeout", "foreign_peer", "bounce"] {
        metrics::counter!(DATA_CONNECTIONS_REFUSED_TOTAL, "cause" => cause).increment(0);
    }
    for connection in ["control", "data"] {
        for result in ["ok", "failed"] {
            metrics::counter!(TLS_HANDSHAKES_TOTAL, "connection" => connection, "result" => result)
                .increment(0);
        }
    }
    for reason in ["untrusted", "invalid"] {
        metrics::counter!(PROXY_HEADERS_REJECTED_TOTAL, "reason" => reason).increment(0);
    }
    for result in ["ok", "failed"] {
        metrics::counter!(RELOADS_TOTAL, "result" => result).increment(0);
    }
    metrics::counter!(PASSIVE_EXHAUSTED_TOTAL).increment(0);
    metrics::counter!(PASSIVE_EARLY_REUSE_TOTAL).increment(0);
    metrics::counter!(TLS_REUSE_REFUSED_TOTAL).increment(0);
    metrics::counter!(DEFENDER_BANS_TOTAL).increment(0);
    metrics::counter!(DEFENDER_REFUSED_TOTAL).increment(0);
    for event in crate::DefenderEvent::ALL {
        metrics::counter!(DEFENDER_EVENTS_TOTAL, "event" => event.as_str()).increment(0);
    }
}

/// Records a configuration reload (the SIGHUP handler calls it).
pub fn record_reload(ok: bool) {
    metrics::counter!(RELOADS_TOTAL, "result" => ok_or_failed(ok)).increment(1);
}

pub(crate) fn defender_event(event: crate::DefenderEvent) {
    metrics::counter!(DEFENDER_EVENTS_TOTAL, "event" => event.as_str()).increment(1);
}

pub(crate) fn defender_ban() {
    metrics::counter!(DEFENDER_BANS_TOTAL).increment(1);
}

pub(crate) fn defender_refused() {
    metrics::counter!(DEFENDER_REFUSED_TOTAL).increment(1);
}

fn ok_or_failed(ok: bool) -> &'static str {
    if ok { "ok" } else { "failed" }
}

pub(crate) fn session_accepted(listener: &str) {
    metrics::counter!(SESSIONS_TOTAL, "listener" => listener.to_owned()).increment(1);
}

/// How a login ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LoginResult {
    Ok,
    Rejected,
    Unavailable,
    /// The password was right, but the account's policy refused the login (`max_sessions`,
    /// `allow_from`): not password guessing.
    Refused,
}

pub(crate) fn login(result: LoginResult, user: Option<&str>) {
    let label = match result {
        LoginResult::Ok => "ok",
        LoginResult::Rejected => "rejected",
        LoginResult::Unavailable => "unavailable",
        LoginResult::Refused => "refused",
    };
    metrics::counter!(LOGINS_TOTAL, "result" => label).increment(1);
    if let Some(user) = user {
        metrics::counter!(USER_LOGINS_TOTAL, "user" => user.to_owned()).increment(1);
    }
}

/// The verb label of a command line: a verb of the command table, `other` for anything else
/// (the label's values stay a fixed set whatever clients send).
pub(crate) fn verb_label(line: &[u8]) -> &'static str {
    let name_end = line
        .iter()
        .position(|byte| *byte == b' ')
        .unwrap_or(line.len());
    std::str::from_utf8(&line[..name_end])
        .ok()
        .and_then(Verb::from_name)
        .map_or("other", Verb::name)
}

pub(crate) fn command(verb: &'static str) {
    metrics::counter!(COMMANDS_TOTAL, "verb" => verb).increment(1);
}

pub(crate) fn reply(code: u16) {
    let class = match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    };
    metrics::counter!(REPLIES_TOTAL, "class" => class).increment(1);
}

/// How a transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransferResult {
    Ok,
    Failed,
    Aborted,
}

impl TransferResult {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Aborted => "aborted",
        }
    }
}

pub(crate) fn transfer_finished(
    direction: TransferDirection,
    result: TransferResult,
    bytes: u64,
    duration: Duration,
    user: Option<&str>,
) {
    let direction = direction.as_str();
    let result = result.as_str();
    metrics::counter!(TRANSFERS_TOTAL, "direction" => direction, "result" => result).increment(1);
    metrics::counter!(TRANSFER_BYTES_TOTAL, "direction" => direction, "result" => result)
        .increment(bytes);
    metrics::histogram!(TRANSFER_DURATION_SECONDS, "direction" => direction)
        .record(duration.as_secs_f64());
    if let Some(user) = user {
        metrics::counter!(USER_TRANSFERS_TOTAL, "user" => user.to_owned(), "direction" => direction, "result" => result)
            .increment(1);
        metrics::counter!(USER_TRANSFER_BYTES_TOTAL, "user" => user.to_owned(), "direction" => direction, "result" => result)
            .increment(bytes);
    }
}

pub(crate) fn upload_committed(duration: Duration) {
    metrics::histogram!(UPLOAD_COMMIT_SECONDS).record(duration.as_secs_f64());
}

/// Why a data connection was refused or not made.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RefusedDataConnection {
    /// The client did not connect to the passive port, or the active connect timed out.
    Timeout,
    /// A connection to a passive port from another address than the session's client.
    ForeignPeer,
    /// PORT/EPRT naming a third party or a privileged port (RFC 2577 §3).
    Bounce,
}

pub(crate) fn data_connection_refused(cause: RefusedDataConnection, count: u64) {
    let cause = match cause {
        RefusedDataConnection::Timeout => "timeout",
        RefusedDataConnection::ForeignPeer => "foreign_peer",
        RefusedDataConnection::Bounce => "bounce",
    };
    metrics::counter!(DATA_CONNECTIONS_REFUSED_TOTAL, "cause" => cause).increment(count);
}

/// Which connection a TLS handshake secured.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TlsConnection {
    Control,
    Data,
}

pub(crate) fn tls_handshake(connection: TlsConnection, ok: bool) {
    let connection = match connection {
        TlsConnection::Control => "control",
        TlsConnection::Data => "data",
    };
    metrics::counter!(TLS_HANDSHAKES_TOTAL, "connection" => connection, "result" => ok_or_failed(ok))
        .increment(1);
}

/// Why a PROXY header was refused.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ProxyHeaderRejection {
    Untrusted,
    Invalid,
}

pub(crate) fn proxy_header_rejected(reason: ProxyHeaderRejection) {
    let reason = match reason {
        ProxyHeaderRejection::Untrusted => "untrusted",
        ProxyHeaderRejection::Invalid => "invalid",
    };
    metrics::counter!(PROXY_HEADERS_REJECTED_TOTAL, "reason" => reason).increment(1);
}

pub(crate) fn passive_exhausted() {
    metrics::counter!(PASSIVE_EXHAUSTED_TOTAL).increment(1);
}

pub(crate) fn passive_early_reuse() {
    metrics::counter!(PASSIVE_EARLY_REUSE_TOTAL).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verb_labels_are_the_command_table_or_other() {
        assert_eq!(verb_label(b"RETR /a.txt"), "RETR");
        assert_eq!(verb_label(b"retr /a.txt"), "RETR");
        // An alias counts as its verb (RFC 775).
        assert_eq!(verb_label(b"XPWD"), "PWD");
        assert_eq!(verb_label(b"NOOP"), "NOOP");
        assert_eq!(verb_label(b"HACK the planet"), "other");
        assert_eq!(verb_label(b""), "other");
        assert_eq!(verb_label(b"\xff\xfe"), "other");
        assert_eq!(verb_label(b"GET / HTTP/1.1"), "other");
    }

    #[test]
    fn every_series_has_a_description() {
        for name in [
            SESSIONS_TOTAL,
            SESSIONS_OPEN,
            LOGINS_TOTAL,
            COMMANDS_TOTAL,
            REPLIES_TOTAL,
            TRANSFERS_TOTAL,
            TRANSFER_BYTES_TOTAL,
            TRANSFER_DURATION_SECONDS,
            UPLOAD_COMMIT_SECONDS,
            PASSIVE_PORTS_IN_USE,
            PASSIVE_PORTS_CAPACITY,
            PASSIVE_EXHAUSTED_TOTAL,
            PASSIVE_EARLY_REUSE_TOTAL,
            DATA_CONNECTIONS_REFUSED_TOTAL,
            TLS_HANDSHAKES_TOTAL,
            TLS_REUSE_REFUSED_TOTAL,
            PROXY_HEADERS_REJECTED_TOTAL,
            DEFENDER_BANS_TOTAL,
            DEFENDER_REFUSED_TOTAL,
            DEFENDER_EVENTS_TOTAL,
            DEFENDER_BANNED_ADDRESSES,
            RELOADS_TOTAL,
            USER_LOGINS_TOTAL,
            USER_TRANSFERS_TOTAL,
            USER_TRANSFER_BYTES_TOTAL,
        ] {
            assert!(
                DESCRIPTIONS.iter().any(|(described, _)| *described == name),
                "{name} has no description"
            );
        }
    }
}
