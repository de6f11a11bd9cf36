//! `ferroftp user add|del|list|passwd|limits`: manage the users file.
//!
//! Passwords come from standard input when it is not a terminal (its first line, so
//! `echo secret | ferroftp user add alice --users users.toml` works in scripts), otherwise
//! they are prompted for twice without echo. A running server picks the change up at the next
//! login: the file is replaced atomically and the server re-reads it when it changes.

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ferroftp_auth_file::{UsersFile, parse_home};
use ferroftp_proto::policy::{parse_byte_rate, parse_byte_size};
use ferroftp_proto::{Cidr, UserPolicy, VirtualPath};

/// An account's limits on the command line (docs/security.md, "Limits and quotas").
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LimitArgs {
    /// Logged-in sessions of the account at once (530 beyond).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_sessions: Option<u32>,
    /// Bytes per second sent to the account, shared by its sessions: "10MB/s" (MB = 10^6
    /// bytes), "1MiB/s" (2^20), or a number.
    #[arg(long, value_name = "RATE", value_parser = rate)]
    download_rate: Option<u64>,
    /// Bytes per second received from the account, shared by its sessions.
    #[arg(long, value_name = "RATE", value_parser = rate)]
    upload_rate: Option<u64>,
    /// Bytes of files under the home: "5GB", "500MiB", or a number (552 beyond).
    #[arg(long, value_name = "SIZE", value_parser = size)]
    quota_bytes: Option<u64>,
    /// Number of files under the home (552 beyond).
    #[arg(long, value_name = "N")]
    quota_files: Option<u64>,
    /// A network the account may log in from (repeat for several; 530 from elsewhere).
    #[arg(long, value_name = "CIDR", value_parser = network)]
    allow_from: Vec<Cidr>,
}

impl LimitArgs {
    /// `policy` with every limit given here set.
    fn apply_to(self, mut policy: UserPolicy) -> UserPolicy {
        policy.max_sessions = self.max_sessions.or(policy.max_sessions);
        policy.download_rate = self.download_rate.or(policy.download_rate);
        policy.upload_rate = self.upload_rate.or(policy.upload_rate);
        policy.quota_bytes = self.quota_bytes.or(policy.quota_bytes);
        policy.quota_files = self.quota_files.or(policy.quota_files);
        if !self.allow_from.is_empty() {
            policy.allow_from = self.allow_from;
        }
        policy
    }
}

fn rate(text: &str) -> Result<u64, String> {
    parse_byte_rate(text).map_err(|error| error.to_string())
}

fn size(text: &str) -> Result<u64, String> {
    parse_byte_size(text).map_err(|error| error.to_string())
}

