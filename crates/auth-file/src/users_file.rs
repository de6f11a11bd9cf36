//! The users file: its TOML format, loading with precise errors, atomic saving and the edits
//! `ferroftp user add|del|passwd` make.
//!
//! ```toml
//! [[users]]
//! name = "alice"
//! password = "$argon2id$v=19$m=19456,t=2,p=1$...$..."
//! home = "/alice"        # optional, default "/"
//! read_only = false      # optional, default false
//! # Optional limits (docs/security.md, "Limits and quotas"):
//! max_sessions = 4                 # logged-in sessions at once (530 beyond)
//! download_rate = "10MB/s"         # shared by all of the user's sessions; MB = 10^6, MiB = 2^20
//! upload_rate = "1MiB/s"
//! quota_bytes = "5GB"              # everything under the home
//! quota_files = 10000
//! allow_from = ["192.0.2.0/24", "2001:db8::/32"]   # 530 from elsewhere
//! ```

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params};
use ferroftp_backend::User;
use ferroftp_proto::policy::{
    format_byte_rate, format_byte_size, parse_byte_rate, parse_byte_size,
};
use ferroftp_proto::{Cidr, UserPolicy, VirtualPath};
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Longest accepted user name, in characters.
pub const MAX_NAME_LENGTH: usize = 64;

/// Names that belong to anonymous login and can never be regular accounts (compared without
/// regard to ASCII case, as FTP clients and servers traditionally do).
pub const RESERVED_NAMES: [&str; 2] = ["anonymous", "ftp"];

/// The first lines of every file [`UsersFile::save`] writes.
const SAVED_FILE_HEADER: &str = "# ferroftp users file, managed by `ferroftp user add|del|passwd`.\n\
# Passwords are argon2id hashes. Comments are not preserved when the file is rewritten.\n\n";

/// Why a user name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameProblem {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_NAME_LENGTH`] characters.
    TooLong,
    /// The name contains a character outside `[A-Za-z0-9._-]`.
    ForbiddenCharacter(char),
    /// The name is one of [`RESERVED_NAMES`].
    Reserved,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => formatter.write_str("the name is empty"),
            Self::TooLong => write!(
                formatter,
                "the name is longer than {MAX_NAME_LENGTH} characters"
            ),
            Self::ForbiddenCharacter(character) => write!(
                formatter,
                "{character:?} is not allowed (use letters, digits, '.', '_' and '-')"
            ),
            Self::Reserved => formatter.write_str("the name is reserved for anonymous login"),
        }
    }
}

/// Everything that can go wrong reading, writing or editing a users file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersFileError {
    /// The file could not be read.
    #[error("cannot read users file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file (or its temporary sibling) could not be written.
    #[error("cannot write users file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not valid TOML or does not have the expected shape (unknown field, wrong
    /// type, missing `name` or `password`). The message carries line and column.
    #[error("users file {} is malformed: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The TOML parser's description, with line, column and an excerpt.
        message: String,
    },
    /// The file parses but one entry is invalid (bad name, hash or home, duplicate name).
    #[error("users file {}, line {line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A user of that name already exists.
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// No user of that name exists.
    #[error("no user named {0:?}")]
    NoSuchUser(String),
    /// The name is not a valid account name.
    #[error("invalid user name {name:?}: {problem}")]
    InvalidName {
        /// The refused name.
        name: String,
        /// Why it was refused.
        problem: NameProblem,
    },
    /// An empty password was given.
    #[error("the password is empty")]
    EmptyPassword,
}

/// Checks that `name` can be an account name: 1 to [`MAX_NAME_LENGTH`] characters of
/// `[A-Za-z0-9._-]`, and not one of [`RESERVED_NAMES`].
pub fn validate_user_name(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    if let Some(character) = name
        .chars()
        .find(|character| !(character.is_ascii_alphanumeric() || "._-".contains(*character)))
    {
        return Err(NameProblem::ForbiddenCharacter(character));
    }
    // Only ASCII is left, so bytes are characters.
    if name.len() > MAX_NAME_LENGTH {
        return Err(NameProblem::TooLong);
    }
    if RESERVED_NAMES
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(name))
    {
        return Err(NameProblem::Reserved);
    }
    Ok(())
}

/// Hashes `password` with argon2id, the crate's default parameters and a random salt, into a
/// PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
///
/// This is deliberately slow (tens of milliseconds in an optimised build): do not call it on
/// an async executor thread.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        // Default parameters and a generated salt are always valid; only a password longer
        // than 4 GiB could fail, and nothing reads one.
        .expect("argon2id hashing with default parameters cannot fail")
        .to_string()
}

