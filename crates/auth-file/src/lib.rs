//! User accounts kept in a TOML users file with argon2id password hashes.
//!
//! - [`UsersFile`]: the file format, loading with line-numbered errors, atomic saving (mode
//!   0600) and the edits behind `ferroftp user add|del|list|passwd`.
//! - [`FileAuthenticator`]: an [`Authenticator`](ferroftp_backend::Authenticator) over that
//!   file, verifying off the async threads, in constant time for unknown names, and re-reading
//!   the file when it changes, remembering recent successful verifications in a
//!   [`VerifiedCredentialsCache`] so returning users skip argon2.
//! - [`AnonymousAuthenticator`]: lets `anonymous`/`ftp` in read-only, around any other
//!   authenticator.

mod anonymous;
mod file_authenticator;
mod password_verifier;
mod users_file;
mod verified_credentials_cache;

pub use anonymous::{
    ANONYMOUS_USER_NAME, AnonymousAuthenticator, DEFAULT_ANONYMOUS_HOME, is_anonymous_name,
};
pub use file_authenticator::FileAuthenticator;
pub use users_file::{
    MAX_NAME_LENGTH, NameProblem, RESERVED_NAMES, UserEntry, UsersFile, UsersFileError,
    hash_password, parse_home, validate_user_name,
};
pub use verified_credentials_cache::{DEFAULT_CACHE_TTL, VerifiedCredentialsCache};
