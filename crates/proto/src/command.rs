//! Commands: the verb table and the line parser.
//!
//! [`Verb::spec`] is the single description of every command: whether it needs a login,
//! whether it takes an argument, whether it may run during a transfer, whether it changes
//! the storage, what FEAT and HELP say about it. Adding a verb means a
//! variant, a name in [`Verb::ALL`], a `spec` arm and a dispatch arm in the session; the
//! compiler points at each.

use crate::reply::{Reply, ReplyCode};

/// Whether a verb takes an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Argument {
    /// No argument; one given is ignored (as most servers do, e.g. `PASV x`).
    None,
    /// An argument is required: without one the reply is 501.
    Required,
    /// An argument may be given.
    Optional,
}

/// What the table says about one verb.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// The command is refused with 530 before login.
    pub needs_login: bool,
    /// The argument rule.
    pub argument: Argument,
    /// The command may be answered while a transfer runs (RFC 959 §4.1.3: ABOR, STAT).
    pub during_transfer: bool,
    /// The command changes the storage: a read-only account gets 550 for it before the
    /// command's own checks (SITE CHMOD, one subcommand of SITE, checks the same rule
    /// itself).
    pub modifies_storage: bool,
    /// The line advertised in FEAT (RFC 2389), if any.
    pub feature: Option<&'static str>,
    /// The syntax shown by `HELP verb`.
    pub syntax: &'static str,
}

