//! Navigation (PWD, CWD, CDUP) and file actions (RFC 959 §4.1.1, §4.1.3; RFC 3659; draft-somers-ftp-mfxx):
//! paths mapped under the user's home, and the storage requests they become.

use super::site;
use super::{Action, InFlight, Session, StorageRequest, StorageResult};
use crate::error::StorageErrorKind;
use crate::listing;
use crate::path::{PathError, VirtualPath};
use crate::reply::{Reply, ReplyCode};
use crate::time::{format_time_val, parse_time_val};

impl Session {
    /// PWD (RFC 959 §4.1.3); 257 with the path quoted (Appendix II).
    pub(super) fn print_working_directory(&mut self) {
        self.reply(Reply::new(
            ReplyCode::PATH_CREATED,
            format!("{} is the current directory", quote_path(self.cwd.as_str())),
        ));
    }

    /// CDUP: at the top of the home it is refused like `CWD ..`: `..` never climbs out.
    pub(super) fn change_to_parent(&mut self) {
        if self.cwd.is_root() {
            self.reply(PathError::EscapesRoot.reply());
            return;
        }
        self.cwd = self.cwd.parent();
        self.reply(Reply::new(ReplyCode::FILE_ACTION_OK, "Directory changed"));
    }

    /// MLST (RFC 3659 §7): the facts of one path, the working directory without argument.
    pub(super) fn list_single(&mut self, argument: &str) {
        let target = if argument.is_empty() { "." } else { argument };
        self.lookup(target, StorageRequest::Metadata, |c| {
            InFlight::MachineListSingle { client_path: c }
        });
    }

    /// Resolves a client path against the working directory and maps it into the storage
    /// namespace under the user's home. Returns (the path the client sees, the storage path).
    pub(super) fn resolve(&self, argument: &str) -> Result<(VirtualPath, VirtualPath), Reply> {
        let client = self.cwd.resolve(argument).map_err(|error| error.reply())?;
        let home = self
            .user_account()
            .map_or_else(VirtualPath::root, |user| user.home.clone());
        let storage = home.join(&client);
        Ok((client, storage))
    }

    /// [`resolve`](Self::resolve) for a command that creates the name (STOR, APPE, MKD,
    /// RNTO): a name holding CR or LF is refused with 553 (RFC 959 §4.2.1, "File name not
    /// allowed"), since a listing could not show it without breaking its line into forged
    /// entries (see [`listing::is_listable_name`]).
    pub(super) fn resolve_new_name(
        &self,
        argument: &str,
    ) -> Result<(VirtualPath, VirtualPath), Reply> {
        let (client, storage) = self.resolve(argument)?;
        if !client.file_name().is_none_or(listing::is_listable_name) {
            return Err(Reply::new(
                ReplyCode::NAME_NOT_ALLOWED,
                "File name not allowed (line break)",
            ));
        }
        Ok((client, storage))
    }