/// Checks that `phc` is an argon2id PHC string whose parameters argon2 accepts, so a bad entry
/// is reported when the file is loaded rather than at the user's next login.
fn check_password_hash(phc: &str) -> Result<(), String> {
    let hash = PasswordHash::new(phc)
        .map_err(|error| format!("password is not a PHC hash string ({error})"))?;
    if hash.algorithm != Algorithm::Argon2id.ident() {
        return Err(format!(
            "password hash uses {}, expected argon2id (create it with `ferroftp user passwd`)",
            hash.algorithm
        ));
    }
    Params::try_from(&hash)
        .map_err(|error| format!("password hash has invalid argon2 parameters ({error})"))?;
    if hash.hash.is_none() || hash.salt.is_none() {
        return Err("password hash lacks its salt or its output".to_owned());
    }
    Ok(())
}

/// One account of the users file.
#[derive(Clone, PartialEq, Eq)]
pub struct UserEntry {
    name: String,
    password_hash: String,
    home: VirtualPath,
    read_only: bool,
    policy: UserPolicy,
}

impl UserEntry {
    /// The account name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The argon2id PHC string of the password.
    pub fn password_hash(&self) -> &str {
        &self.password_hash
    }

    /// The user's home inside the storage root.
    pub fn home(&self) -> &VirtualPath {
        &self.home
    }

    /// Whether the user may only read.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The account's limits.
    pub fn policy(&self) -> &UserPolicy {
        &self.policy
    }

    /// Checks `password` against this entry's hash (slow on purpose: not on an async thread).
    pub fn verify_password(&self, password: &str) -> bool {
        crate::password_verifier::ArgonMemory::default().verify(&self.password_hash, password)
    }

    /// The logged-in user this account becomes.
    pub fn to_user(&self) -> User {
        User {
            name: self.name.clone(),
            home: self.home.clone(),
            read_only: self.read_only,
            policy: self.policy.clone(),
        }
    }
}

impl fmt::Debug for UserEntry {
    /// Leaves the hash out: it is not the password, but it has no business in a log either.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("UserEntry")
            .field("name", &self.name)
            .field("home", &self.home)
            .field("read_only", &self.read_only)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The file as TOML sees it, before validation; spans give line numbers to the errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsersFile {
    #[serde(default)]
    users: Vec<RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Spanned<String>,
    password: Spanned<String>,
    #[serde(default)]
    home: Option<Spanned<String>>,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    max_sessions: Option<Spanned<u32>>,
    #[serde(default)]
    download_rate: Option<Spanned<Quantity>>,
    #[serde(default)]
    upload_rate: Option<Spanned<Quantity>>,
    #[serde(default)]
    quota_bytes: Option<Spanned<Quantity>>,
    #[serde(default)]
    quota_files: Option<u64>,
    #[serde(default)]
    allow_from: Option<Spanned<Vec<String>>>,
}

/// A rate or size: a plain number of bytes, or text with a unit (`"10MB/s"`, `"5GiB"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Quantity {
    Bytes(u64),
    Text(String),
}

impl Quantity {
    fn rate(&self) -> Result<u64, String> {
        match self {
            Self::Bytes(0) => {
                Err("a rate of 0 would stop every transfer (leave it out for no limit)".to_owned())
            }
            Self::Bytes(bytes) => Ok(*bytes),
            Self::Text(text) => parse_byte_rate(text).map_err(|error| error.to_string()),
        }
    }

    fn size(&self) -> Result<u64, String> {
        match self {
            Self::Bytes(bytes) => Ok(*bytes),
            Self::Text(text) => parse_byte_size(text).map_err(|error| error.to_string()),
        }
    }
}

/// The file as it is written.
#[derive(Serialize)]
struct SavedUsersFile<'a> {
    users: Vec<SavedUser<'a>>,
}

#[derive(Serialize)]
struct SavedUser<'a> {
    name: &'a str,
    password: &'a str,
    home: &'a str,
    read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_sessions: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    download_rate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upload_rate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quota_bytes: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quota_files: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allow_from: Vec<String>,
}

/// The contents of a users file: accounts in file order, each name unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsersFile {
    users: Vec<UserEntry>,
}