macro_rules! verbs {
    ($($(#[doc = $doc:literal])* $variant:ident => $($name:literal)|+;)*) => {
        /// A command verb. Aliases (`XPWD` for `PWD`, RFC 775) parse to the same verb.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Verb { $($(#[doc = $doc])* $variant,)* }

        impl Verb {
            /// Every verb, in HELP order.
            pub const ALL: &'static [Verb] = &[$(Verb::$variant,)*];

            /// The canonical name.
            pub const fn name(self) -> &'static str {
                match self { $(Verb::$variant => verbs!(@first $($name)|+),)* }
            }

            /// Looks a verb up by name (ASCII case-insensitive, aliases included).
            pub fn from_name(name: &str) -> Option<Self> {
                let mut upper = [0u8; 4];
                if name.len() > upper.len() || name.len() < 3 {
                    return None;
                }
                for (slot, byte) in upper.iter_mut().zip(name.bytes()) {
                    *slot = byte.to_ascii_uppercase();
                }
                let upper = &upper[..name.len()];
                $( if false $(|| upper == $name.as_bytes())+ { return Some(Verb::$variant); } )*
                None
            }
        }
    };
    (@first $first:literal $(| $rest:literal)*) => { $first };
}

verbs! {
    /// Names the user to log in as (RFC 959 §4.1.1).
    User => "USER";
    /// Gives the password for the user named by USER (RFC 959 §4.1.1).
    Pass => "PASS";
    /// Gives an account; never needed here, so answered 502 (RFC 959 §4.1.1).
    Acct => "ACCT";
    /// Ends the session (RFC 959 §4.1.1).
    Quit => "QUIT";
    /// Logs out but keeps the connection, as if it had just been opened (RFC 959 §4.1.1).
    Rein => "REIN";
    /// Does nothing but answer 200; clients use it as a keep-alive (RFC 959 §4.1.3).
    Noop => "NOOP";
    /// Asks for the system type, answered `UNIX Type: L8` (RFC 959 §4.1.3).
    Syst => "SYST";
    /// Lists the extensions the server supports (RFC 2389 §3).
    Feat => "FEAT";
    /// Sets an option of a command, such as `UTF8 ON` or the MLST facts (RFC 2389 §4).
    Opts => "OPTS";
    /// Lists the commands, or the syntax of one (RFC 959 §4.1.3).
    Help => "HELP";
    /// Reports on the session or a running transfer, or lists a path on the control
    /// connection (RFC 959 §4.1.3).
    Stat => "STAT";
    /// Runs a server-specific subcommand such as `SITE CHMOD` (RFC 959 §4.1.3).
    Site => "SITE";
    /// Tells the server the client's name; noted, changes nothing (a draft extension).
    Clnt => "CLNT";
    /// Asks for the current directory (RFC 959 §4.1.3; `XPWD` from RFC 775).
    Pwd => "PWD" | "XPWD";
    /// Changes the current directory (RFC 959 §4.1.1; `XCWD` from RFC 775).
    Cwd => "CWD" | "XCWD";
    /// Changes to the parent of the current directory (RFC 959 §4.1.1; `XCUP` from RFC 775).
    Cdup => "CDUP" | "XCUP";
    /// Creates a directory (RFC 959 §4.1.3; `XMKD` from RFC 775).
    Mkd => "MKD" | "XMKD";
    /// Removes an empty directory (RFC 959 §4.1.3; `XRMD` from RFC 775).
    Rmd => "RMD" | "XRMD";
    /// Deletes a file (RFC 959 §4.1.3).
    Dele => "DELE";
    /// Names the file or directory to rename; RNTO must follow (RFC 959 §4.1.3).
    Rnfr => "RNFR";
    /// Gives the new name for the path named by RNFR (RFC 959 §4.1.3).
    Rnto => "RNTO";
    /// Asks for a file's size in bytes (RFC 3659 §4).
    Size => "SIZE";
    /// Asks for a file's modification time (RFC 3659 §3).
    Mdtm => "MDTM";
    /// Sets a file's modification time (draft-somers-ftp-mfxx).
    Mfmt => "MFMT";
    /// Sets the representation type, ASCII or image (RFC 959 §4.1.2).
    Type => "TYPE";
    /// Sets the transfer mode; only stream is supported (RFC 959 §4.1.2).
    Mode => "MODE";
    /// Sets the file structure; only file is supported (RFC 959 §4.1.2).
    Stru => "STRU";
    /// Announces the size of the next upload, checked against a quota if any (RFC 959 §4.1.3).
    Allo => "ALLO";
    /// Sets the byte offset the next transfer starts at (RFC 3659 §5).
    Rest => "REST";
    /// Downloads a file over the data connection (RFC 959 §4.1.3).
    Retr => "RETR";
    /// Uploads a file over the data connection, replacing one of the same name (RFC 959 §4.1.3).
    Stor => "STOR";
    /// Uploads over the data connection, appending to the file if it exists (RFC 959 §4.1.3).
    Appe => "APPE";
    /// Uploads to a new file whose unique name the server picks (RFC 959 §4.1.3).
    Stou => "STOU";
    /// Sends a directory listing in `ls -l` form over the data connection (RFC 959 §4.1.3).
    List => "LIST";
    /// Sends the names in a directory, one a line, over the data connection (RFC 959 §4.1.3).
    Nlst => "NLST";
    /// Sends a machine-readable directory listing over the data connection (RFC 3659 §7).
    Mlsd => "MLSD";
    /// Sends the facts of one path over the control connection (RFC 3659 §7).
    Mlst => "MLST";
    /// Asks the server to listen for the data connection, IPv4 only (RFC 959 §4.1.2).
    Pasv => "PASV";
    /// Asks the server to listen for the data connection, any address family (RFC 2428 §3).
    Epsv => "EPSV";
    /// Asks the server to connect to the client for the data connection, IPv4 (RFC 959 §4.1.2).
    Port => "PORT";
    /// Asks the server to connect to the client for the data connection, any family (RFC 2428 §2).
    Eprt => "EPRT";
    /// Aborts the transfer in progress (RFC 959 §4.1.3).
    Abor => "ABOR";
    /// Mounts another file system structure; not supported, answered 502 (RFC 959 §4.1.1).
    Smnt => "SMNT";
    /// Starts TLS on the control connection (RFC 4217 §4; RFC 2228 §3).
    Auth => "AUTH";
    /// Sets the protection buffer size, always 0 under TLS (RFC 4217 §8; RFC 2228 §3).
    Pbsz => "PBSZ";
    /// Sets whether the data connections use TLS (RFC 4217 §9; RFC 2228 §3).
    Prot => "PROT";
    /// Returns the control connection to plain text after TLS (RFC 4217 §10; RFC 2228 §3).
    Ccc => "CCC";
}

/// The table's starting point for a command anyone may send, logged in or not.
const ANYONE: CommandSpec = CommandSpec {
    needs_login: false,
    argument: Argument::None,
    during_transfer: false,
    modifies_storage: false,
    feature: None,
    syntax: "",
};

/// The table's starting point for a command that needs a login.
const LOGGED_IN: CommandSpec = CommandSpec {
    needs_login: true,
    ..ANYONE
};

impl Verb {
    /// The command table.
    // One arm per verb, each field named: a table, which split into pieces would no longer
    // be read as one.
    #[allow(clippy::too_many_lines)]
    pub const fn spec(self) -> CommandSpec {
        use Argument::{Optional, Required};
        match self {
            Self::User => CommandSpec {
                syntax: "USER <name>",
                argument: Required,
                ..ANYONE
            },
            Self::Pass => CommandSpec {
                syntax: "PASS <password>",
                argument: Optional,
                ..ANYONE
            },
            Self::Acct => CommandSpec {
                syntax: "ACCT <account>",
                argument: Required,
                ..ANYONE
            },
            Self::Quit => CommandSpec {
                syntax: "QUIT",
                ..ANYONE
            },
            Self::Rein => CommandSpec {
                syntax: "REIN",
                ..ANYONE
            },
            Self::Noop => CommandSpec {
                syntax: "NOOP",
                ..ANYONE
            },
            Self::Syst => CommandSpec {
                syntax: "SYST",
                ..ANYONE
            },
            Self::Feat => CommandSpec {
                syntax: "FEAT",
                ..ANYONE
            },
            Self::Opts => CommandSpec {
                syntax: "OPTS <UTF8 ON | MLST facts>",
                argument: Required,
                ..ANYONE
            },
            Self::Help => CommandSpec {
                syntax: "HELP [<verb>]",
                argument: Optional,
                ..ANYONE
            },
            Self::Stat => CommandSpec {
                syntax: "STAT [<path>]",
                argument: Optional,
                during_transfer: true,
                ..ANYONE
            },
            Self::Site => CommandSpec {
                syntax: "SITE <HELP | CHMOD <octal mode> <path>>",
                argument: Required,
                ..LOGGED_IN
            },
            Self::Clnt => CommandSpec {
                syntax: "CLNT <client name>",
                argument: Optional,
                ..ANYONE
            },
            Self::Pwd => CommandSpec {
                syntax: "PWD",
                ..LOGGED_IN
            },
            Self::Cwd => CommandSpec {
                syntax: "CWD <path>",
                argument: Required,
                ..LOGGED_IN
            },
            Self::Cdup => CommandSpec {
                syntax: "CDUP",
                ..LOGGED_IN
            },
            Self::Mkd => CommandSpec {
                syntax: "MKD <path>",
                argument: Required,
                modifies_storage: true,
                ..LOGGED_IN
            },
            Self::Rmd => CommandSpec {
                syntax: "RMD <path>",
                argument: Required,
                modifies_storage: true,
                ..LOGGED_IN
            },
            Self::Dele => CommandSpec {
                syntax: "DELE <path>",
                argument: Required,
                modifies_storage: true,
                ..LOGGED_IN
            },
            Self::Rnfr => CommandSpec {
                syntax: "RNFR <path>",
                argument: Required,
                modifies_storage: true,
                ..LOGGED_IN
            },
            Self::Rnto => CommandSpec {
                syntax: "RNTO <path>",
                argument: Required,
                modifies_storage: true,
                ..LOGGED_IN
            },
            Self::Size => CommandSpec {
                syntax: "SIZE <path>",
                argument: Required,
                feature: Some("SIZE"),
                ..LOGGED_IN
            },
            Self::Mdtm => CommandSpec {
                syntax: "MDTM <path>",
                argument: Required,
                feature: Some("MDTM"),
                ..LOGGED_IN
            },
            Self::Mfmt => CommandSpec {
                syntax: "MFMT <YYYYMMDDHHMMSS> <path>",
                argument: Required,
                modifies_storage: true,
                feature: Some("MFMT"),
                ..LOGGED_IN
            },
            Self::Type => CommandSpec {
                syntax: "TYPE <A|I|L 8>",
                argument: Required,
                ..LOGGED_IN
            },
            Self::Mode => CommandSpec {
                syntax: "MODE S",
                argument: Required,
                ..LOGGED_IN
            },
            Self::Stru => CommandSpec {
                syntax: "STRU F",
                argument: Required,
                ..LOGGED_IN
            },
            Self::Allo => CommandSpec {
                syntax: "ALLO <bytes>",
                argument: Optional,
                ..LOGGED_IN
            },
            Self::Rest => CommandSpec {
                syntax: "REST <offset>",
                argument: Required,
                feature: Some("REST STREAM"),
                ..LOGGED_IN
            },
            Self::Retr => CommandSpec {
                syntax: "RETR <path>",
                argument: Required,
                ..LOGGED_IN
            },
            Self::Stor => CommandSpec {
                syntax: "STOR <path>",
                argument: Required,
                modifies_storage: true,
                ..LOGGED_IN
            },
            Self::Appe => CommandSpec {
                syntax: "APPE <path>",
                argument: Required,
                modifies_storage: true,
                ..LOGGED_IN
            },
            Self::Stou => CommandSpec {
                syntax: "STOU",
                argument: Optional,
                modifies_storage: true,
                ..LOGGED_IN
            },
            Self::List => CommandSpec {
                syntax: "LIST [<path>]",
                argument: Optional,
                ..LOGGED_IN
            },
            Self::Nlst => CommandSpec {
                syntax: "NLST [<path>]",
                argument: Optional,
                ..LOGGED_IN
            },
            Self::Mlsd => CommandSpec {
                syntax: "MLSD [<path>]",
                argument: Optional,
                ..LOGGED_IN
            },
            Self::Mlst => CommandSpec {
                syntax: "MLST [<path>]",
                argument: Optional,
                ..LOGGED_IN
            },
            Self::Pasv => CommandSpec {
                syntax: "PASV",
                ..LOGGED_IN
            },
            Self::Epsv => CommandSpec {
                syntax: "EPSV [<1|2|ALL>]",
                argument: Optional,
                feature: Some("EPSV"),
                ..LOGGED_IN
            },
            Self::Port => CommandSpec {
                syntax: "PORT <h1,h2,h3,h4,p1,p2>",
                argument: Required,
                ..LOGGED_IN
            },
            Self::Eprt => CommandSpec {
                syntax: "EPRT |<af>|<address>|<port>|",
                argument: Required,
                feature: Some("EPRT"),
                ..LOGGED_IN
            },
            Self::Abor => CommandSpec {
                syntax: "ABOR",
                during_transfer: true,
                ..LOGGED_IN
            },
            Self::Smnt => CommandSpec {
                syntax: "SMNT <path>",
                argument: Required,
                ..LOGGED_IN
            },
            Self::Auth => CommandSpec {
                syntax: "AUTH TLS",
                argument: Required,
                ..ANYONE
            },
            Self::Pbsz => CommandSpec {
                syntax: "PBSZ 0",
                argument: Required,
                ..ANYONE
            },
            Self::Prot => CommandSpec {
                syntax: "PROT <C|P>",
                argument: Required,
                ..ANYONE
            },
            Self::Ccc => CommandSpec {
                syntax: "CCC",
                ..ANYONE
            },
        }
    }
}

/// A parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The verb.
    pub verb: Verb,
    /// The argument: everything after the first space, verbatim (file names may start or end
    /// with spaces). `None` when absent or empty.
    pub argument: Option<String>,
}

