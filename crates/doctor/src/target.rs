//! The doctor's target: `ftp://user:password@host:port/path` or `ftps://…` (implicit TLS).

use std::fmt;

/// How the control connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Plain FTP (upgraded with AUTH TLS only when `--explicit-tls` is given).
    Plain,
    /// `ftps://`: TLS from the first byte.
    Implicit,
}

/// A parsed doctor URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// `ftp://` or `ftps://`.
    pub security: Security,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Control port: from the URL, else 21 (ftp) or 990 (ftps).
    pub port: u16,
    /// User name; `anonymous` when the URL has none.
    pub user: String,
    /// Password from the URL, percent-decoded.
    pub password: Option<String>,
    /// Directory to list, `None` for the login directory.
    pub path: Option<String>,
}

impl fmt::Debug for Target {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.display())
    }
}

/// Why a URL names no server the doctor (or the benchmark) can talk to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not `ftp://` or `ftps://`.
    #[error("{0:?} is not an ftp:// or ftps:// URL (e.g. ftp://alice@ftp.example.com:2121/)")]
    Scheme(String),
    /// `ftp://@host`.
    #[error("{0:?}: empty user name")]
    EmptyUser(String),
    /// The host or port part.
    #[error("{url}: {problem}")]
    HostPort {
        /// The URL, without its password.
        url: String,
        /// What is wrong with its host or port.
        problem: HostPortError,
    },
    /// `%` not followed by two hex digits.
    #[error("bad percent escape in the URL")]
    PercentEscape,
    /// Escapes that decode to bytes that are not UTF-8.
    #[error("percent escapes in the URL are not UTF-8")]
    NotUtf8,
}

/// What is wrong with the `host[:port]` of a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostPortError {
    /// `[2001:db8::1` without `]`.
    #[error("unclosed [ in the host")]
    UnclosedBracket,
    /// `[::1]x`.
    #[error("unexpected {0:?} after the host")]
    AfterHost(String),
    /// Nothing before the port.
    #[error("no host")]
    NoHost,
    /// Not a number from 1 to 65535.
    #[error("{0:?} is not a port number")]
    BadPort(String),
}

impl Target {
    /// Parses `ftp://[user[:password]@]host[:port][/path]` (or `ftps://`).
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let (security, rest) = if let Some(rest) = strip_prefix_ignore_case(url, "ftp://") {
            (Security::Plain, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(url, "ftps://") {
            (Security::Implicit, rest)
        } else {
            return Err(UrlError::Scheme(redact_url(url)));
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (percent_decode(user)?, Some(percent_decode(password)?)),
                None => (percent_decode(info)?, None),
            },
            None => ("anonymous".to_owned(), None),
        };
        if user.is_empty() {
            return Err(UrlError::EmptyUser(redact_url(url)));
        }
        let default_port = match security {
            Security::Plain => 21,
            Security::Implicit => 990,
        };
        let (host, port) =
            split_host_port(hostport, default_port).map_err(|problem| UrlError::HostPort {
                url: redact_url(url),
                problem,
            })?;
        let path = percent_decode(path.trim_end_matches('/'))?;
        Ok(Self {
            security,
            host,
            port,
            user,
            password,
            path: (!path.is_empty()).then_some(path),
        })
    }

    /// The URL without the password, for reports.
    pub fn display(&self) -> String {
        let scheme = match self.security {
            Security::Plain => "ftp",
            Security::Implicit => "ftps",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let path = self.path.as_deref().unwrap_or("/");
        format!("{scheme}://{}@{host}:{}{path}", self.user, self.port)
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn split_host_port(hostport: &str, default_port: u16) -> Result<(String, u16), HostPortError> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(HostPortError::UnclosedBracket)?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(HostPortError::AfterHost(after.to_owned())),
            },
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(HostPortError::NoHost);
    }
    let port = match port {
        None | Some("") => default_port,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(HostPortError::BadPort(text.to_owned())),
        },
    };
    Ok((host.to_owned(), port))
}

fn percent_decode(text: &str) -> Result<String, UrlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text
                .get(index + 1..index + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or(UrlError::PercentEscape)?;
            out.push(hex);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UrlError::NotUtf8)
}

/// `url` with the password (if any) replaced by `***`, for error messages.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url() {
        let target = Target::parse("ftp://alice:s%40cret@203.0.113.7:2121/pub/").unwrap();
        assert_eq!(target.security, Security::Plain);
        assert_eq!(target.host, "203.0.113.7");
        assert_eq!(target.port, 2121);
        assert_eq!(target.user, "alice");
        assert_eq!(target.password.as_deref(), Some("s@cret"));
        assert_eq!(target.path.as_deref(), Some("/pub"));
        assert_eq!(target.display(), "ftp://alice@203.0.113.7:2121/pub");
    }

    #[test]
    fn defaults_and_ipv6() {
        let target = Target::parse("ftps://[2001:db8::1]").unwrap();
        assert_eq!(target.security, Security::Implicit);
        assert_eq!((target.host.as_str(), target.port), ("2001:db8::1", 990));
        assert_eq!(target.user, "anonymous");
        assert_eq!(target.password, None);
        assert_eq!(target.path, None);
        let target = Target::parse("FTP://bob@ftp.example.com/").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("ftp.example.com", 21));
        assert_eq!(target.display(), "ftp://bob@ftp.example.com:21/");
    }

    #[test]
    fn bad_urls() {
        for url in [
            "http://x",
            "ftp://",
            "ftp://host:0/",
            "ftp://host:99999",
            "ftp://[::1/",
            "ftp://a:%zz@h",
        ] {
            assert!(Target::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("ftp://a:pw@h:21/x"), "ftp://a:***@h:21/x");
        assert_eq!(redact_url("ftp://a@h:21/x"), "ftp://a@h:21/x");
        assert_eq!(redact_url("ftp://h:21/x"), "ftp://h:21/x");
    }

    #[test]
    fn a_refused_url_never_repeats_its_password() {
        for url in [
            "http://alice:s3cret@ftp.example.com/",
            "ftp://:s3cret@ftp.example.com/",
            "ftp://alice:s3cret@ftp.example.com:99999/",
        ] {
            let error = Target::parse(url).expect_err(url).to_string();
            assert!(!error.contains("s3cret"), "{url} -> {error}");
            assert!(error.contains("***"), "{url} -> {error}");
        }
    }
}