impl UsersFile {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads and validates the file at `path`.
    ///
    /// Errors name the file and, for syntax and validation problems, the line.
    pub fn load(path: &Path) -> Result<Self, UsersFileError> {
        let text = fs::read_to_string(path).map_err(|source| UsersFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Like [`load`](Self::load), but a missing file is an empty one (for `user add`).
    pub fn load_or_empty(path: &Path) -> Result<Self, UsersFileError> {
        match Self::load(path) {
            Err(UsersFileError::Read { source, .. })
                if source.kind() == io::ErrorKind::NotFound =>
            {
                Ok(Self::new())
            }
            other => other,
        }
    }

    /// Parses and validates users-file text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, UsersFileError> {
        let raw: RawUsersFile = toml::from_str(text).map_err(|error| UsersFileError::Syntax {
            path: path.to_owned(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        let invalid = |span: std::ops::Range<usize>, message: String| UsersFileError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            message,
        };
        let mut first_line_of_name: HashMap<String, usize> = HashMap::new();
        let mut users = Vec::with_capacity(raw.users.len());
        for raw_user in raw.users {
            let policy = parse_policy(&raw_user);
            let name_span = raw_user.name.span();
            let name = raw_user.name.into_inner();
            if let Err(problem) = validate_user_name(&name) {
                return Err(invalid(
                    name_span,
                    format!("invalid user name {name:?}: {problem}"),
                ));
            }
            if let Some(first_line) = first_line_of_name.get(&name) {
                return Err(invalid(
                    name_span,
                    format!("user {name:?} is defined twice (first at line {first_line})"),
                ));
            }
            first_line_of_name.insert(name.clone(), line_of(text, name_span.start));

            let password_span = raw_user.password.span();
            let password_hash = raw_user.password.into_inner();
            if let Err(message) = check_password_hash(&password_hash) {
                return Err(invalid(password_span, format!("user {name:?}: {message}")));
            }

            let home = match raw_user.home {
                None => VirtualPath::root(),
                Some(home) => {
                    let home_span = home.span();
                    parse_home(home.get_ref()).map_err(|message| {
                        invalid(home_span, format!("user {name:?}: {message}"))
                    })?
                }
            };
            let policy = policy
                .map_err(|(span, message)| invalid(span, format!("user {name:?}: {message}")))?;
            users.push(UserEntry {
                name,
                password_hash,
                home,
                read_only: raw_user.read_only,
                policy,
            });
        }
        Ok(Self { users })
    }

    /// The file's text as [`save`](Self::save) writes it.
    pub fn to_toml(&self) -> String {
        let saved = SavedUsersFile {
            users: self
                .users
                .iter()
                .map(|user| SavedUser {
                    name: &user.name,
                    password: &user.password_hash,
                    home: user.home.as_str(),
                    read_only: user.read_only,
                    max_sessions: user.policy.max_sessions,
                    download_rate: user.policy.download_rate.map(format_byte_rate),
                    upload_rate: user.policy.upload_rate.map(format_byte_rate),
                    quota_bytes: user.policy.quota_bytes.map(format_byte_size),
                    quota_files: user.policy.quota_files,
                    allow_from: user.policy.allow_from.iter().map(Cidr::to_string).collect(),
                })
                .collect(),
        };
        let body = toml::to_string(&saved)
            .expect("a users file is plain strings and booleans, always serialisable");
        format!("{SAVED_FILE_HEADER}{body}")
    }

    /// Writes the file atomically: a temporary file in the same directory, created with mode
    /// 0600 (it holds password hashes) and flushed to disk, then renamed over `path`. A reader
    /// (such as a running server) sees the old file or the new one, never a partial one.
    pub fn save(&self, path: &Path) -> Result<(), UsersFileError> {
        let write_error = |source| UsersFileError::Write {
            path: path.to_owned(),
            source,
        };
        let file_name = path.file_name().ok_or_else(|| {
            write_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path does not name a file",
            ))
        })?;
        let directory = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let temporary = directory.join(format!(
            ".{}.{}-{:016x}.tmp",
            file_name.to_string_lossy(),
            std::process::id(),
            rand::random::<u64>()
        ));
        let result = write_private_file(&temporary, self.to_toml().as_bytes())
            .and_then(|()| fs::rename(&temporary, path));
        if let Err(error) = result {
            let _ = fs::remove_file(&temporary);
            return Err(write_error(error));
        }
        // Make the rename itself durable; failing here loses nothing already visible.
        if let Ok(directory) = fs::File::open(directory) {
            let _ = directory.sync_all();
        }
        Ok(())
    }

    /// Adds an account, hashing `password` with [`hash_password`] (slow on purpose).
    pub fn add(
        &mut self,
        name: &str,
        password: &str,
        home: VirtualPath,
        read_only: bool,
    ) -> Result<&UserEntry, UsersFileError> {
        validate_user_name(name).map_err(|problem| UsersFileError::InvalidName {
            name: name.to_owned(),
            problem,
        })?;
        if self.get(name).is_some() {
            return Err(UsersFileError::UserExists(name.to_owned()));
        }
        if password.is_empty() {
            return Err(UsersFileError::EmptyPassword);
        }
        self.users.push(UserEntry {
            name: name.to_owned(),
            password_hash: hash_password(password),
            home,
            read_only,
            policy: UserPolicy::default(),
        });
        Ok(self.users.last().expect("just pushed"))
    }

    /// Removes an account and returns it.
    pub fn remove(&mut self, name: &str) -> Result<UserEntry, UsersFileError> {
        let index = self.index_of(name)?;
        Ok(self.users.remove(index))
    }

    /// Replaces an account's password, hashing it with [`hash_password`] (slow on purpose).
    pub fn set_password(&mut self, name: &str, password: &str) -> Result<(), UsersFileError> {
        let index = self.index_of(name)?;
        if password.is_empty() {
            return Err(UsersFileError::EmptyPassword);
        }
        self.users[index].password_hash = hash_password(password);
        Ok(())
    }

    /// Replaces an account's limits.
    pub fn set_policy(&mut self, name: &str, policy: UserPolicy) -> Result<(), UsersFileError> {
        let index = self.index_of(name)?;
        self.users[index].policy = policy;
        Ok(())
    }

    /// The accounts, in file order.
    pub fn list(&self) -> &[UserEntry] {
        &self.users
    }

    /// The account called `name` (exact, case-sensitive match).
    pub fn get(&self, name: &str) -> Option<&UserEntry> {
        self.users.iter().find(|user| user.name == name)
    }

    /// The number of accounts.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// `true` when there is no account.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn index_of(&self, name: &str) -> Result<usize, UsersFileError> {
        self.users
            .iter()
            .position(|user| user.name == name)
            .ok_or_else(|| UsersFileError::NoSuchUser(name.to_owned()))
    }
}

