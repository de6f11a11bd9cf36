//! The file commands that run on the control connection alone (SIZE, MDTM, STAT of a path,
//! MKD, RMD, DELE, RNFR/RNTO, MFMT, SITE CHMOD, SITE QUOTA): one storage call each, logged
//! when it changes something, and the account's quota usage kept in step.

use std::sync::Arc;

use ferroftp_backend::{Storage, StorageError};
use ferroftp_proto::session::{Outcome, StorageRequest, StorageResult};
use ferroftp_proto::{DirEntry, Escaped, StorageErrorKind, VirtualPath};
use futures_util::StreamExt as _;
use tracing::{debug, info};

use super::{ControlConnection, LOG_TARGET, now};
use crate::quota::UsageCounter;
use crate::user_policy::UserSession;

/// Most entries `STAT path` sends over the control connection; larger directories are
/// listed with LIST over a data connection.
const MAX_STAT_ENTRIES: usize = 10_000;

/// What a DELE or RNTO will take off the account's quota usage, when it has a quota
/// (`counter`): the size of the file removed or renamed over (a rename inside the home moves
/// usage, it does not change it).
async fn usage_change(
    counter: Option<Arc<UsageCounter>>,
    storage: &dyn Storage,
    request: &StorageRequest,
) -> Option<(Arc<UsageCounter>, i64, i64)> {
    let counter = counter?;
    let removed = match request {
        StorageRequest::RemoveFile(path) => path,
        StorageRequest::Rename { from, to } if from != to => to,
        _ => return None,
    };
    let meta = storage.metadata(removed).await.ok()?;
    if meta.is_dir() {
        return None;
    }
    Some((counter, -i64::try_from(meta.size).unwrap_or(i64::MAX), -1))
}

async fn storage_operation(
    storage: &Arc<dyn Storage>,
    request: StorageRequest,
) -> Result<StorageResult, StorageErrorKind> {
    let result = match &request {
        StorageRequest::Metadata(path) => storage.metadata(path).await.map(StorageResult::Metadata),
        StorageRequest::ResumableSize(path) => {
            storage.resumable_size(path).await.map(StorageResult::Size)
        }
        StorageRequest::StatListing(path) => stat_listing(storage, path).await,
        StorageRequest::MakeDir(path) => storage.make_dir(path).await.map(|()| StorageResult::Done),
        StorageRequest::RemoveDir(path) => {
            storage.remove_dir(path).await.map(|()| StorageResult::Done)
        }
        StorageRequest::RemoveFile(path) => storage
            .remove_file(path)
            .await
            .map(|()| StorageResult::Done),
        StorageRequest::Rename { from, to } => {
            storage.rename(from, to).await.map(|()| StorageResult::Done)
        }
        StorageRequest::SetModified { path, time } => storage
            .set_modified(path, *time)
            .await
            .map(|()| StorageResult::Done),
        StorageRequest::SetMode { path, mode } => storage
            .set_mode(path, *mode)
            .await
            .map(|()| StorageResult::Done),
        // Answered by the control loop from the account's usage.
        StorageRequest::QuotaUsage => Ok(StorageResult::QuotaUsage(None)),
    };
    match result {
        Ok(result) => {
            // Changes are logged with the command and the paths in their client form.
            let change = match &request {
                StorageRequest::Metadata(_)
                | StorageRequest::ResumableSize(_)
                | StorageRequest::StatListing(_)
                | StorageRequest::QuotaUsage => None,
                StorageRequest::MakeDir(path) => Some(("MKD", path, None)),
                StorageRequest::RemoveDir(path) => Some(("RMD", path, None)),
                StorageRequest::RemoveFile(path) => Some(("DELE", path, None)),
                StorageRequest::Rename { from, to } => Some(("RNTO", from, Some(to))),
                StorageRequest::SetModified { path, .. } => Some(("MFMT", path, None)),
                StorageRequest::SetMode { path, .. } => Some(("SITE CHMOD", path, None)),
            };
            if let Some((command, path, to)) = change {
                info!(target: LOG_TARGET,
                    command,
                    path = ?Escaped(path),
                    to = to.map(|to| tracing::field::debug(Escaped(to))),
                    "storage changed"
                );
            }
            Ok(result)
        }
        Err(error) => {
            // Debug escapes the client's paths in the request; the error may quote one too.
            debug!(target: LOG_TARGET, ?request, error = %Escaped(&error), "storage operation failed");
            Err(error.kind)
        }
    }
}

async fn stat_listing(
    storage: &Arc<dyn Storage>,
    path: &VirtualPath,
) -> Result<StorageResult, StorageError> {
    let meta = storage.metadata(path).await?;
    if !meta.is_dir() {
        let name = path.file_name().unwrap_or("/").to_owned();
        return Ok(StorageResult::Entries {
            entries: vec![DirEntry { name, meta }],
            now: std::time::SystemTime::now(),
        });
    }
    let mut stream = storage.list(path).await?;
    let mut entries = Vec::new();
    while let Some(entry) = stream.next().await {
        entries.push(entry?);
        if entries.len() >= MAX_STAT_ENTRIES {
            break;
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(StorageResult::Entries {
        entries,
        now: std::time::SystemTime::now(),
    })
}

impl ControlConnection {
    /// Runs a storage request and gives the session its outcome.
    pub(super) async fn perform_storage(&mut self, request: StorageRequest) {
        let result = match request {
            // Answered from the account's usage, not by the storage.
            StorageRequest::QuotaUsage => Ok(StorageResult::QuotaUsage(
                self.user_session
                    .as_ref()
                    .and_then(|account| account.usage().current()),
            )),
            request => {
                let counter = self
                    .user_session
                    .as_ref()
                    .and_then(UserSession::quota)
                    .map(|(counter, _)| counter);
                let change = usage_change(counter, &*self.storage, &request).await;
                let result = storage_operation(&self.storage, request).await;
                if result.is_ok()
                    && let Some((counter, bytes, files)) = change
                {
                    counter.apply(bytes, files);
                }
                result
            }
        };
        self.session.handle_outcome(Outcome::Storage(result), now());
    }
}
