//! SITE subcommands (RFC 959 §4.1.3 leaves their syntax to the server): the names and the
//! argument syntax of each, parsed apart from the session so the session only decides.

use crate::reply::{Reply, ReplyCode};

/// A SITE subcommand this server knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum SiteCommand<'line> {
    /// `SITE HELP`.
    Help,
    /// `SITE QUOTA`: the account's usage and limits.
    Quota,
    /// `SITE CHMOD <octal mode> <path>` (the vsftpd and ProFTPD syntax, which lftp's
    /// `mirror -R`, `chmod` and FileZilla send).
    Chmod {
        /// The requested bits, special ones included (the session refuses those).
        mode: u32,
        /// The rest of the line, verbatim: a name may contain spaces.
        path: &'line str,
    },
}

/// The subcommands listed by `SITE HELP` and in `HELP SITE`, with their syntax.
pub(super) const CHMOD_SYNTAX: &str = "CHMOD <octal mode> <path>";

/// Setuid, setgid and sticky: a client never sets them (a setuid file made by an FTP
/// client would run with the server account's rights for any local user).
pub(super) const SPECIAL_MODE_BITS: u32 = 0o7000;

/// Parses the argument of SITE; `Err` carries the reply (502 for an unknown subcommand,
/// 501 for a malformed one).
pub(super) fn parse(argument: &str) -> Result<SiteCommand<'_>, Reply> {
    let (name, rest) = argument.split_once(' ').unwrap_or((argument, ""));
    if name.eq_ignore_ascii_case("HELP") {
        return Ok(SiteCommand::Help);
    }
    if name.eq_ignore_ascii_case("QUOTA") {
        return Ok(SiteCommand::Quota);
    }
    if name.eq_ignore_ascii_case("CHMOD") {
        return parse_chmod(rest);
    }
    Err(Reply::new(
        ReplyCode::NOT_IMPLEMENTED,
        "Unknown SITE command",
    ))
}

fn parse_chmod(rest: &str) -> Result<SiteCommand<'_>, Reply> {
    let syntax_error = || {
        Reply::new(
            ReplyCode::SYNTAX_ERROR_ARGS,
            format!("Syntax: SITE {CHMOD_SYNTAX}"),
        )
    };
    let (mode_text, path) = rest.split_once(' ').ok_or_else(syntax_error)?;
    // chmod(1) octal modes: one to four digits (`644`, `0644`, `4755`).
    if mode_text.is_empty()
        || mode_text.len() > 4
        || !mode_text.bytes().all(|byte| (b'0'..=b'7').contains(&byte))
        || path.is_empty()
    {
        return Err(syntax_error());
    }
    let mode = u32::from_str_radix(mode_text, 8).map_err(|_| syntax_error())?;
    Ok(SiteCommand::Chmod { mode, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_help_and_chmod() {
        assert_eq!(parse("help"), Ok(SiteCommand::Help));
        assert_eq!(
            parse("CHMOD 644 a b.txt"),
            Ok(SiteCommand::Chmod {
                mode: 0o644,
                path: "a b.txt"
            })
        );
        assert_eq!(
            parse("chmod 0755 dir"),
            Ok(SiteCommand::Chmod {
                mode: 0o755,
                path: "dir"
            })
        );
        assert_eq!(
            parse("CHMOD 4755 f"),
            Ok(SiteCommand::Chmod {
                mode: 0o4755,
                path: "f"
            })
        );
    }

    #[test]
    fn malformed_chmod_is_501_and_unknown_is_502() {
        for argument in [
            "CHMOD",
            "CHMOD 644",
            "CHMOD 644 ",
            "CHMOD 8 f",
            "CHMOD u+x f",
            "CHMOD 07777 f",
            "CHMOD  f",
        ] {
            assert_eq!(
                parse(argument).unwrap_err().code,
                ReplyCode::SYNTAX_ERROR_ARGS,
                "{argument:?}"
            );
        }
        assert_eq!(
            parse("UMASK 022").unwrap_err().code,
            ReplyCode::NOT_IMPLEMENTED
        );
    }
}
