//! FTPS (RFC 4217): AUTH TLS, PBSZ, PROT, CCC, and the rules for data connections.

use super::config::{ControlTransport, TlsRequirement};
use super::{Action, InFlight, Login, Session, TlsInfo};
use crate::reply::{Reply, ReplyCode};

/// Where a session stands with FTPS (RFC 4217): one value, whose state says what AUTH,
/// PBSZ, PROT and CCC may do next.
///
/// The handshake after AUTH TLS is not a state of its own: it is the operation in flight
/// ([`InFlight::TlsHandshake`]), during which received lines are discarded, and it ends in
/// [`TlsState::Secured`] or in the session's close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum TlsState {
    /// The listener offers no TLS (`tls = "off"`): AUTH, PBSZ, PROT and CCC get 502.
    Unavailable,
    /// The control connection is plain and has never been protected; AUTH TLS may come.
    Plain,
    /// The control connection is protected.
    Secured(Negotiated),
    /// CCC (RFC 4217 §12.3) returned the control connection to clear text; what was
    /// negotiated for data connections still holds.
    Cleared(Negotiated),
}

/// What a protected control connection established, and keeps through a CCC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Negotiated {
    /// The verified client certificate's common name.
    client_name: Option<String>,
    /// What PBSZ and PROT set for data connections.
    data: DataLevel,
}

/// The data connections' protection (RFC 4217 §8, §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataLevel {
    /// No PBSZ yet: PROT is refused (it needs PBSZ first), data connections are clear.
    AwaitingBufferSize,
    /// PBSZ accepted, PROT C (the default, RFC 4217 §9): clear.
    Clear,
    /// PROT P: protected.
    Private,
}

impl TlsState {
    /// The state at connect for a listener's transport.
    pub(super) fn at_connect(transport: ControlTransport) -> Self {
        match transport {
            ControlTransport::Plain => Self::Unavailable,
            ControlTransport::Explicit => Self::Plain,
            // Implicit FTPS: protected from the first byte, data connections too unless
            // the client sends PROT C (PBSZ counts as done).
            ControlTransport::Implicit(info) => Self::Secured(Negotiated {
                client_name: info.client_name,
                data: DataLevel::Private,
            }),
        }
    }

    /// AUTH and the rest are possible on this listener (explicit or implicit FTPS).
    pub(super) fn is_available(&self) -> bool {
        !matches!(self, Self::Unavailable)
    }

    /// The control connection is protected now.
    pub(super) fn control_protected(&self) -> bool {
        matches!(self, Self::Secured(_))
    }

    /// PROT P is in effect: data connections are protected.
    pub(super) fn data_protected(&self) -> bool {
        self.negotiated()
            .is_some_and(|negotiated| negotiated.data == DataLevel::Private)
    }

    /// The verified client certificate's common name.
    pub(super) fn client_name(&self) -> Option<&str> {
        self.negotiated()?.client_name.as_deref()
    }

    fn negotiated(&self) -> Option<&Negotiated> {
        match self {
            Self::Secured(negotiated) | Self::Cleared(negotiated) => Some(negotiated),
            Self::Unavailable | Self::Plain => None,
        }
    }
}

impl Session {
    /// The handshake that AUTH TLS started is done: the control connection is protected.
    /// A session that was protected before (AUTH again after CCC) keeps its PBSZ and PROT.
    pub(super) fn finish_tls_handshake(&mut self, info: TlsInfo) {
        let data = match &self.tls {
            TlsState::Cleared(negotiated) => negotiated.data,
            _ => DataLevel::AwaitingBufferSize,
        };
        self.tls = TlsState::Secured(Negotiated {
            client_name: info.client_name,
            data,
        });
    }

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
        if self.tls.control_protected() {
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
        let TlsState::Secured(negotiated) = &mut self.tls else {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "PBSZ needs a TLS connection: send AUTH TLS first",
            ));
            return;
        };
        if argument.trim().parse::<u64>().is_err() {
            self.reply(Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Syntax: PBSZ 0"));
            return;
        }
        if negotiated.data == DataLevel::AwaitingBufferSize {
            negotiated.data = DataLevel::Clear;
        }
        self.reply(Reply::new(ReplyCode::OK, "PBSZ=0"));
    }

    /// PROT (RFC 4217 §9): C and P; S and E do not exist for TLS.
    pub(super) fn protection_level(&mut self, argument: &str) {
        let data_tls_required = self.data_tls_required();
        let TlsState::Secured(negotiated) = &mut self.tls else {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "PROT needs a TLS connection: send AUTH TLS first",
            ));
            return;
        };
        if negotiated.data == DataLevel::AwaitingBufferSize {
            self.reply(Reply::new(
                ReplyCode::BAD_SEQUENCE,
                "Send PBSZ 0 before PROT",
            ));
            return;
        }
        let reply = match argument.trim().to_ascii_uppercase().as_str() {
            "P" => {
                negotiated.data = DataLevel::Private;
                Reply::new(ReplyCode::OK, "Protection level set to Private")
            }
            "C" if data_tls_required => Reply::new(
                ReplyCode::POLICY_DENIED,
                format!(
                    "PROT C refused: data connections must be protected ({} = {})",
                    self.config.setting_names.tls_require_data,
                    self.config.tls.require_data.as_str()
                ),
            ),
            "C" => {
                negotiated.data = DataLevel::Clear;
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
        let TlsState::Secured(negotiated) = &self.tls else {
            self.reply(Reply::new(
                ReplyCode::PROTECTION_DENIED,
                "The control connection is not protected",
            ));
            return;
        };
        let cleared = TlsState::Cleared(negotiated.clone());
        if !self.config.tls.allow_ccc {
            self.reply(Reply::new(
                ReplyCode::POLICY_DENIED,
                format!(
                    "CCC refused: the control connection stays protected ({} = false)",
                    self.config.setting_names.tls_allow_ccc
                ),
            ));
            return;
        }
        self.reply(Reply::new(
            ReplyCode::OK,
            "Control connection in clear text from now on; data protection unchanged",
        ));
        self.tls = cleared;
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
        if !self.tls.is_available() {
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
