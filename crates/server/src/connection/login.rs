//! Logging in (USER/PASS through the authenticator, the defender and the account's policy)
//! and noticing an account that changed since.

use ferroftp_backend::{AccountState, AuthError, LoginAttempt, Password};
use ferroftp_proto::Escaped;
use ferroftp_proto::session::{LoginFailure, LoginRequest, Outcome};
use tracing::{info, warn};

use super::{ControlConnection, EndedBy, LOG_TARGET};
use crate::home;
use crate::telemetry::{self, LoginResult};
use crate::{DefenderEvent, DefenderVerdict};

impl ControlConnection {
    pub(super) async fn authenticate(&mut self, request: LoginRequest) -> Outcome {
        let attempt = LoginAttempt {
            username: request.username,
            password: Password::new(request.password),
            peer: self.peer.ip().to_canonical(),
        };
        // A new login ends the account's previous one on this connection (after REIN).
        self.user_session = None;
        // A session opened before its address was banned: refused without spending a
        // password verification (argon2) on it.
        if self.context.defender.is_banned(attempt.peer) {
            return Outcome::Authenticated(Err(LoginFailure::Banned));
        }
        // Logins sent in parallel over many connections wait in the verification queue; the
        // ban that one of them causes answers the others at once (their queued verifications
        // are skipped, see `PasswordVerifier::run`).
        let verified = tokio::select! {
            verified = self.context.authenticator.authenticate(&attempt) => verified,
            () = self.context.defender.until_banned(attempt.peer) => {
                return Outcome::Authenticated(Err(LoginFailure::Banned));
            }
        };
        match verified {
            Ok(user) if !user.policy.allows_address(attempt.peer) => {
                // The session refuses it (530, the rule lives in proto); nothing is counted.
                login_refused(attempt.peer, &user.name, "allow-from");
                Outcome::Authenticated(Ok(user))
            }
            Ok(user) => {
                let storage = &*self.context.storage;
                self.context
                    .homes
                    .ensure(storage, &user.name, &user.home)
                    .await;
                let scoped = home::scoped(&self.context.storage, &user.name, &user.home).await;
                // The account's session cap; its quota usage is counted through the storage
                // confined to its home.
                match self.context.users.login(&user, &scoped) {
                    Ok(account) => self.user_session = Some(account),
                    Err(_) => {
                        login_refused(attempt.peer, &user.name, "max-sessions");
                        return Outcome::Authenticated(Err(LoginFailure::SessionLimit));
                    }
                }
                self.storage = scoped;
                self.span
                    .record("user", tracing::field::debug(Escaped(&user.name)));
                if let Some(lineage) = &mut self.lineage {
                    lineage.logged_in(&user.name);
                }
                self.user = user.name.clone();
                self.account_at_login = self.context.authenticator.account_state(&user.name).await;
                self.registration.set_user(&user.name);
                let per_user = self.registration.status().per_user_metrics();
                telemetry::login(LoginResult::Ok, per_user.then_some(user.name.as_str()));
                info!(target: LOG_TARGET, user = ?Escaped(&user.name), reply = 230, "logged in");
                Outcome::Authenticated(Ok(user))
            }
            Err(rejection @ (AuthError::Rejected | AuthError::UnknownUser)) => {
                // One stable line per failed login, for fail2ban
                // (contrib/fail2ban/filter.d/ferroftp.conf): the client's address first, then
                // what the client sent, quoted and escaped, so that a user name can neither
                // break the line nor forge another address.
                warn!(target: LOG_TARGET,
                    client = %attempt.peer,
                    user = ?Escaped(&attempt.username),
                    reason = %"bad-credentials",
                    reply = 530,
                    "login failed"
                );
                telemetry::login(LoginResult::Rejected, None);
                let event = match rejection {
                    AuthError::UnknownUser => DefenderEvent::UnknownUser,
                    _ => DefenderEvent::FailedLogin,
                };
                if let DefenderVerdict::Banned(_) =
                    self.context.defender.record(attempt.peer, event)
                {
                    // The reply says so and the connection closes: the next one is refused
                    // at accept anyway.
                    return Outcome::Authenticated(Err(LoginFailure::Banned));
                }
                // Slows password guessing on this connection; other sessions are not held up.
                tokio::time::sleep(self.context.failed_login_delay).await;
                Outcome::Authenticated(Err(LoginFailure::Rejected))
            }
            Err(error) => {
                warn!(target: LOG_TARGET, %error, "authentication backend unavailable");
                telemetry::login(LoginResult::Unavailable, None);
                Outcome::Authenticated(Err(LoginFailure::Unavailable))
            }
        }
    }

    /// Asks the authenticator whether the logged-in account changed since the login, before
    /// the session runs the commands just received: deleted or given a new password, the
    /// session ends with 421 (after a running transfer); made read-only, its next write
    /// command gets 550. A database that cannot tell costs nothing here.
    pub(super) async fn check_account(&mut self) {
        let AccountState::Active {
            credentials: credentials_at_login,
            ..
        } = self.account_at_login
        else {
            return;
        };
        if self.session.user_name().is_none() {
            return;
        }
        match self.context.authenticator.account_state(&self.user).await {
            AccountState::Unchecked => {}
            AccountState::Active {
                read_only,
                credentials,
            } if credentials == credentials_at_login => {
                self.session.handle_account_read_only(read_only);
            }
            AccountState::Active { .. } => {
                warn!(target: LOG_TARGET, "the account's password changed: session closed");
                self.session.handle_account_revoked();
                self.ended_by = EndedBy::Backend;
            }
            AccountState::Gone => {
                warn!(target: LOG_TARGET, "the account was removed: session closed");
                self.session.handle_account_revoked();
                self.ended_by = EndedBy::Backend;
            }
        }
    }
}

/// A login with the right password that the account's policy refuses (530): logged and
/// counted apart from wrong passwords, and never fed to the defender.
fn login_refused(client: std::net::IpAddr, user: &str, reason: &'static str) {
    warn!(target: LOG_TARGET,
        client = %client,
        user = ?Escaped(user),
        reason = %reason,
        reply = 530,
        "login refused"
    );
    telemetry::login(LoginResult::Refused, None);
}