/// Why a line is not a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not valid UTF-8 (RFC 2640 makes UTF-8 the path encoding).
    #[error("command is not valid UTF-8")]
    InvalidUtf8,
    /// A NUL byte: no legitimate command contains one, and it would truncate a path.
    #[error("command contains a NUL byte")]
    ContainsNul,
    /// An empty line.
    #[error("empty command")]
    Empty,
    /// A verb this server does not know.
    #[error("unknown command {0:?}")]
    UnknownVerb(String),
    /// The verb needs an argument and none was given.
    #[error("{0:?} needs an argument")]
    MissingArgument(Verb),
}

impl ParseError {
    /// The reply for this error (RFC 959 §4.2: 500 for an unrecognised command, 501 for bad
    /// parameters).
    pub fn reply(&self) -> Reply {
        match self {
            Self::InvalidUtf8 => {
                Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Command is not valid UTF-8")
            }
            Self::ContainsNul => {
                Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Command contains a NUL byte")
            }
            Self::Empty => Reply::new(ReplyCode::SYNTAX_ERROR, "Empty command"),
            Self::UnknownVerb(verb) => {
                Reply::new(ReplyCode::SYNTAX_ERROR, format!("Unknown command {verb}"))
            }
            Self::MissingArgument(verb) => Reply::new(
                ReplyCode::SYNTAX_ERROR_ARGS,
                format!("Syntax: {}", verb.spec().syntax),
            ),
        }
    }
}

