//! Transfer parameters and transfers (RFC 959 §4.1.2, §4.1.3, RFC 3659): TYPE, MODE, STRU,
//! REST, ALLO, RETR, STOR, APPE, STOU, LIST, NLST, MLSD, ABOR, and the replies around a
//! transfer.

use super::{
    Action, DataEndpoint, DataProtection, DataTlsFailure, InFlight, Session, TransferFailure,
    TransferKind, TransferRequest, TransferSummary, UploadTarget, WriteMode,
};
use crate::command::{Command, Verb};
use crate::error::StorageErrorKind;
use crate::listing::ListFormat;
use crate::path::VirtualPath;
use crate::reply::{Reply, ReplyCode};

/// The representation type (RFC 959 §3.1.1): what TYPE sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TransferType {
    Ascii,
    Binary,
}

impl Session {
    /// ABOR and STAT while a transfer runs (RFC 959 §4.1.3: the only commands answered
    /// before its reply).
    pub(super) fn handle_during_transfer(&mut self, command: Command) {
        match command.verb {
            Verb::Abor => {
                if let Some(InFlight::Transfer {
                    abort_requested, ..
                }) = &mut self.in_flight
                    && !*abort_requested
                {
                    *abort_requested = true;
                    self.actions.push_back(Action::AbortTransfer);
                }
            }
            Verb::Stat => self.reply(Reply::multiline(
                ReplyCode::SYSTEM_STATUS,
                [
                    "Transfer in progress".to_owned(),
                    "End of status".to_owned(),
                ],
            )),
            _ => {}
        }
    }

    /// ABOR with no transfer running: nothing to abort, but a passive listener waiting for
    /// a transfer is closed.
    pub(super) fn abort_without_transfer(&mut self) {
        self.close_passive();
        self.reply(Reply::new(ReplyCode::CLOSING_DATA, "No transfer to abort"));
    }

    /// ALLO (RFC 959 §4.1.3): `ALLO n [R m]`. The size is kept for the next upload, whose
    /// quota check uses it before any byte arrives. RFC 959 says ALLO "should be treated as
    /// a NOOP" where storage needs no reservation: 202 says exactly that; an account with a
    /// quota gets the size checked at its next upload instead (200).
    pub(super) fn allocate(&mut self, argument: &str) {
        let size = argument
            .split_whitespace()
            .next()
            .and_then(|size| size.parse::<u64>().ok());
        let Some(size) = size else {
            self.reply(Reply::new(
                ReplyCode::SYNTAX_ERROR_ARGS,
                "Syntax: ALLO <size in bytes> [R <record size>]",
            ));
            return;
        };
        let has_quota = self
            .user_account()
            .is_some_and(|user| user.policy.quota_bytes.is_some());
        if has_quota {
            self.allocated_size = Some(size);
            self.reply(Reply::new(
                ReplyCode::OK,
                format!("ALLO {size} bytes noted for the next upload"),
            ));
        } else {
            self.reply(Reply::new(ReplyCode::SUPERFLUOUS, "ALLO not needed"));
        }
    }

    pub(super) fn set_type(&mut self, argument: &str) {
        let upper = argument.to_ascii_uppercase();
        let mut words = upper.split_whitespace();
        let reply = match (words.next(), words.next()) {
            (Some("A"), None | Some("N")) => {
                self.transfer_type = TransferType::Ascii;
                Reply::new(ReplyCode::OK, "Type set to A")
            }
            (Some("I"), None) | (Some("L"), Some("8")) => {
                self.transfer_type = TransferType::Binary;
                Reply::new(ReplyCode::OK, "Type set to I")
            }
            (Some("A" | "E"), Some(_)) | (Some("E"), None) | (Some("L"), _) => Reply::new(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Type not supported",
            ),
            _ => Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Unknown type"),
        };
        self.reply(reply);
    }

    pub(super) fn restart(&mut self, argument: &str) {
        match argument.trim().parse::<u64>() {
            Ok(offset) => {
                self.restart_offset = offset;
                self.reply(Reply::new(
                    ReplyCode::PENDING_FURTHER_INFO,
                    format!("Restarting at {offset}. Send STOR or RETR"),
                ));
            }
            Err(_) => self.reply(Reply::new(
                ReplyCode::SYNTAX_ERROR_ARGS,
                "Invalid restart offset",
            )),
        }
    }

    fn take_endpoint(&mut self) -> Option<DataEndpoint> {
        let endpoint = self.data_endpoint.take();
        if endpoint.is_none() {
            self.reply(Reply::new(
                ReplyCode::CANT_OPEN_DATA,
                "Use PORT, EPRT, PASV or EPSV first",
            ));
        }
        endpoint
    }