/// The limits of one entry; errors carry the span of the offending value.
fn parse_policy(raw: &RawUser) -> Result<UserPolicy, (std::ops::Range<usize>, String)> {
    let quantity = |value: &Option<Spanned<Quantity>>,
                    key: &str,
                    read: fn(&Quantity) -> Result<u64, String>| {
        value
            .as_ref()
            .map(|value| {
                read(value.get_ref()).map_err(|message| (value.span(), format!("{key}: {message}")))
            })
            .transpose()
    };
    let max_sessions = match &raw.max_sessions {
        Some(value) if *value.get_ref() == 0 => {
            return Err((
                value.span(),
                "max_sessions = 0 would refuse every login (leave it out for no limit)".to_owned(),
            ));
        }
        value => value.as_ref().map(|value| *value.get_ref()),
    };
    let allow_from = match &raw.allow_from {
        None => Vec::new(),
        Some(networks) => networks
            .get_ref()
            .iter()
            .map(|network| network.parse::<Cidr>())
            .collect::<Result<_, _>>()
            .map_err(|message| (networks.span(), format!("allow_from: {message}")))?,
    };
    Ok(UserPolicy {
        max_sessions,
        download_rate: quantity(&raw.download_rate, "download_rate", Quantity::rate)?,
        upload_rate: quantity(&raw.upload_rate, "upload_rate", Quantity::rate)?,
        quota_bytes: quantity(&raw.quota_bytes, "quota_bytes", Quantity::size)?,
        quota_files: raw.quota_files,
        allow_from,
    })
}

/// Parses a home directory: an absolute virtual path such as `/alice` or `/`.
pub fn parse_home(text: &str) -> Result<VirtualPath, String> {
    if !text.starts_with('/') {
        return Err(format!(
            "home {text:?} must be an absolute path such as \"/\" or \"/{text}\""
        ));
    }
    VirtualPath::root()
        .resolve(text)
        .map_err(|error| format!("home {text:?} is not a valid path: {error}"))
}

/// The 1-based line holding byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|byte| **byte == b'\n')
        .count()
        + 1
}

/// Creates `path` (which must not exist) readable and writable by the owner only, writes
/// `contents` and flushes them to disk.
fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        // The umask can only remove bits from 0600, but be exact regardless.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(contents)?;
    file.sync_all()
}
