//! Information commands (RFC 959 §4.1.3, RFC 2389): FEAT, OPTS, STAT, SITE, HELP.

use super::site;
use super::transfer::strip_list_options;
use super::{
    Action, DataEndpoint, InFlight, Login, QuotaUsage, Session, StorageRequest, TransferType,
};
use crate::command::Verb;
use crate::listing::MlstFacts;
use crate::policy::{format_byte_rate, format_byte_size};
use crate::reply::{Reply, ReplyCode};

impl Session {
    pub(super) fn features(&self) -> Reply {
        let mut lines = vec!["Extensions supported:".to_owned()];
        for verb in Verb::ALL {
            if *verb == Verb::Mfmt && !self.config.allow_set_modified {
                continue;
            }
            if let Some(feature) = verb.spec().feature {
                lines.push(feature.to_owned());
            }
        }
        lines.push(self.mlst_facts.feature_line());
        if self.tls.is_available() {
            // RFC 4217 §6.
            lines.push("AUTH TLS".to_owned());
            lines.push("PBSZ".to_owned());
            lines.push("PROT".to_owned());
            if self.config.tls.allow_ccc {
                lines.push("CCC".to_owned());
            }
        }
        lines.push("TVFS".to_owned());
        lines.push("UTF8".to_owned());
        lines.push("End".to_owned());
        Reply::multiline(ReplyCode::SYSTEM_STATUS, lines)
    }

    pub(super) fn options(&mut self, argument: &str) {
        let (option, value) = argument.split_once(' ').unwrap_or((argument, ""));
        let reply = match option.to_ascii_uppercase().as_str() {
            // RFC 2640 §3.1: paths are UTF-8 always; accept the switch.
            "UTF8" | "UTF-8" => Reply::new(ReplyCode::OK, "UTF8 mode is always on"),
            "MLST" => {
                let (facts, echoed) = MlstFacts::select(value.trim());
                self.mlst_facts = facts;
                Reply::new(ReplyCode::OK, format!("MLST OPTS {echoed}"))
            }
            _ => Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Option not understood"),
        };
        self.reply(reply);
    }

    pub(super) fn status(&mut self, argument: &str) {
        if argument.is_empty() {
            let user = self
                .user_name()
                .map_or("(not logged in)".to_owned(), str::to_owned);
            let data = match self.data_endpoint {
                None => "No data connection".to_owned(),
                Some(DataEndpoint::Passive) => "Passive listener open".to_owned(),
                Some(DataEndpoint::Active(target)) => format!("Active mode to {target}"),
            };
            let lines = [
                "ferroftp status:".to_owned(),
                format!("Connected from {}", self.peer.ip()),
                format!("Logged in as {user}"),
                format!(
                    "TYPE: {}, STRUcture: File, MODE: Stream",
                    match self.transfer_type {
                        TransferType::Ascii => "ASCII",
                        TransferType::Binary => "BINARY",
                    }
                ),
                data,
                self.limits_line(),
                match (self.tls.control_protected(), self.tls.data_protected()) {
                    _ if !self.tls.is_available() => "TLS: not available".to_owned(),
                    (control, data) => format!(
                        "TLS: control {}, data {}",
                        if control { "protected" } else { "clear" },
                        if data {
                            "protected (PROT P)"
                        } else {
                            "clear (PROT C)"
                        }
                    ),
                },
                "End of status".to_owned(),
            ];
            self.reply(Reply::multiline(ReplyCode::SYSTEM_STATUS, lines));
            return;
        }
        if !matches!(self.login, Login::LoggedIn(_)) {
            self.reply(Reply::new(
                ReplyCode::NOT_LOGGED_IN,
                "Please login with USER and PASS",
            ));
            return;
        }
        let argument = strip_list_options(argument);
        match self.resolve(argument) {
            Ok((client, storage)) => self.start(
                InFlight::StatListing {
                    client_path: client.to_string(),
                },
                Action::Storage(StorageRequest::StatListing(storage)),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    pub(super) fn site(&mut self, argument: &str) {
        match site::parse(argument) {
            Ok(site::SiteCommand::Help) => {
                let mut lines = vec!["SITE commands recognized:".to_owned()];
                if self.config.allow_chmod {
                    lines.push(site::CHMOD_SYNTAX.to_owned());
                }
                lines.push("HELP".to_owned());
                lines.push("QUOTA".to_owned());
                lines.push("End".to_owned());
                self.reply(Reply::multiline(ReplyCode::HELP, lines));
            }
            Ok(site::SiteCommand::Chmod { mode, path }) => self.change_mode(mode, path),
            Ok(site::SiteCommand::Quota) => {
                self.start(
                    InFlight::QuotaReport,
                    Action::Storage(StorageRequest::QuotaUsage),
                );
            }
            Err(reply) => self.reply(reply),
        }
    }

    /// The STAT line that tells the user their limits (usage: SITE QUOTA).
    fn limits_line(&self) -> String {
        let Some(user) = self.user_account() else {
            return "Limits: none until login".to_owned();
        };
        let policy = &user.policy;
        let rate = |rate: Option<u64>| rate.map_or("unlimited".to_owned(), format_byte_rate);
        let quota = match (policy.quota_bytes, policy.quota_files) {
            (None, None) => "none".to_owned(),
            (bytes, files) => format!(
                "{}, {} files (usage: SITE QUOTA)",
                bytes.map_or("unlimited bytes".to_owned(), format_byte_size),
                files.map_or("unlimited".to_owned(), |files| files.to_string()),
            ),
        };
        format!(
            "Limits: download {}, upload {}, quota {quota}",
            rate(policy.download_rate),
            rate(policy.upload_rate),
        )
    }

    /// The SITE QUOTA reply.
    pub(super) fn quota_report(&self, usage: Option<QuotaUsage>) -> Reply {
        let policy = self
            .user_account()
            .map(|user| user.policy.clone())
            .unwrap_or_default();
        let of = |used: u64, limit: Option<u64>, format: fn(u64) -> String| match limit {
            Some(limit) => format!("{} of {}", format(used), format(limit)),
            None => format!("{} (no limit)", format(used)),
        };
        let mut lines = vec!["Quota:".to_owned()];
        match usage {
            Some(usage) => {
                lines.push(format!(
                    "Bytes: {}",
                    of(usage.bytes, policy.quota_bytes, |bytes| format!("{bytes}"))
                ));
                lines.push(format!(
                    "Files: {}",
                    of(usage.files, policy.quota_files, |files| format!("{files}"))
                ));
            }
            None => lines.push("Usage: being counted, ask again shortly".to_owned()),
        }
        lines.push(self.limits_line());
        lines.push("End".to_owned());
        Reply::multiline(ReplyCode::OK, lines)
    }
}

pub(super) fn help(argument: &str) -> Reply {
    if !argument.is_empty() {
        return match Verb::from_name(argument.trim()) {
            Some(verb) => Reply::new(ReplyCode::HELP, format!("Syntax: {}", verb.spec().syntax)),
            None => Reply::new(ReplyCode::SYNTAX_ERROR_ARGS, "Unknown command"),
        };
    }
    let mut lines = vec!["The following commands are recognized:".to_owned()];
    for chunk in Verb::ALL.chunks(8) {
        let names: Vec<&str> = chunk.iter().map(|verb| verb.name()).collect();
        lines.push(names.join(" "));
    }
    lines.push("Help OK".to_owned());
    Reply::multiline(ReplyCode::HELP, lines)
}
