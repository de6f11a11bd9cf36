//! Anonymous login (RFC 1635) as a decorator around any authenticator.

use async_trait::async_trait;
use ferroftp_backend::{AccountState, AuthError, Authenticator, LoginAttempt, User, VirtualPath};

/// The name an anonymous session is logged in as.
pub const ANONYMOUS_USER_NAME: &str = "anonymous";

/// `true` for the names clients use for anonymous login, `anonymous` and `ftp`, in any ASCII
/// case.
pub fn is_anonymous_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("anonymous") || name.eq_ignore_ascii_case("ftp")
}

/// Where anonymous sessions are confined unless configured otherwise (`auth.anonymous_home`):
/// a directory of its own, not the storage root where every account's home lives.
pub const DEFAULT_ANONYMOUS_HOME: &str = "/pub";

/// Lets `anonymous` and `ftp` log in, with any password, as a read-only user confined to the
/// anonymous home ([`DEFAULT_ANONYMOUS_HOME`] unless [`with_home`](Self::with_home) says
/// otherwise; the server creates it at the first login like any home); every other name goes
/// to the inner authenticator.
///
/// When disabled it only forwards, so the wiring can always wrap and let configuration decide.
/// The password of an anonymous login (by convention an e-mail address) is never logged.
#[derive(Debug)]
pub struct AnonymousAuthenticator<A> {
    inner: A,
    enabled: bool,
    home: VirtualPath,
}

impl<A: Authenticator> AnonymousAuthenticator<A> {
    /// Wraps `inner`; anonymous login is allowed when `enabled`, with the home
    /// [`DEFAULT_ANONYMOUS_HOME`].
    pub fn new(inner: A, enabled: bool) -> Self {
        let home = VirtualPath::root()
            .resolve(DEFAULT_ANONYMOUS_HOME)
            .expect("a valid absolute path");
        Self {
            inner,
            enabled,
            home,
        }
    }

    /// Confines anonymous sessions to `home` (`/` for the whole storage).
    pub fn with_home(mut self, home: VirtualPath) -> Self {
        self.home = home;
        self
    }

    /// The home of anonymous sessions.
    pub fn home(&self) -> &VirtualPath {
        &self.home
    }

    /// Whether anonymous login is allowed.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The wrapped authenticator.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

#[async_trait]
impl<A: Authenticator> Authenticator for AnonymousAuthenticator<A> {
    async fn authenticate(&self, attempt: &LoginAttempt) -> Result<User, AuthError> {
        if self.enabled && is_anonymous_name(&attempt.username) {
            tracing::debug!(peer = %attempt.peer, "anonymous login");
            return Ok(User {
                name: ANONYMOUS_USER_NAME.to_owned(),
                home: self.home.clone(),
                read_only: true,
                policy: Default::default(),
            });
        }
        self.inner.authenticate(attempt).await
    }

    async fn account_state(&self, name: &str) -> AccountState {
        if self.enabled && name == ANONYMOUS_USER_NAME {
            return AccountState::Active {
                read_only: true,
                credentials: 0,
            };
        }
        self.inner.account_state(name).await
    }
}