    /// SITE CHMOD: the storage narrows the mode to its mask; what is refused here is what
    /// no mask could make acceptable.
    pub(super) fn change_mode(&mut self, mode: u32, argument: &str) {
        if !self.config.allow_chmod {
            // RFC 959 §4.2: 504, command not implemented for that parameter.
            self.reply(Reply::new(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "SITE CHMOD not supported by this storage",
            ));
            return;
        }
        if self.refuse_if_read_only() {
            return;
        }
        if mode & site::SPECIAL_MODE_BITS != 0 {
            self.reply(Reply::new(
                ReplyCode::FILE_UNAVAILABLE,
                "Permission denied: setuid, setgid and sticky bits cannot be set",
            ));
            return;
        }
        match self.resolve(argument) {
            Ok((client, storage)) => self.start(
                InFlight::Simple {
                    client_path: client.to_string(),
                    success: Reply::new(ReplyCode::OK, "SITE CHMOD command successful"),
                },
                Action::Storage(StorageRequest::SetMode {
                    path: storage,
                    mode,
                }),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    pub(super) fn change_directory(&mut self, argument: &str) {
        match self.resolve(argument) {
            Ok((client, storage)) => self.start(
                InFlight::ChangeDirectory {
                    client_path: client.to_string(),
                    target: client,
                },
                Action::Storage(StorageRequest::Metadata(storage)),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    pub(super) fn make_directory(&mut self, argument: &str) {
        match self.resolve_new_name(argument) {
            Ok((client, storage)) => {
                let success = Reply::new(
                    ReplyCode::PATH_CREATED,
                    format!("{} created", quote_path(client.as_str())),
                );
                self.start(
                    InFlight::Simple {
                        client_path: client.to_string(),
                        success,
                    },
                    Action::Storage(StorageRequest::MakeDir(storage)),
                );
            }
            Err(reply) => self.reply(reply),
        }
    }

    /// A write operation on one path answered 250 on success.
    pub(super) fn modify(
        &mut self,
        argument: &str,
        request: fn(VirtualPath) -> StorageRequest,
        success_text: &str,
    ) {
        match self.resolve(argument) {
            Ok((client, storage)) => self.start(
                InFlight::Simple {
                    client_path: client.to_string(),
                    success: Reply::new(ReplyCode::FILE_ACTION_OK, success_text),
                },
                Action::Storage(request(storage)),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    /// A read-only storage query on one path.
    pub(super) fn lookup(
        &mut self,
        argument: &str,
        request: impl FnOnce(VirtualPath) -> StorageRequest,
        in_flight: impl FnOnce(String) -> InFlight,
    ) {
        match self.resolve(argument) {
            Ok((client, storage)) => self.start(
                in_flight(client.to_string()),
                Action::Storage(request(storage)),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    pub(super) fn rename_from(&mut self, argument: &str) {
        match self.resolve(argument) {
            Ok((client, storage)) => self.start(
                InFlight::RenameFrom {
                    client_path: client.to_string(),
                    storage_path: storage.clone(),
                },
                Action::Storage(StorageRequest::Metadata(storage)),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    pub(super) fn rename_to(&mut self, argument: &str) {
        let Some(from) = self.rename_from.take() else {
            self.reply(Reply::new(ReplyCode::BAD_SEQUENCE, "RNFR required first"));
            return;
        };
        match self.resolve_new_name(argument) {
            Ok((client, to)) => self.start(
                InFlight::Simple {
                    client_path: client.to_string(),
                    success: Reply::new(ReplyCode::FILE_ACTION_OK, "Rename successful"),
                },
                Action::Storage(StorageRequest::Rename { from, to }),
            ),
            Err(reply) => self.reply(reply),
        }
    }

    pub(super) fn set_modification_time(&mut self, argument: &str) {
        // RFC draft-somers-ftp-mfxx: MFMT <time-val> <path>.
        let Some((time_text, path)) = argument.split_once(' ') else {
            self.reply(Reply::new(
                ReplyCode::SYNTAX_ERROR_ARGS,
                "Syntax: MFMT YYYYMMDDHHMMSS path",
            ));
            return;
        };
        let Some(time) = parse_time_val(time_text) else {
            self.reply(Reply::new(
                ReplyCode::SYNTAX_ERROR_ARGS,
                "Invalid time value",
            ));
            return;
        };
        match self.resolve(path) {
            Ok((client, storage)) => {
                let success = Reply::new(
                    ReplyCode::FILE_STATUS,
                    format!("Modify={}; {}", format_time_val(time), client),
                );
                self.start(
                    InFlight::Simple {
                        client_path: client.to_string(),
                        success,
                    },
                    Action::Storage(StorageRequest::SetModified {
                        path: storage,
                        time,
                    }),
                );
            }
            Err(reply) => self.reply(reply),
        }
    }

    pub(super) fn finish_storage(
        &mut self,
        in_flight: InFlight,
        result: Result<StorageResult, StorageErrorKind>,
    ) {
        let result = match result {
            Ok(result) => result,
            Err(kind) => {
                let client_path = match &in_flight {
                    InFlight::Simple { client_path, .. }
                    | InFlight::ChangeDirectory { client_path, .. }
                    | InFlight::RenameFrom { client_path, .. }
                    | InFlight::Size { client_path }
                    | InFlight::ModificationTime { client_path }
                    | InFlight::MachineListSingle { client_path }
                    | InFlight::StatListing { client_path } => client_path.clone(),
                    _ => String::new(),
                };
                self.reply(kind.reply(&client_path));
                return;
            }
        };
        let reply = match (in_flight, result) {
            (InFlight::Simple { success, .. }, _) => success,
            (
                InFlight::ChangeDirectory {
                    client_path,
                    target,
                },
                StorageResult::Metadata(meta),
            ) => {
                if meta.is_dir() {
                    self.cwd = target;
                    Reply::new(ReplyCode::FILE_ACTION_OK, "Directory changed")
                } else {
                    StorageErrorKind::NotADirectory.reply(&client_path)
                }
            }
            (InFlight::RenameFrom { storage_path, .. }, StorageResult::Metadata(_)) => {
                self.rename_from = Some(storage_path);
                let text = if self.config.atomic_rename {
                    "Ready for RNTO"
                } else {
                    "Ready for RNTO (this storage renames by copy and delete: not atomic)"
                };
                Reply::new(ReplyCode::PENDING_FURTHER_INFO, text)
            }
            (InFlight::QuotaReport, StorageResult::QuotaUsage(usage)) => self.quota_report(usage),
            (InFlight::Size { .. }, StorageResult::Size(size)) => {
                Reply::new(ReplyCode::FILE_STATUS, size.to_string())
            }
            (InFlight::ModificationTime { client_path }, StorageResult::Metadata(meta)) => {
                match meta.modified {
                    Some(time) if !meta.is_dir() => {
                        Reply::new(ReplyCode::FILE_STATUS, format_time_val(time))
                    }
                    Some(_) => StorageErrorKind::IsADirectory.reply(&client_path),
                    None => Reply::new(ReplyCode::FILE_UNAVAILABLE, "Time not available"),
                }
            }
            (InFlight::MachineListSingle { client_path }, StorageResult::Metadata(meta)) => {
                // RFC 3659 §7.2: the facts line is indented by one space inside a 250 reply.
                let mut line = String::new();
                listing::format_facts(&meta, self.mlst_facts, !self.is_read_only(), &mut line);
                line.push_str(&client_path);
                Reply::multiline(
                    ReplyCode::FILE_ACTION_OK,
                    [format!("Listing {client_path}"), line, "End".to_owned()],
                )
            }
            (InFlight::StatListing { client_path }, StorageResult::Entries { entries, now }) => {
                let mut out = Vec::new();
                for entry in &entries {
                    listing::format_long(entry, now, &mut out);
                }
                let text = String::from_utf8_lossy(&out);
                let mut lines = vec![format!("Status of {client_path}:")];
                lines.extend(
                    text.split("\r\n")
                        .filter(|l| !l.is_empty())
                        .map(str::to_owned),
                );
                lines.push("End of status".to_owned());
                Reply::multiline(ReplyCode::FILE_STATUS, lines)
            }
            (in_flight, result) => {
                debug_assert!(
                    false,
                    "storage result {result:?} does not match {in_flight:?}"
                );
                Reply::new(ReplyCode::LOCAL_ERROR, "Internal error")
            }
        };
        self.reply(reply);
    }
}

/// RFC 959 Appendix II: a quote inside a quoted path is doubled.
fn quote_path(path: &str) -> String {
    format!("\"{}\"", path.replace('"', "\"\""))
}
