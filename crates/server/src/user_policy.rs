//! The per-account side of [`UserPolicy`](ferroftp_proto::UserPolicy): how many sessions an
//! account has open (`max_sessions`, default `[limits] max_sessions_per_user`), the
//! account's bandwidth buckets (shared by all of its sessions, on every session thread) and
//! its quota usage, plus the server-wide buckets of `[limits]`.
//!
//! An account's state lives while it has a logged-in session: the first login creates it
//! (and starts counting the usage when the account has a quota), the last session's end
//! drops it, so the next first login counts again and sees changes made meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ferroftp_backend::Storage;
use ferroftp_proto::User;

use crate::quota::{QuotaLimits, UsageCounter};
use crate::throttle::{Throttle, TokenBucket};

/// Server-wide limits (`[limits]`); every field may change on reload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserLimitsOptions {
    /// Bytes per second sent by the whole server (all sessions together); `None`: no limit.
    pub download_rate: Option<u64>,
    /// Bytes per second received by the whole server; `None`: no limit.
    pub upload_rate: Option<u64>,
    /// Logged-in sessions per account, for accounts without their own `max_sessions`.
    pub max_sessions_per_user: Option<u32>,
}

/// Every logged-in account's state, and the server-wide buckets. Shared by every
/// configuration generation.
#[derive(Debug)]
pub(crate) struct UserRegistry {
    accounts: Mutex<HashMap<String, Arc<AccountState>>>,
    server_download: Arc<TokenBucket>,
    server_upload: Arc<TokenBucket>,
    /// 0: no default cap.
    max_sessions_per_user: AtomicU32,
}

impl Default for UserRegistry {
    fn default() -> Self {
        Self {
            accounts: Mutex::default(),
            server_download: Arc::new(TokenBucket::new(0)),
            server_upload: Arc::new(TokenBucket::new(0)),
            max_sessions_per_user: AtomicU32::new(0),
        }
    }
}

/// One logged-in account.
#[derive(Debug)]
struct AccountState {
    /// Changed under the registry's lock only.
    sessions: AtomicU32,
    download: Arc<TokenBucket>,
    upload: Arc<TokenBucket>,
    usage: OnceLock<Arc<UsageCounter>>,
}

/// The account has `max_sessions` sessions already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionLimitReached;

impl UserRegistry {
    /// Applies `[limits]` (at start and on every reload); running transfers see new rates at
    /// their next chunk.
    pub(crate) fn set_defaults(&self, options: &UserLimitsOptions) {
        self.server_download
            .set_rate(options.download_rate.unwrap_or(0));
        self.server_upload
            .set_rate(options.upload_rate.unwrap_or(0));
        self.max_sessions_per_user.store(
            options.max_sessions_per_user.unwrap_or(0),
            Ordering::Relaxed,
        );
    }

