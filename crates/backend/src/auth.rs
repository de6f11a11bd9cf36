//! Authentication: the interface every user database implements.

use std::fmt;
use std::net::IpAddr;

use async_trait::async_trait;

/// A password as received in PASS. Its `Debug` never shows the secret, so it cannot end up
/// in a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for verification only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Password(*****)")
    }
}

/// One login attempt: what the client sent and where it came from.
#[derive(Clone, Debug)]
pub struct LoginAttempt {
    /// The name given in USER.
    pub username: String,
    /// The secret given in PASS.
    pub password: Password,
    /// The client's address (after PROXY protocol, when trusted).
    pub peer: IpAddr,
}

/// A logged-in user, as the protocol sees it (defined in `ferroftp-proto`).
pub use ferroftp_proto::User;

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Wrong name or password. One variant for both so the reply cannot reveal which
    /// (no user enumeration): the client gets 530 either way.
    #[error("login rejected")]
    Rejected,
    /// No user of that name. The client gets the same 530 as for [`Rejected`](Self::Rejected),
    /// after the same time, so it cannot tell which; only the server's defender weighs it
    /// differently (guessing names is a scan, not a mistyped password).
    #[error("login rejected: unknown user")]
    UnknownUser,
    /// The user database could not be consulted: 421, and it does not count as a failure.
    #[error("authentication backend unavailable: {0}")]
    Unavailable(String),
}

/// A user database.
#[async_trait]
pub trait Authenticator: Send + Sync + fmt::Debug + 'static {
    /// Checks an attempt and returns the user it logs in.
    async fn authenticate(&self, attempt: &LoginAttempt) -> Result<User, AuthError>;
}
