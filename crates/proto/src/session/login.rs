//! Access control (RFC 959 §4.1.1): USER, PASS, REIN, and what a login grants.

use super::config::{CertificateUser, TlsRequirement};
use super::transfer::TransferType;
use super::{Action, InFlight, LoginFailure, LoginRequest, Session, User};
use crate::listing::MlstFacts;
use crate::path::VirtualPath;
use crate::reply::{Reply, ReplyCode};

/// Where the login stands (RFC 959 §4.1.1: USER, then PASS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Login {
    AwaitingUser,
    /// USER was refused because the control connection is not protected: PASS is refused
    /// with the same reason.
    RefusedWithoutTls {
        text: String,
    },
    AwaitingPassword {
        username: String,
    },
    LoggedIn(User),
}

impl Session {
    pub(super) fn user(&mut self, username: String) {
        self.cwd = VirtualPath::root();
        let require = self.config.tls.require_control;
        // The requirements bind listeners that offer TLS; on a plain listener nobody could
        // satisfy them.
        if self.tls.is_available() && !self.tls.control_protected() && require.applies_to(&username)
        {
            let who = match require {
                TlsRequirement::All => "every login",
                _ => "this account",
            };
            let text = format!(
                "TLS required for {who}: send AUTH TLS first ({} = {})",
                self.config.setting_names.tls_require,
                require.as_str()
            );
            self.reply(Reply::new(ReplyCode::NOT_LOGGED_IN, text.clone()));
            self.login = Login::RefusedWithoutTls { text };
            return;
        }
        if self.config.tls.certificate_user == CertificateUser::CommonName
            && let Some(name) = self.tls.client_name()
            && *name != username
        {
            let text = format!("Your client certificate is for user {name}");
            self.login = Login::AwaitingUser;
            self.reply(Reply::new(ReplyCode::NOT_LOGGED_IN, text));
            return;
        }
        self.login = Login::AwaitingPassword { username };
        self.reply(Reply::new(ReplyCode::NEED_PASSWORD, "Password required"));
    }

    pub(super) fn pass(&mut self, password: String) {
        if let Login::RefusedWithoutTls { text } = &self.login {
            let reply = Reply::new(ReplyCode::NOT_LOGGED_IN, text.clone());
            self.reply(reply);
            return;
        }
        let Login::AwaitingPassword { username } = &self.login else {
            let text = match self.login {
                Login::LoggedIn(_) => "Already logged in",
                _ => "Login with USER first",
            };
            self.reply(Reply::new(ReplyCode::BAD_SEQUENCE, text));
            return;
        };
        let request = LoginRequest {
            username: username.clone(),
            password,
        };
        self.start(InFlight::Login, Action::Authenticate(request));
    }

    pub(super) fn finish_login(&mut self, result: Result<User, LoginFailure>) {
        match result {
            Ok(user) if !user.policy.allows_address(self.peer.ip()) => {
                // The password was right, so this is not a failed login; the account is
                // simply not usable from here (`allow_from`).
                self.login = Login::AwaitingUser;
                self.reply(Reply::new(
                    ReplyCode::NOT_LOGGED_IN,
                    format!(
                        "Login as {} not allowed from {}",
                        user.name,
                        self.peer.ip().to_canonical()
                    ),
                ));
            }
            Ok(user) => {
                self.failed_logins = 0;
                self.login_deadline = None;
                self.cwd = VirtualPath::root();
                let text = if user.read_only {
                    format!("User {} logged in (read-only)", user.name)
                } else {
                    format!("User {} logged in", user.name)
                };
                self.login = Login::LoggedIn(user);
                self.reply(Reply::new(ReplyCode::LOGGED_IN, text));
            }
            Err(LoginFailure::Rejected) => {
                self.login = Login::AwaitingUser;
                self.failed_logins += 1;
                if self.failed_logins >= self.config.max_failed_logins {
                    self.reply(Reply::new(ReplyCode::NOT_LOGGED_IN, "Login incorrect"));
                    self.reply(Reply::new(
                        ReplyCode::SERVICE_UNAVAILABLE,
                        "Too many failed logins, closing connection",
                    ));
                    self.close();
                } else {
                    self.reply(Reply::new(ReplyCode::NOT_LOGGED_IN, "Login incorrect"));
                }
            }
            Err(LoginFailure::SessionLimit) => {
                self.login = Login::AwaitingUser;
                self.reply(Reply::new(
                    ReplyCode::NOT_LOGGED_IN,
                    format!(
                        "Too many sessions for this account ({}), try later",
                        self.config.setting_names.max_sessions
                    ),
                ));
            }
            Err(LoginFailure::Unavailable) => {
                self.reply(Reply::new(
                    ReplyCode::SERVICE_UNAVAILABLE,
                    "Authentication service unavailable, try later",
                ));
                self.close();
            }
            // RFC 959 §4.2: 421 is the reply of a service closing the control connection.
            Err(LoginFailure::Banned) => {
                self.reply(Reply::new(
                    ReplyCode::SERVICE_UNAVAILABLE,
                    "Too many failures from your address, closing connection",
                ));
                self.close();
            }
        }
    }

    pub(super) fn reinitialize(&mut self) {
        self.login = Login::AwaitingUser;
        self.cwd = VirtualPath::root();
        self.transfer_type = TransferType::Binary;
        self.restart_offset = 0;
        self.allocated_size = None;
        self.extended_passive_only = false;
        self.mlst_facts = MlstFacts::default();
        self.close_passive();
        self.reply(Reply::new(
            ReplyCode::SERVICE_READY,
            "Reinitialized, login with USER",
        ));
    }

    pub(super) fn user_account(&self) -> Option<&User> {
        match &self.login {
            Login::LoggedIn(user) => Some(user),
            _ => None,
        }
    }

    pub(super) fn is_read_only(&self) -> bool {
        self.user_account().is_none_or(|user| user.read_only)
    }

    /// Answers 550 if the account may not change the storage. Checked once before dispatch
    /// for every command the table marks `modifies_storage`, and by SITE CHMOD (SITE's other
    /// subcommands only read).
    pub(super) fn refuse_if_read_only(&mut self) -> bool {
        if self.is_read_only() {
            self.reply(Reply::new(
                ReplyCode::FILE_UNAVAILABLE,
                "Permission denied (read-only)",
            ));
            return true;
        }
        false
    }
}