fn network(text: &str) -> Result<Cidr, String> {
    text.parse()
}

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
        /// The storage root: the home is created in it now. Without --root or --config the
        /// server creates a missing home at the user's first login.
        #[arg(long, value_name = "DIR", conflicts_with = "config")]
        root: Option<PathBuf>,
        /// A config file: the home is created now in its storage.root.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Show or change a user's limits (sessions, rates, quotas, allowed networks); those
    /// not given stay as they are.
    Limits {
        /// Account name.
        name: String,
        /// The users file.
        #[arg(long, value_name = "FILE")]
        users: PathBuf,
        /// Remove every limit first (then set those given).
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        limits: LimitArgs,
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
            root,
            config,
            limits,
        } => {
            // A config that does not load is reported before anything changes.
            let root = match (root, config) {
                (Some(root), _) => Some(root),
                (None, Some(config)) => storage_root_of(&config)?,
                (None, None) => None,
            };
            let mut file = UsersFile::load_or_empty(&users)?;
            // Refuse a bad or taken name before asking for a password.
            ferroftp_auth_file::validate_user_name(&name)
                .map_err(|problem| anyhow::anyhow!("invalid user name {name:?}: {problem}"))?;
            if file.get(&name).is_some() {
                bail!("user {name:?} already exists in {}", users.display());
            }
            let password = read_password(&name)?;
            file.add(&name, &password, home.clone(), read_only)?;
            file.set_policy(&name, limits.apply_to(UserPolicy::default()))?;
            file.save(&users)?;
            let access = if read_only { "read-only" } else { "read-write" };
            writeln!(
                output,
                "added user {name} (home {home}, {access}) to {}",
                users.display()
            )?;
            if !home.is_root() {
                writeln!(output, "{}", prepare_home(root.as_deref(), &home, &name))?;
            }
        }
        UserCommand::Limits {
            name,
            users,
            clear,
            limits,
        } => {
            let mut file = UsersFile::load(&users)?;
            let Some(entry) = file.get(&name) else {
                bail!("no user named {name:?} in {}", users.display());
            };
            let before = if clear {
                UserPolicy::default()
            } else {
                entry.policy().clone()
            };
            let policy = limits.apply_to(before);
            if policy != *entry.policy() {
                file.set_policy(&name, policy.clone())?;
                file.save(&users)?;
            }
            writeln!(output, "{name}: {}", describe_policy(&policy))?;
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

/// One line: every limit of `policy`, as the users file writes them.
fn describe_policy(policy: &UserPolicy) -> String {
    use ferroftp_proto::policy::{format_byte_rate, format_byte_size};
    let mut parts = Vec::new();
    if let Some(sessions) = policy.max_sessions {
        parts.push(format!("max_sessions {sessions}"));
    }
    if let Some(rate) = policy.download_rate {
        parts.push(format!("download_rate {}", format_byte_rate(rate)));
    }
    if let Some(rate) = policy.upload_rate {
        parts.push(format!("upload_rate {}", format_byte_rate(rate)));
    }
    if let Some(bytes) = policy.quota_bytes {
        parts.push(format!("quota_bytes {}", format_byte_size(bytes)));
    }
    if let Some(files) = policy.quota_files {
        parts.push(format!("quota_files {files}"));
    }
    if !policy.allow_from.is_empty() {
        let networks: Vec<String> = policy.allow_from.iter().map(Cidr::to_string).collect();
        parts.push(format!("allow_from {}", networks.join(",")));
    }
    if parts.is_empty() {
        "no limits".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The `storage.root` of the config file `path` (relative to the file's directory); `None`
/// for an object store (the server creates the home at the first login).
fn storage_root_of(path: &Path) -> anyhow::Result<Option<PathBuf>> {
    // A config that `serve` would refuse is refused here too: nothing is changed.
    let loaded = ferroftp_config::report::load(path, |_| {});
    let (Some(config), true) = (loaded.config, loaded.problems.is_empty()) else {
        let problems: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
        anyhow::bail!("{}: {}", path.display(), problems.join("; "));
    };
    match config.storage {
        ferroftp_config::StorageConfig::Fs { root, .. } => Ok(Some(root)),
        ferroftp_config::StorageConfig::Object(_) => Ok(None),
    }
}

/// Creates `home` in the storage `root` when one is known, and says what happened. The
/// server creates a missing home at the user's first login anyway (and logs it), so nothing
/// here is an error: a home that cannot be made now is reported and left to the server.
fn prepare_home(root: Option<&Path>, home: &VirtualPath, name: &str) -> String {
    let Some(root) = root else {
        return format!(
            "the server creates the home {home} in its storage root at {name}'s first login \
             (--root DIR or --config FILE creates it now)"
        );
    };
    if !root.is_dir() {
        return format!(
            "the storage root {} does not exist yet: the server creates it, and the home \
             {home} at {name}'s first login",
            root.display()
        );
    }
    match create_home(root, home) {
        Ok(true) => format!("created the home {home} in {}", root.display()),
        Ok(false) => format!("the home {home} exists in {}", root.display()),
        Err(error) => format!(
            "cannot create the home {home} in {}: {error:#}; the server tries again at \
             {name}'s first login",
            root.display()
        ),
    }
}

/// `mkdir -p` of `home` below `root`, through the storage (so a symlink cannot lead it out
/// of the root); `true` when something was created. Directories made by root are given to
/// the owner of the storage root, the account the server writes as.
fn create_home(root: &Path, home: &VirtualPath) -> anyhow::Result<bool> {
    let missing: Vec<PathBuf> = home
        .segments()
        .scan(root.to_path_buf(), |path, segment| {
            path.push(segment);
            Some(path.clone())
        })
        .filter(|path| std::fs::symlink_metadata(path).is_err())
        .collect();
    let storage = ferroftp_storage_fs::FsStorage::new(root)
        .with_context(|| format!("opening {}", root.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("starting a runtime")?;
    let created = runtime
        .block_on(ferroftp_backend::make_dir_all(&storage, home))
        .map_err(|error| anyhow::anyhow!("{}", error.detail_and_cause()))?;
    let owner = std::fs::metadata(root)?;
    if created && rustix::process::geteuid().is_root() {
        use std::os::unix::fs::MetadataExt;
        for directory in &missing {
            std::os::unix::fs::lchown(directory, Some(owner.uid()), Some(owner.gid()))
                .with_context(|| format!("giving {} to the root's owner", directory.display()))?;
        }
    }
    Ok(created)
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
mod tests;
