//! Quotas (`quota_bytes`, `quota_files`): what an account stores under its home, counted
//! once (a walk of the home in the background, at the account's first login) and then kept
//! up to date by every commit, delete and rename of its sessions — never a walk per upload.
//!
//! An upload is checked three times: before the data connection (the file count, and the
//! size announced by ALLO, RFC 959 §4.1.3), while receiving (the bytes may not pass the
//! room left), and when publishing, where the change is charged atomically so that two
//! sessions of one account cannot together publish past the quota.

use std::sync::Arc;

use ferroftp_backend::Storage;
use ferroftp_proto::session::{QuotaUsage, WriteMode};
use ferroftp_proto::{FileKind, StorageErrorKind, VirtualPath};
use futures_util::StreamExt;
use tokio::sync::watch;
use tracing::{debug, warn};

/// The usage of one account; `None` until the first count is done.
#[derive(Debug)]
pub(crate) struct UsageCounter {
    usage: watch::Sender<Option<QuotaUsage>>,
}

impl UsageCounter {
    /// A counter whose first count runs in the background on the current runtime.
    pub(crate) fn start(storage: Arc<dyn Storage>, home: VirtualPath, user: String) -> Arc<Self> {
        let counter = Arc::new(Self {
            usage: watch::Sender::new(None),
        });
        let filling = Arc::clone(&counter);
        tokio::spawn(async move {
            let usage = count_usage(&*storage, &home).await;
            debug!(
                user,
                bytes = usage.bytes,
                files = usage.files,
                "quota usage counted"
            );
            filling.usage.send_modify(|current| {
                // Changes made while counting were seen by the walk (or not); the walk wins.
                *current = Some(usage);
            });
        });
        counter
    }

    /// The usage now, `None` while the first count runs.
    pub(crate) fn current(&self) -> Option<QuotaUsage> {
        *self.usage.borrow()
    }

    /// The usage, once counted.
    pub(crate) async fn counted(&self) -> QuotaUsage {
        let mut receiver = self.usage.subscribe();
        match receiver.wait_for(Option::is_some).await {
            Ok(usage) => usage.unwrap_or_default(),
            // The sender lives in `self`: it cannot be gone.
            Err(_) => QuotaUsage::default(),
        }
    }

    /// Applies a change that happened (a delete, a rename over a file, a correction).
    pub(crate) fn apply(&self, bytes: i64, files: i64) {
        self.usage.send_modify(|usage| {
            if let Some(usage) = usage {
                usage.bytes = usage.bytes.saturating_add_signed(bytes);
                usage.files = usage.files.saturating_add_signed(files);
            }
        });
    }

    /// Charges a change about to be published if the limits allow it (a growth beyond a
    /// limit is refused; a shrink always passes).
    pub(crate) fn try_charge(&self, bytes: i64, files: i64, limits: QuotaLimits) -> bool {
        let mut charged = false;
        self.usage.send_if_modified(|usage| {
            let Some(usage) = usage else {
                return false;
            };
            let new_bytes = usage.bytes.saturating_add_signed(bytes);
            let new_files = usage.files.saturating_add_signed(files);
            let over = |new: u64, limit: Option<u64>, delta: i64| {
                delta > 0 && limit.is_some_and(|limit| new > limit)
            };
            if over(new_bytes, limits.bytes, bytes) || over(new_files, limits.files, files) {
                return false;
            }
            usage.bytes = new_bytes;
            usage.files = new_files;
            charged = true;
            true
        });
        charged
    }
}

/// An account's quota.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QuotaLimits {
    pub(crate) bytes: Option<u64>,
    pub(crate) files: Option<u64>,
}

/// What an upload that passed its first check will change, for the checks that follow.
#[derive(Clone, Debug)]
pub(crate) struct UploadQuota {
    pub(crate) counter: Arc<UsageCounter>,
    pub(crate) limits: QuotaLimits,
    /// Most bytes the upload may receive (`u64::MAX`: no byte quota).
    pub(crate) room: u64,
    /// The size of the version it replaces (0 for a new file).
    pub(crate) replaced_size: u64,
    /// The file did not exist before.
    pub(crate) new_file: bool,
    /// The bytes kept before the received ones (APPE: the old file; REST: the offset).
    pub(crate) kept: u64,
}

