//! `ferroftp user add|del|list|passwd`: manage the users file.
//!
//! Passwords come from standard input when it is not a terminal (its first line, so
//! `echo secret | ferroftp user add alice --users users.toml` works in scripts), otherwise
//! they are prompted for twice without echo. A running server picks the change up at the next
//! login: the file is replaced atomically and the server re-reads it when it changes.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ferroftp_auth_file::{UsersFile, parse_home};
use ferroftp_proto::VirtualPath;

/// The `user` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user; creates the users file if it is missing.
    Add {
        /// Account name: 1 to 64 of A-Z a-z 0-9 . _ - (not "anonymous" nor "ftp").
        name: String,
        /// The users file.
        #[arg(long, value_name = "FILE")]
        users: PathBuf,
        /// The user's home inside the storage root; the user sees it as "/".
        #[arg(long, value_name = "PATH", default_value = "/", value_parser = parse_home)]
        home: VirtualPath,
        /// Refuse every command that changes storage.
        #[arg(long)]
        read_only: bool,
    },
    /// Remove a user.
    #[command(alias = "remove")]
    Del {
        /// Account name.
        name: String,
        /// The users file.
        #[arg(long, value_name = "FILE")]
        users: PathBuf,
    },
    /// List the users: name, home, read-only.
    List {
        /// The users file.
        #[arg(long, value_name = "FILE")]
        users: PathBuf,
    },
    /// Change a user's password.
    Passwd {
        /// Account name.
        name: String,
        /// The users file.
        #[arg(long, value_name = "FILE")]
        users: PathBuf,
    },
}

/// Runs a `user` subcommand: passwords from standard input or the terminal, reports on
/// standard output.
pub fn run(command: UserCommand) -> anyhow::Result<()> {
    execute(command, read_new_password, &mut io::stdout().lock())
}

/// Runs `command`, asking `read_password` (given the account name) for a new password when
/// one is needed and writing reports to `output`.
fn execute(
    command: UserCommand,
    read_password: impl FnOnce(&str) -> anyhow::Result<String>,
    output: &mut impl Write,
) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            users,
            home,
            read_only,
        } => {
            let mut file = UsersFile::load_or_empty(&users)?;
            // Refuse a bad or taken name before asking for a password.
            ferroftp_auth_file::validate_user_name(&name)
                .map_err(|problem| anyhow::anyhow!("invalid user name {name:?}: {problem}"))?;
            if file.get(&name).is_some() {
                bail!("user {name:?} already exists in {}", users.display());
            }
            let password = read_password(&name)?;
            file.add(&name, &password, home.clone(), read_only)?;
            file.save(&users)?;
            let access = if read_only { "read-only" } else { "read-write" };
            writeln!(
                output,
                "added user {name} (home {home}, {access}) to {}",
                users.display()
            )?;
        }
        UserCommand::Del { name, users } => {
            let mut file = UsersFile::load(&users)?;
            file.remove(&name)?;
            file.save(&users)?;
            writeln!(output, "removed user {name} from {}", users.display())?;
        }
        UserCommand::List { users } => {
            let file = UsersFile::load(&users)?;
            write_user_table(&file, &users, output)?;
        }
        UserCommand::Passwd { name, users } => {
            let mut file = UsersFile::load(&users)?;
            if file.get(&name).is_none() {
                bail!("no user named {name:?} in {}", users.display());
            }
            let password = read_password(&name)?;
            file.set_password(&name, &password)?;
            file.save(&users)?;
            writeln!(
                output,
                "changed the password of {name} in {}",
                users.display()
            )?;
        }
    }
    Ok(())
}

/// Prints `NAME HOME READ-ONLY` columns, aligned.
fn write_user_table(file: &UsersFile, path: &Path, output: &mut impl Write) -> io::Result<()> {
    if file.is_empty() {
        return writeln!(output, "no users in {}", path.display());
    }
    let name_width = file
        .list()
        .iter()
        .map(|user| user.name().len())
        .chain(["NAME".len()])
        .max()
        .unwrap_or(0);
    let home_width = file
        .list()
        .iter()
        .map(|user| user.home().as_str().len())
        .chain(["HOME".len()])
        .max()
        .unwrap_or(0);
    writeln!(
        output,
        "{:name_width$}  {:home_width$}  READ-ONLY",
        "NAME", "HOME"
    )?;
    for user in file.list() {
        let read_only = if user.read_only() { "yes" } else { "no" };
        writeln!(
            output,
            "{:name_width$}  {:home_width$}  {read_only}",
            user.name(),
            user.home().as_str()
        )?;
    }
    Ok(())
}