/// Longest verb echoed back in an error reply.
const MAX_ECHOED_VERB: usize = 16;

impl Command {
    /// Parses one line (without CRLF).
    pub fn parse(line: &[u8]) -> Result<Self, ParseError> {
        if line.contains(&0) {
            return Err(ParseError::ContainsNul);
        }
        let line = std::str::from_utf8(line).map_err(|_| ParseError::InvalidUtf8)?;
        // Only the separator space is skipped: RFC 959 §5.3.2 <SP> is exactly one space.
        let (name, argument) = match line.split_once(' ') {
            Some((name, argument)) => (name, argument),
            None => (line, ""),
        };
        if name.is_empty() {
            return Err(ParseError::Empty);
        }
        let Some(verb) = Verb::from_name(name) else {
            let echoed: String = name
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(MAX_ECHOED_VERB)
                .collect::<String>()
                .to_ascii_uppercase();
            return Err(ParseError::UnknownVerb(echoed));
        };
        let argument = (!argument.is_empty()).then(|| argument.to_owned());
        match (verb.spec().argument, &argument) {
            (Argument::Required, None) => Err(ParseError::MissingArgument(verb)),
            (Argument::None, Some(_)) => Ok(Self {
                verb,
                argument: None,
            }),
            _ => Ok(Self { verb, argument }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, ParseError> {
        Command::parse(line.as_bytes())
    }

    type Expected = Result<(Verb, Option<&'static str>), ParseError>;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Expected)] = &[
            ("USER alice", Ok((Verb::User, Some("alice")))),
            ("user alice", Ok((Verb::User, Some("alice")))),
            ("PASS", Ok((Verb::Pass, None))),
            ("XPWD", Ok((Verb::Pwd, None))),
            ("xcup", Ok((Verb::Cdup, None))),
            ("RETR  two spaces ", Ok((Verb::Retr, Some(" two spaces ")))),
            ("PASV ignored", Ok((Verb::Pasv, None))),
            ("LIST", Ok((Verb::List, None))),
            ("RETR", Err(ParseError::MissingArgument(Verb::Retr))),
            ("RETR ", Err(ParseError::MissingArgument(Verb::Retr))),
            ("FROB x", Err(ParseError::UnknownVerb("FROB".into()))),
            (
                "RETRIEVE x",
                Err(ParseError::UnknownVerb("RETRIEVE".into())),
            ),
            ("", Err(ParseError::Empty)),
            (" NOOP", Err(ParseError::Empty)),
        ];
        for (line, expected) in cases {
            let parsed = parse(line).map(|command| (command.verb, command.argument.clone()));
            let expected = expected
                .clone()
                .map(|(verb, argument)| (verb, argument.map(str::to_owned)));
            assert_eq!(parsed, expected, "line {line:?}");
        }
    }

    #[test]
    fn nul_and_invalid_utf8_are_refused() {
        assert_eq!(Command::parse(b"RETR a\0b"), Err(ParseError::ContainsNul));
        assert_eq!(
            Command::parse(b"RETR \xff\xfe"),
            Err(ParseError::InvalidUtf8)
        );
        assert_eq!(
            Command::parse(b"RETR \xff").unwrap_err().reply().code.0,
            501
        );
    }

    #[test]
    fn unknown_verb_is_500_and_echo_is_sanitised() {
        let error = parse("A\u{1b}[31mB x").unwrap_err();
        assert_eq!(error.reply().code, ReplyCode::SYNTAX_ERROR);
        assert!(!error.reply().text().contains('\u{1b}'));
    }

    #[test]
    fn the_commands_that_change_the_storage_need_a_login() {
        let modifying: Vec<&str> = Verb::ALL
            .iter()
            .filter(|verb| verb.spec().modifies_storage)
            .map(|verb| verb.name())
            .collect();
        assert_eq!(
            modifying,
            [
                "MKD", "RMD", "DELE", "RNFR", "RNTO", "MFMT", "STOR", "APPE", "STOU"
            ]
        );
        for verb in Verb::ALL {
            assert!(!verb.spec().modifies_storage || verb.spec().needs_login);
        }
    }

    #[test]
    fn every_verb_round_trips_through_its_name() {
        for verb in Verb::ALL {
            assert_eq!(Verb::from_name(verb.name()), Some(*verb));
            assert_eq!(
                Verb::from_name(&verb.name().to_ascii_lowercase()),
                Some(*verb)
            );
        }
    }
}
