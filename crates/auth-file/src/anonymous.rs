//! Anonymous login (RFC 1635) as a decorator around any authenticator.

use async_trait::async_trait;
use ferroftp_backend::{AuthError, Authenticator, LoginAttempt, User, VirtualPath};

/// The name an anonymous session is logged in as.
pub const ANONYMOUS_USER_NAME: &str = "anonymous";

/// `true` for the names clients use for anonymous login, `anonymous` and `ftp`, in any ASCII
/// case.
pub fn is_anonymous_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("anonymous") || name.eq_ignore_ascii_case("ftp")
}

/// Lets `anonymous` and `ftp` log in, with any password, as a read-only user whose home is the
/// storage root; every other name goes to the inner authenticator.
///
/// When disabled it only forwards, so the wiring can always wrap and let configuration decide.
/// The password of an anonymous login (by convention an e-mail address) is never logged.
#[derive(Debug)]
pub struct AnonymousAuthenticator<A> {
    inner: A,
    enabled: bool,
}

impl<A: Authenticator> AnonymousAuthenticator<A> {
    /// Wraps `inner`; anonymous login is allowed when `enabled`.
    pub fn new(inner: A, enabled: bool) -> Self {
        Self { inner, enabled }
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
                home: VirtualPath::root(),
                read_only: true,
                policy: Default::default(),
            });
        }
        self.inner.authenticate(attempt).await
    }
}
