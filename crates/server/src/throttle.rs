//! Bandwidth limits: token buckets shared by every transfer they cover (one per account and
//! direction for `download_rate`/`upload_rate`, one per server and direction for
//! `[limits]`), and the [`Throttle`] a transfer passes its bytes through.
//!
//! A bucket holds at most one second's worth of bytes (the burst), refills at its rate, and
//! may go into debt: a transfer takes the bytes it is about to move and then waits until the
//! debt is paid. Several transfers sharing a bucket therefore share its rate, whatever
//! session thread they run on.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A rate shared by whoever holds the bucket. `rate` 0 means no limit (the bucket is kept so
/// that a reload or the next login can give it one without replacing it under running
/// transfers).
#[derive(Debug)]
pub(crate) struct TokenBucket {
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    /// Bytes per second; 0: unlimited.
    rate: u64,
    /// Bytes that may go out now; negative: the debt of reservations not yet paid.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket (one second's burst) of `rate` bytes per second; 0 for unlimited.
    pub(crate) fn new(rate: u64) -> Self {
        Self {
            state: Mutex::new(BucketState {
                rate,
                tokens: rate as f64,
                updated: Instant::now(),
            }),
        }
    }

    /// Bytes per second, 0 when unlimited.
    pub(crate) fn rate(&self) -> u64 {
        self.lock().rate
    }

    /// Changes the rate; tokens above the new burst are dropped.
    pub(crate) fn set_rate(&self, rate: u64) {
        let mut state = self.lock();
        if state.rate != rate {
            state.rate = rate;
            state.tokens = state.tokens.min(rate as f64);
        }
    }

    /// Takes `bytes` at `now` and says how long the caller must wait before moving them.
    pub(crate) fn reserve(&self, bytes: usize, now: Instant) -> Duration {
        let mut state = self.lock();
        if state.rate == 0 {
            return Duration::ZERO;
        }
        let rate = state.rate as f64;
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        // The burst is at most one second's worth of bytes.
        state.tokens = (state.tokens + elapsed * rate).min(rate);
        state.updated = state.updated.max(now);
        state.tokens -= bytes as f64;
        if state.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.tokens / rate)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BucketState> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// The buckets one transfer passes its bytes through (its account's and the server's, for
/// its direction). Empty: the transfer is not throttled and keeps its zero-copy path.
#[derive(Clone, Debug, Default)]
pub(crate) struct Throttle {
    buckets: Vec<Arc<TokenBucket>>,
}

/// Smallest chunk a throttled transfer moves at once.
const MIN_THROTTLED_CHUNK: usize = 4 * 1024;

impl Throttle {
    /// A throttle over the buckets that have a rate now.
    pub(crate) fn new(buckets: impl IntoIterator<Item = Arc<TokenBucket>>) -> Self {
        Self {
            buckets: buckets
                .into_iter()
                .filter(|bucket| bucket.rate() > 0)
                .collect(),
        }
    }

    /// No bucket limits this transfer.
    pub(crate) fn is_unlimited(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Largest chunk to move at once: an eighth of a second at the slowest rate, so that
    /// bytes leave smoothly and a burst stays within one second's worth.
    pub(crate) fn chunk_limit(&self) -> usize {
        self.buckets
            .iter()
            .map(|bucket| usize::try_from(bucket.rate() / 8).unwrap_or(usize::MAX))
            .min()
            .map_or(usize::MAX, |limit| limit.max(MIN_THROTTLED_CHUNK))
    }

    /// Takes `bytes` from every bucket and waits until all of them allow it.
    pub(crate) async fn pass(&self, bytes: usize) {
        if bytes == 0 || self.buckets.is_empty() {
            return;
        }
        let now = Instant::now();
        let wait = self
            .buckets
            .iter()
            .map(|bucket| bucket.reserve(bytes, now))
            .max()
            .unwrap_or_default();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_lets_one_second_through_then_charges_the_debt() {
        let bucket = TokenBucket::new(1_000_000);
        let start = Instant::now();
        assert_eq!(bucket.reserve(1_000_000, start), Duration::ZERO);
        // Empty now: the next 500 kB wait half a second, the next 500 kB a second.
        assert_eq!(bucket.reserve(500_000, start), Duration::from_millis(500));
        assert_eq!(bucket.reserve(500_000, start), Duration::from_secs(1));
        // A second later, half the debt is paid.
        assert_eq!(
            bucket.reserve(0, start + Duration::from_secs(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn the_burst_never_exceeds_one_second_of_rate() {
        let bucket = TokenBucket::new(1000);
        let start = Instant::now();
        assert_eq!(bucket.reserve(1000, start), Duration::ZERO);
        // An hour idle refills one second's worth, not an hour's.
        let later = start + Duration::from_secs(3600);
        assert_eq!(bucket.reserve(1000, later), Duration::ZERO);
        assert_eq!(bucket.reserve(1000, later), Duration::from_secs(1));
    }

    #[test]
    fn two_takers_share_the_rate() {
        // Two transfers taking 4 MiB each in 64 KiB chunks, alternating, from one 1 MB/s
        // bucket: the last chunk may leave only after (8 MiB - 1 MB burst) / 1 MB/s.
        let bucket = Arc::new(TokenBucket::new(1_000_000));
        let start = Instant::now();
        let mut last_wait = Duration::ZERO;
        for _ in 0..64 {
            for _ in 0..2 {
                last_wait = bucket.reserve(64 * 1024, start);
            }
        }
        let expected = (8.0 * 1_048_576.0 - 1_000_000.0) / 1_000_000.0;
        assert!(
            (last_wait.as_secs_f64() - expected).abs() < 1e-6,
            "{last_wait:?}"
        );
    }

    #[test]
    fn rate_zero_is_unlimited_and_can_be_set_later() {
        let bucket = Arc::new(TokenBucket::new(0));
        let now = Instant::now();
        assert_eq!(bucket.reserve(1 << 30, now), Duration::ZERO);
        assert!(Throttle::new([Arc::clone(&bucket)]).is_unlimited());
        bucket.set_rate(2000);
        let throttle = Throttle::new([Arc::clone(&bucket)]);
        assert!(!throttle.is_unlimited());
        assert_eq!(throttle.chunk_limit(), MIN_THROTTLED_CHUNK);
        assert_eq!(
            Throttle::new([Arc::new(TokenBucket::new(8_000_000))]).chunk_limit(),
            1_000_000
        );
    }
}