    /// Counts a login of `user`, refused when the account is at its session cap. The
    /// account's rates follow its policy as of this login.
    pub(crate) fn login(
        self: &Arc<Self>,
        user: &User,
        storage: &Arc<dyn Storage>,
    ) -> Result<UserSession, SessionLimitReached> {
        let policy = &user.policy;
        let cap =
            policy
                .max_sessions
                .or(match self.max_sessions_per_user.load(Ordering::Relaxed) {
                    0 => None,
                    cap => Some(cap),
                });
        let mut accounts = self.lock();
        let account = accounts.entry(user.name.clone()).or_insert_with(|| {
            Arc::new(AccountState {
                sessions: AtomicU32::new(0),
                download: Arc::new(TokenBucket::new(policy.download_rate.unwrap_or(0))),
                upload: Arc::new(TokenBucket::new(policy.upload_rate.unwrap_or(0))),
                usage: OnceLock::new(),
            })
        });
        let sessions = account.sessions.load(Ordering::Relaxed);
        if cap.is_some_and(|cap| sessions >= cap) {
            return Err(SessionLimitReached);
        }
        account.sessions.store(sessions + 1, Ordering::Relaxed);
        account.download.set_rate(policy.download_rate.unwrap_or(0));
        account.upload.set_rate(policy.upload_rate.unwrap_or(0));
        let account = Arc::clone(account);
        drop(accounts);
        let session = UserSession {
            registry: Arc::clone(self),
            name: user.name.clone(),
            account,
            limits: QuotaLimits {
                bytes: policy.quota_bytes,
                files: policy.quota_files,
            },
            storage: Arc::clone(storage),
            home: user.home.clone(),
        };
        if policy.has_quota() {
            session.usage();
        }
        Ok(session)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<AccountState>>> {
        self.accounts
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// One logged-in session of an account; dropping it ends the session's count.
#[derive(Debug)]
pub(crate) struct UserSession {
    registry: Arc<UserRegistry>,
    name: String,
    account: Arc<AccountState>,
    limits: QuotaLimits,
    storage: Arc<dyn Storage>,
    home: ferroftp_proto::VirtualPath,
}

impl UserSession {
    /// The buckets a download passes through: the account's and the server's.
    pub(crate) fn download_throttle(&self) -> Throttle {
        Throttle::new([
            Arc::clone(&self.account.download),
            Arc::clone(&self.registry.server_download),
        ])
    }

    /// The buckets an upload passes through.
    pub(crate) fn upload_throttle(&self) -> Throttle {
        Throttle::new([
            Arc::clone(&self.account.upload),
            Arc::clone(&self.registry.server_upload),
        ])
    }

    /// The account's quota, when it has one.
    pub(crate) fn quota(&self) -> Option<(Arc<UsageCounter>, QuotaLimits)> {
        (self.limits.bytes.is_some() || self.limits.files.is_some())
            .then(|| (self.usage(), self.limits))
    }

    /// The account's usage counter, started (in the background) at the first call.
    pub(crate) fn usage(&self) -> Arc<UsageCounter> {
        Arc::clone(self.account.usage.get_or_init(|| {
            UsageCounter::start(
                Arc::clone(&self.storage),
                self.home.clone(),
                self.name.clone(),
            )
        }))
    }
}

impl Drop for UserSession {
    fn drop(&mut self) {
        let mut accounts = self.registry.lock();
        let left = self
            .account
            .sessions
            .load(Ordering::Relaxed)
            .saturating_sub(1);
        self.account.sessions.store(left, Ordering::Relaxed);
        if left == 0
            && accounts
                .get(&self.name)
                .is_some_and(|account| Arc::ptr_eq(account, &self.account))
        {
            accounts.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferroftp_backend::testing::MemoryStorage;
    use ferroftp_proto::{UserPolicy, VirtualPath};

    fn user(name: &str, policy: UserPolicy) -> User {
        User {
            name: name.into(),
            home: VirtualPath::root(),
            read_only: false,
            policy,
        }
    }

    #[tokio::test]
    async fn sessions_are_capped_per_account_and_counted_down_on_drop() {
        let registry = Arc::new(UserRegistry::default());
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let capped = user(
            "alice",
            UserPolicy {
                max_sessions: Some(2),
                ..Default::default()
            },
        );
        let first = registry.login(&capped, &storage).unwrap();
        let second = registry.login(&capped, &storage).unwrap();
        assert_eq!(
            registry.login(&capped, &storage).unwrap_err(),
            SessionLimitReached
        );
        // Other accounts are not affected.
        let _bob = registry.login(&user("bob", UserPolicy::default()), &storage);
        drop(first);
        let third = registry.login(&capped, &storage).unwrap();
        drop((second, third));
        assert!(!registry.lock().contains_key("alice"));

        // The server default applies to accounts without their own cap.
        registry.set_defaults(&UserLimitsOptions {
            max_sessions_per_user: Some(1),
            ..Default::default()
        });
        let carol = user("carol", UserPolicy::default());
        let _one = registry.login(&carol, &storage).unwrap();
        assert!(registry.login(&carol, &storage).is_err());
    }

    #[tokio::test]
    async fn an_accounts_sessions_share_one_bucket() {
        let registry = Arc::new(UserRegistry::default());
        let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let limited = user(
            "alice",
            UserPolicy {
                download_rate: Some(1000),
                ..Default::default()
            },
        );
        let first = registry.login(&limited, &storage).unwrap();
        let second = registry.login(&limited, &storage).unwrap();
        assert!(Arc::ptr_eq(
            &first.account.download,
            &second.account.download
        ));
        assert!(!first.download_throttle().is_unlimited());
        assert!(first.upload_throttle().is_unlimited());
        registry.set_defaults(&UserLimitsOptions {
            upload_rate: Some(5000),
            ..Default::default()
        });
        assert!(!first.upload_throttle().is_unlimited());
    }
}