impl UploadQuota {
    /// Decides at STOR time: refused with [`StorageErrorKind::QuotaExceeded`] when the new
    /// file would pass `quota_files`, or the size ALLO announced would pass `quota_bytes`.
    /// `existing` is the size of the file the upload replaces or extends, if any.
    pub(crate) fn check(
        counter: Arc<UsageCounter>,
        limits: QuotaLimits,
        usage: QuotaUsage,
        mode: WriteMode,
        existing: Option<u64>,
        allocated_size: Option<u64>,
    ) -> Result<Self, StorageErrorKind> {
        let replaced_size = existing.unwrap_or(0);
        let new_file = existing.is_none();
        if new_file && limits.files.is_some_and(|limit| usage.files >= limit) {
            return Err(StorageErrorKind::QuotaExceeded);
        }
        let kept = match mode {
            WriteMode::Create => 0,
            WriteMode::Append => replaced_size,
            WriteMode::ResumeAt(offset) => offset,
        };
        // Usage without the replaced version, plus what the new one keeps of it.
        let base = usage
            .bytes
            .saturating_sub(replaced_size)
            .saturating_add(kept);
        let room = limits
            .bytes
            .map_or(u64::MAX, |limit| limit.saturating_sub(base));
        if allocated_size.is_some_and(|size| size > room) {
            return Err(StorageErrorKind::QuotaExceeded);
        }
        Ok(Self {
            counter,
            limits,
            room,
            replaced_size,
            new_file,
            kept,
        })
    }

    /// Charges the upload of `received` bytes before it is published; `false`: over quota,
    /// do not publish.
    pub(crate) fn charge(&self, received: u64) -> bool {
        let final_size = self.kept.saturating_add(received);
        self.counter.try_charge(
            signed(final_size) - signed(self.replaced_size),
            i64::from(self.new_file),
            self.limits,
        )
    }

    /// After publishing: the storage's final size may differ from the estimate (TYPE A).
    pub(crate) fn correct(&self, received: u64, final_size: u64) {
        let estimated = self.kept.saturating_add(received);
        if estimated != final_size {
            self.counter
                .apply(signed(final_size) - signed(estimated), 0);
        }
    }

    /// The publication failed after [`charge`](Self::charge): give the charge back.
    pub(crate) fn refund(&self, received: u64) {
        let final_size = self.kept.saturating_add(received);
        self.counter.apply(
            signed(self.replaced_size) - signed(final_size),
            -i64::from(self.new_file),
        );
    }
}

fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Walks `home` and adds up its files. Unreadable directories are skipped (and logged): the
/// count is then low, never an error that would lock the account out.
pub(crate) async fn count_usage(storage: &dyn Storage, home: &VirtualPath) -> QuotaUsage {
    let mut usage = QuotaUsage::default();
    let mut directories = vec![home.clone()];
    while let Some(directory) = directories.pop() {
        let mut entries = match storage.list(&directory).await {
            Ok(entries) => entries,
            Err(error) => {
                if directory != *home || error.kind != StorageErrorKind::NotFound {
                    warn!(%directory, %error, "quota count skipped a directory");
                }
                continue;
            }
        };
        while let Some(entry) = entries.next().await {
            let Ok(entry) = entry else {
                continue;
            };
            match entry.meta.kind {
                FileKind::File => {
                    usage.bytes = usage.bytes.saturating_add(entry.meta.size);
                    usage.files += 1;
                }
                FileKind::Directory => {
                    if let Ok(path) = directory.resolve(&entry.name) {
                        directories.push(path);
                    }
                }
                FileKind::Symlink => {}
            }
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(bytes: u64, files: u64) -> Arc<UsageCounter> {
        Arc::new(UsageCounter {
            usage: watch::Sender::new(Some(QuotaUsage { bytes, files })),
        })
    }

    const LIMITS: QuotaLimits = QuotaLimits {
        bytes: Some(1000),
        files: Some(3),
    };

    #[test]
    fn a_new_file_needs_room_for_one_more_file() {
        let usage = QuotaUsage {
            bytes: 10,
            files: 3,
        };
        let refused =
            UploadQuota::check(counter(10, 3), LIMITS, usage, WriteMode::Create, None, None);
        assert_eq!(refused.unwrap_err(), StorageErrorKind::QuotaExceeded);
        // Replacing an existing file adds none.
        let replacing = UploadQuota::check(
            counter(10, 3),
            LIMITS,
            usage,
            WriteMode::Create,
            Some(5),
            None,
        )
        .unwrap();
        assert_eq!(replacing.room, 995);
    }

    #[test]
    fn allo_is_checked_against_the_room_left() {
        let usage = QuotaUsage {
            bytes: 600,
            files: 1,
        };
        let check = |allocated| {
            UploadQuota::check(
                counter(600, 1),
                LIMITS,
                usage,
                WriteMode::Create,
                None,
                Some(allocated),
            )
        };
        assert!(check(400).is_ok());
        assert_eq!(check(401).unwrap_err(), StorageErrorKind::QuotaExceeded);
        // An append keeps the old bytes: room is what is left above them.
        let append = UploadQuota::check(
            counter(600, 1),
            LIMITS,
            usage,
            WriteMode::Append,
            Some(500),
            None,
        )
        .unwrap();
        assert_eq!(append.room, 400);
    }

    #[test]
    fn charges_keep_usage_up_to_date_and_refuse_growth_past_the_quota() {
        let counter = counter(600, 1);
        let usage = counter.current().unwrap();
        let upload = UploadQuota::check(
            Arc::clone(&counter),
            LIMITS,
            usage,
            WriteMode::Create,
            None,
            None,
        )
        .unwrap();
        assert!(upload.charge(300));
        assert_eq!(
            counter.current(),
            Some(QuotaUsage {
                bytes: 900,
                files: 2
            })
        );
        // A second upload checked against the same old usage cannot pass at publishing.
        assert!(!upload.charge(300));
        assert_eq!(counter.current().unwrap().bytes, 900);
        upload.refund(300);
        assert_eq!(
            counter.current(),
            Some(QuotaUsage {
                bytes: 600,
                files: 1
            })
        );
        // Deletes and renames over a file apply directly.
        counter.apply(-600, -1);
        assert_eq!(counter.current(), Some(QuotaUsage::default()));
        // Shrinking always passes, even above the quota.
        let over = super::tests::counter(5000, 9);
        assert!(over.try_charge(-100, 0, LIMITS));
        assert!(!over.try_charge(1, 0, LIMITS));
    }

    #[tokio::test]
    async fn the_count_walks_the_home_and_ignores_the_rest() {
        use ferroftp_backend::testing::MemoryStorage;
        use tokio::io::AsyncWriteExt;
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let path = |text: &str| VirtualPath::root().resolve(text).unwrap();
        for directory in ["/alice", "/alice/sub", "/bob"] {
            storage.make_dir(&path(directory)).await.unwrap();
        }
        for (file, size) in [("/alice/a", 100), ("/alice/sub/b", 23), ("/bob/c", 1000)] {
            let mut upload = storage
                .start_upload(
                    &ferroftp_proto::UploadTarget::Path(path(file)),
                    WriteMode::Create,
                )
                .await
                .unwrap();
            upload.write_all(&vec![7u8; size]).await.unwrap();
            upload.commit().await.unwrap();
        }
        let counter = UsageCounter::start(Arc::clone(&storage), path("/alice"), "alice".into());
        assert_eq!(
            counter.counted().await,
            QuotaUsage {
                bytes: 123,
                files: 2
            }
        );
        assert_eq!(
            count_usage(&*storage, &path("/missing")).await,
            QuotaUsage::default()
        );
    }
}
