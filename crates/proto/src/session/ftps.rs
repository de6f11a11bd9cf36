//! FTPS (RFC 4217): AUTH TLS, PBSZ, PROT, CCC, and the rules for data connections.

use super::config::TlsRequirement;
use super::{Action, InFlight, Login, Session};
use crate::reply::{Reply, ReplyCode};

impl Session {
    /// AUTH TLS (and AUTH SSL, its historical alias).
    pub(super) fn auth(&mut self, argument: &str) {
        let mechanism = argument.trim().to_ascii_uppercase();
        if !matches!(mechanism.as_str(), "TLS" | "SSL" | "TLS-C") {
            self.reply(Reply::new(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Unknown security mechanism, use AUTH TLS",
            ));
            return;
        }
        if self.control_tls {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "The control connection is already protected",
            ));
            return;
        }
        if matches!(self.login, Login::LoggedIn(_)) {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "AUTH TLS must come before login",
            ));
            return;
        }
        // A USER sent in plain text is forgotten: the login starts again under TLS.
        self.login = Login::AwaitingUser;
        self.queued.clear();
        self.reply(Reply::new(
            ReplyCode::AUTH_OK,
            format!("AUTH {mechanism} ok, proceed with the TLS handshake"),
        ));
        self.start(InFlight::TlsHandshake, Action::UpgradeToTls);
    }

    /// PBSZ (RFC 4217 §8): only 0 makes sense for TLS; any number is answered PBSZ=0.
    pub(super) fn protection_buffer_size(&mut self, argument: &str) {
        if !self.control_tls {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "PBSZ needs a TLS connection: send AUTH TLS first",
            ));
            return;
        }
        if argument.trim().parse::<u64>().is_err() {
            self.reply(Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Syntax: PBSZ 0"));
            return;
        }
        self.pbsz_done = true;
        self.reply(Reply::new(ReplyCode::OK, "PBSZ=0"));
    }

    /// PROT (RFC 4217 §9): C and P; S and E do not exist for TLS.
    pub(super) fn protection_level(&mut self, argument: &str) {
        if !self.control_tls {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "PROT needs a TLS connection: send AUTH TLS first",
            ));
            return;
        }
        if !self.pbsz_done {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "Send PBSZ 0 before PROT",
            ));
            return;
        }
        let reply = match argument.trim().to_ascii_uppercase().as_str() {
            "P" => {
                self.protect_data = true;
                Reply::new(ReplyCode::OK, "Protection level set to Private")
            }
            "C" if self.data_tls_required() => Reply::new(
                ReplyCode::POLICY_DENIED,
                format!(
                    "PROT C refused: data connections must be protected (tls.require_data = {})",
                    self.config.tls.require_data.as_str()
                ),
            ),
            "C" => {
                self.protect_data = false;
                Reply::new(ReplyCode::OK, "Protection level set to Clear")
            }
            "S" | "E" => Reply::new(
                ReplyCode::PROT_NOT_SUPPORTED,
                "Only PROT C and PROT P are supported",
            ),
            _ => Reply::new(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Unknown PROT level",
            ),
        };
        self.reply(reply);
    }

    /// CCC (RFC 4217 §12.3): back to a plain control connection, when allowed.
    pub(super) fn clear_command_channel(&mut self) {
        if !self.control_tls {
            self.reply(Reply::new(
                ReplyCode::PROTECTION_DENIED,
                "The control connection is not protected",
            ));
            return;
        }
        if !self.config.tls.allow_ccc {
            self.reply(Reply::new(
                ReplyCode::POLICY_DENIED,
                "CCC refused: the control connection stays protected (tls.allow_ccc = false)",
            ));
            return;
        }
        self.reply(Reply::new(
            ReplyCode::OK,
            "Control connection in clear text from now on; data protection unchanged",
        ));
        self.control_tls = false;
        self.actions.push_back(Action::ClearControlTls);
    }

    /// The name the data rules apply to: the logged-in user, or the one USER named.
    fn login_name(&self) -> Option<&str> {
        match &self.login {
            Login::LoggedIn(user) => Some(&user.name),
            Login::AwaitingPassword { username } => Some(username),
            _ => None,
        }
    }

    /// `tls.require_data` applies to this session (before USER only `all` is known to).
    pub(super) fn data_tls_required(&self) -> bool {
        if !self.tls_available {
            return false;
        }
        let require = self.config.tls.require_data;
        match self.login_name() {
            Some(name) => require.applies_to(name),
            None => require == TlsRequirement::All,
        }
    }

    pub(super) fn data_resumption_required(&self) -> bool {
        let policy = &self.config.tls;
        if !policy.require_reuse {
            return false;
        }
        let exempt_user = self
            .login_name()
            .is_some_and(|name| policy.reuse_exempt_users.iter().any(|u| u == name));
        let peer = self.peer.ip();
        let exempt_client = policy
            .reuse_exempt_clients
            .iter()
            .any(|net| net.contains(peer));
        !exempt_user && !exempt_client
    }
}