/// A new password for `name`: the first line of standard input when it is not a terminal,
/// else typed twice at a prompt without echo.
fn read_new_password(name: &str) -> anyhow::Result<String> {
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return password_from_reader(stdin.lock());
    }
    let first = rpassword::prompt_password(format!("New password for {name}: "))
        .context("cannot read the password")?;
    if first.is_empty() {
        bail!("the password is empty");
    }
    let second =
        rpassword::prompt_password("Repeat the password: ").context("cannot read the password")?;
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

/// The first line of `reader` without its line ending.
fn password_from_reader(mut reader: impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&line);
    if password.is_empty() {
        bail!("no password on standard input (its first line is the password)");
    }
    Ok(password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A stand-in for the real command line, to check the argument syntax.
    #[derive(Debug, clap::Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: UserCommand,
    }

    fn command(arguments: &[&str]) -> UserCommand {
        TestCli::try_parse_from(std::iter::once("user").chain(arguments.iter().copied()))
            .unwrap()
            .command
    }

    fn run_with_password(command: UserCommand, password: &str) -> anyhow::Result<String> {
        let mut output = Vec::new();
        execute(command, |_| Ok(password.to_owned()), &mut output)?;
        Ok(String::from_utf8(output).unwrap())
    }

    #[test]
    fn add_list_passwd_del() {
        let directory = tempfile::tempdir().unwrap();
        let users = directory.path().join("users.toml");
        let users_argument = users.to_str().unwrap();

        let report = run_with_password(
            command(&[
                "add",
                "alice",
                "--users",
                users_argument,
                "--home",
                "/sub/dir",
                "--read-only",
            ]),
            "secret",
        )
        .unwrap();
        assert_eq!(
            report,
            format!("added user alice (home /sub/dir, read-only) to {users_argument}\n")
        );
        run_with_password(command(&["add", "bob", "--users", users_argument]), "pw").unwrap();

        let list = run_with_password(command(&["list", "--users", users_argument]), "").unwrap();
        assert_eq!(
            list,
            "NAME   HOME      READ-ONLY\nalice  /sub/dir  yes\nbob    /         no\n"
        );

        run_with_password(
            command(&["passwd", "alice", "--users", users_argument]),
            "new",
        )
        .unwrap();
        assert!(
            UsersFile::load(&users)
                .unwrap()
                .get("alice")
                .unwrap()
                .verify_password("new")
        );

        let error = run_with_password(command(&["add", "bob", "--users", users_argument]), "x")
            .unwrap_err();
        assert!(error.to_string().contains("already exists"), "{error}");

        run_with_password(command(&["del", "bob", "--users", users_argument]), "").unwrap();
        let error =
            run_with_password(command(&["del", "bob", "--users", users_argument]), "").unwrap_err();
        assert_eq!(error.to_string(), "no user named \"bob\"");
        let error = run_with_password(command(&["passwd", "bob", "--users", users_argument]), "x")
            .unwrap_err();
        assert!(error.to_string().starts_with("no user named"), "{error}");
        assert_eq!(UsersFile::load(&users).unwrap().len(), 1);
    }

    #[test]
    fn refuses_bad_arguments_before_asking_for_a_password() {
        let directory = tempfile::tempdir().unwrap();
        let users = directory.path().join("users.toml");
        let users_argument = users.to_str().unwrap();
        let mut output = Vec::new();
        let error = execute(
            command(&["add", "anonymous", "--users", users_argument]),
            |_| panic!("asked for a password"),
            &mut output,
        )
        .unwrap_err();
        assert!(error.to_string().contains("reserved"), "{error}");
        assert!(!users.exists());

        let relative_home = TestCli::try_parse_from([
            "user",
            "add",
            "alice",
            "--users",
            users_argument,
            "--home",
            "sub",
        ]);
        assert!(relative_home.is_err());
        assert!(
            TestCli::try_parse_from(["user", "list"]).is_err(),
            "--users is required"
        );
    }

    #[test]
    fn password_is_the_first_line_of_input() {
        assert_eq!(
            password_from_reader(&b"secret\nignored\n"[..]).unwrap(),
            "secret"
        );
        assert_eq!(password_from_reader(&b"secret\r\n"[..]).unwrap(), "secret");
        assert_eq!(
            password_from_reader(&b"no newline"[..]).unwrap(),
            "no newline"
        );
        assert_eq!(
            password_from_reader(&b" spaced \n"[..]).unwrap(),
            " spaced "
        );
        assert!(password_from_reader(&b""[..]).is_err());
        assert!(password_from_reader(&b"\n"[..]).is_err());
    }
}