    fn start_transfer(&mut self, kind: TransferKind, client_path: String, verb: Verb) {
        let protection = if self.tls.data_protected() {
            DataProtection::Private {
                require_resumption: self.data_resumption_required(),
            }
        } else if self.data_tls_required() {
            // RFC 4217 §9; the data endpoint stays, so PROT P and the command again work.
            self.reply(Reply::new(
                ReplyCode::PROT_REFUSED,
                format!(
                    "Data connections must be protected: send PBSZ 0 and PROT P ({} = {})",
                    self.config.setting_names.tls_require_data,
                    self.config.tls.require_data.as_str()
                ),
            ));
            return;
        } else {
            DataProtection::Clear
        };
        let Some(endpoint) = self.take_endpoint() else {
            return;
        };
        // ALLO announces the size of the next upload only.
        let allocated_size = self.allocated_size.take();
        let request = TransferRequest {
            allocated_size: allocated_size.filter(|_| matches!(kind, TransferKind::Store { .. })),
            kind,
            endpoint,
            ascii: self.transfer_type == TransferType::Ascii,
            protection,
        };
        self.start(
            InFlight::Transfer {
                client_path,
                started: false,
                abort_requested: false,
                verb,
            },
            Action::Transfer(request),
        );
    }

    pub(super) fn retrieve(&mut self, argument: &str) {
        let offset = std::mem::take(&mut self.restart_offset);
        match self.resolve(argument) {
            Ok((client, path)) => self.start_transfer(
                TransferKind::Retrieve { path, offset },
                client.to_string(),
                Verb::Retr,
            ),
            Err(reply) => self.reply(reply),
        }
    }

    pub(super) fn store(&mut self, argument: &str, verb: Verb) {
        let offset = std::mem::take(&mut self.restart_offset);
        let mode = match (verb, offset) {
            (Verb::Appe, _) => WriteMode::Append,
            (_, 0) => WriteMode::Create,
            (_, offset) => WriteMode::ResumeAt(offset),
        };
        if mode != WriteMode::Create && !self.config.allow_resume_upload {
            self.reply(Reply::new(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "This storage cannot append or resume uploads",
            ));
            return;
        }
        match self.resolve_new_name(argument) {
            Ok((client, path)) => self.start_transfer(
                TransferKind::Store {
                    target: UploadTarget::Path(path),
                    mode,
                },
                client.to_string(),
                verb,
            ),
            Err(reply) => self.reply(reply),
        }
    }

    pub(super) fn store_unique(&mut self) {
        self.restart_offset = 0;
        match self.resolve(".") {
            Ok((client, directory)) => self.start_transfer(
                TransferKind::Store {
                    target: UploadTarget::UniqueIn(directory),
                    mode: WriteMode::Create,
                },
                client.to_string(),
                Verb::Stou,
            ),
            Err(reply) => self.reply(reply),
        }
    }

    pub(super) fn list(&mut self, argument: &str, format: ListFormat, verb: Verb) {
        self.restart_offset = 0;
        let argument = if format == ListFormat::Machine {
            argument
        } else {
            strip_list_options(argument)
        };
        let argument = if argument.is_empty() { "." } else { argument };
        let writable = !self.is_read_only();
        match self.resolve(argument) {
            Ok((client, path)) => self.start_transfer(
                TransferKind::List {
                    path,
                    format,
                    facts: self.mlst_facts,
                    writable,
                },
                client.to_string(),
                verb,
            ),
            Err(reply) => self.reply(reply),
        }
    }

    pub(super) fn opening_reply(
        &self,
        verb: Verb,
        client_path: &str,
        size: Option<u64>,
        stored_as: Option<VirtualPath>,
    ) -> Reply {
        let mode = match self.transfer_type {
            TransferType::Ascii => "ASCII",
            TransferType::Binary => "BINARY",
        };
        let text = match (verb, size, stored_as) {
            // RFC 1123 §4.1.2.9: STOU's preliminary reply names the file.
            (Verb::Stou, _, Some(stored)) => {
                let home = self
                    .user_account()
                    .map_or_else(VirtualPath::root, |u| u.home.clone());
                let shown = stored.strip_base(&home).unwrap_or(stored);
                format!("FILE: {}", shown.file_name().unwrap_or(shown.as_str()))
            }
            (Verb::List | Verb::Nlst | Verb::Mlsd, _, _) => {
                "Here comes the directory listing".to_owned()
            }
            (_, Some(size), _) => {
                format!("Opening {mode} mode data connection for {client_path} ({size} bytes)")
            }
            _ => format!("Opening {mode} mode data connection for {client_path}"),
        };
        Reply::new(ReplyCode::OPENING_DATA, text)
    }

    pub(super) fn finish_transfer(
        &mut self,
        started: bool,
        abort_requested: bool,
        result: Result<TransferSummary, TransferFailure>,
    ) {
        match result {
            Ok(_) if abort_requested && !self.stopping => {
                // RFC 959 §4.1.3 ABOR: the transfer had completed; just 226.
                self.reply(Reply::new(
                    ReplyCode::CLOSING_DATA,
                    "Transfer complete, ABOR ignored",
                ));
            }
            Ok(_) => self.reply(Reply::new(ReplyCode::CLOSING_DATA, "Transfer complete")),
            Err(TransferFailure::Aborted) if self.stopping => {
                // The server aborted it at the end of the shutdown grace period; no ABOR to
                // answer. The 421 follows (drain_queue).
                self.reply(Reply::new(
                    ReplyCode::TRANSFER_ABORTED,
                    "Transfer aborted: the server is shutting down",
                ));
            }
            Err(TransferFailure::Aborted) => {
                // RFC 959 §4.1.3 ABOR: 426 for the aborted command, then 226 for ABOR.
                self.reply(Reply::new(ReplyCode::TRANSFER_ABORTED, "Transfer aborted"));
                self.reply(Reply::new(ReplyCode::CLOSING_DATA, "ABOR successful"));
            }
            Err(TransferFailure::DataConnection(text)) => {
                self.reply(Reply::new(
                    ReplyCode::CANT_OPEN_DATA,
                    format!("Can't open data connection: {text}"),
                ));
            }
            Err(TransferFailure::DataTls(DataTlsFailure::NotResumed)) => {
                let names = &self.config.setting_names;
                let text = format!(
                    "TLS session reuse required: the data connection did not resume a TLS \
                     session of this login ({}; a client that cannot resume needs {} or {})",
                    names.tls_require_reuse,
                    names.tls_reuse_exempt_users,
                    names.tls_reuse_exempt_clients
                );
                self.reply(Reply::new(ReplyCode::PROTOCOL_NOT_SUPPORTED, text));
            }
            Err(TransferFailure::DataTls(DataTlsFailure::Handshake(text))) => {
                self.reply(Reply::new(
                    ReplyCode::CANT_OPEN_DATA,
                    format!("TLS handshake on the data connection failed: {text}"),
                ));
            }
            Err(TransferFailure::ConnectionLost(text)) => {
                self.reply(Reply::new(
                    ReplyCode::TRANSFER_ABORTED,
                    format!("Data connection lost: {text}"),
                ));
            }
            Err(TransferFailure::Storage(kind)) if started => {
                let code = match kind {
                    StorageErrorKind::InsufficientSpace | StorageErrorKind::QuotaExceeded => {
                        ReplyCode::EXCEEDED_STORAGE
                    }
                    _ => ReplyCode::LOCAL_ERROR,
                };
                self.reply(Reply::new(
                    code,
                    format!("Transfer failed: {}", kind.describe()),
                ));
            }
            Err(TransferFailure::Storage(kind)) => {
                let reply = kind.reply("");
                let text = kind.describe();
                self.reply(Reply::new(reply.code, text));
            }
        }
    }
}

/// Clients send `ls` options with LIST (`LIST -la`, `LIST -al dir`); they select nothing
/// here, so they are dropped. A lone `-` or a name after them is kept.
pub(super) fn strip_list_options(argument: &str) -> &str {
    let mut rest = argument;
    while rest.starts_with('-') && rest.len() > 1 {
        match rest.split_once(' ') {
            Some((_, after)) => rest = after.trim_start(),
            None => return "",
        }
    }
    rest
}

/// MODE (RFC 959 §3.4): stream only.
pub(super) fn transfer_mode(argument: &str) -> Reply {
    match argument.to_ascii_uppercase().as_str() {
        "S" => Reply::new(ReplyCode::OK, "Mode set to S"),
        "B" | "C" | "Z" => Reply::new(
            ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
            "Only MODE S is supported",
        ),
        _ => Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Unknown mode"),
    }
}

/// STRU (RFC 959 §3.1.2): file structure only.
pub(super) fn file_structure(argument: &str) -> Reply {
    match argument.to_ascii_uppercase().as_str() {
        "F" => Reply::new(ReplyCode::OK, "Structure set to F"),
        "R" | "P" => Reply::new(
            ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
            "Only STRU F is supported",
        ),
        _ => Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Unknown structure"),
    }
}
