//! Gives memory back to the operating system after a peak of sessions has passed.
//!
//! Every session allocates its buffers, task and tables; when thousands of sessions end
//! together, glibc's allocator keeps most of what they freed in its arenas for reuse (each
//! session thread and tokio worker has one), so the server's RSS stays at the peak. The soak
//! (scripts/soak.sh) showed it: 6,645 sessions raised RSS from 10 to 118 MiB, and after they
//! had all gone it stayed at 118 MiB, the same plateau round after round (retained, not
//! leaked); `malloc_trim` brought it to 58 MiB. An operator reads a server that stays at its
//! peak as a leak, and on a shared host that memory is better back in the page cache. So when
//! the open sessions have fallen well below their peak and stayed there for a few seconds, the
//! server asks the allocator once to return its free pages (off the async threads: trimming
//! walks every arena).
//!
//! Only with glibc (`target_env = "gnu"`): other allocators decide this themselves.

use std::time::Duration;

use tokio::sync::watch;

/// A fall smaller than this many sessions is not worth a trim.
const SMALLEST_FALL: usize = 256;

/// The count must stay down this long: a trim in the middle of a reconnect wave would only
/// be undone by it.
pub(crate) const SETTLE: Duration = Duration::from_secs(5);

/// Whether the fall from `peak` to `open` is worth giving memory back: at least
/// [`SMALLEST_FALL`] sessions and at least half of the peak.
fn worth_trimming(peak: usize, open: usize) -> bool {
    peak.saturating_sub(open) >= SMALLEST_FALL && open <= peak / 2
}

/// How often the count of open sessions is read. The job samples it rather than awaiting
/// each change: a wake-up per session opened or closed cost 13 % of the connection rate
/// (`connrate`, docs/BENCHMARKS.md), a read per second costs nothing.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Runs until the session count's sender is gone: reads the open sessions every
/// `check_every` ([`CHECK_EVERY`]) and calls `trim` ([`trim`]; `true` when memory was
/// returned) once a fall that [`worth_trimming`] accepts has lasted `settle` ([`SETTLE`]).
pub(crate) async fn release_after_peaks(
    sessions: watch::Receiver<usize>,
    check_every: Duration,
    settle: Duration,
    trim: fn() -> bool,
) {
    let mut ticks = tokio::time::interval(check_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peak = 0;
    let mut fallen_since: Option<tokio::time::Instant> = None;
    loop {
        let now = ticks.tick().await;
        if sessions.has_changed().is_err() {
            return; // the server is gone
        }
        let open = *sessions.borrow();
        peak = peak.max(open);
        if !worth_trimming(peak, open) {
            fallen_since = None;
            continue;
        }
        let since = *fallen_since.get_or_insert(now);
        if now.duration_since(since) < settle {
            continue;
        }
        let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
        tracing::debug!(peak, open, released, "free memory returned to the system");
        peak = open;
        fallen_since = None;
    }
}

/// Allocations of at least this size get pages of their own, returned when freed.
pub(crate) const LARGE_ALLOCATION: usize = 1024 * 1024;

/// Makes glibc give large buffers (an object store's 8 MiB parts and read-ahead chunks)
/// back to the system when they are freed, instead of keeping them in its arenas. By
/// default glibc raises its mmap threshold each time such a buffer is freed, after which
/// they come from the arenas and stay there: an upload into a bucket left the server at
/// 157-173 MiB after the first 1 GiB transfer instead of going back down (docs/BENCHMARKS.md,
/// "P9"). A fixed threshold also turns that adjustment off. Call it once, at start. `true`
/// when the allocator took the setting.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the one FFI call, proven sound below
pub fn return_large_buffers_when_freed() -> bool {
    let threshold = libc::c_int::try_from(LARGE_ALLOCATION).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt(3) takes a parameter number and an int and has no other precondition:
    // it changes the allocator's policy for later allocations under the allocator's own
    // lock (safe beside concurrent malloc/free), and never moves or frees a live allocation.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) == 1 }
}

/// Other allocators decide this themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn return_large_buffers_when_freed() -> bool {
    false
}

/// Asks glibc to return free memory from every arena; `true` when some was returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the one FFI call, proven sound below
pub(crate) fn trim() -> bool {
    // SAFETY: malloc_trim(3) takes a pad size and has no other precondition: it locks each
    // arena in turn (safe beside concurrent malloc/free on other threads), touches only
    // memory the allocator owns and has marked free, and never moves or frees a live
    // allocation, so no Rust reference or pointer is affected.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_large_fall_from_the_peak_is_worth_a_trim() {
        assert!(
            !worth_trimming(100, 0),
            "a small server's sessions are not worth it"
        );
        assert!(worth_trimming(6645, 0));
        assert!(worth_trimming(1000, 500));
        assert!(!worth_trimming(1000, 600), "still above half of the peak");
        assert!(!worth_trimming(300, 100), "a fall of 200 sessions");
    }

    static TRIMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn counted_trim() -> bool {
        TRIMS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        true
    }

    fn trims() -> usize {
        TRIMS.load(std::sync::atomic::Ordering::SeqCst)
    }

    // Paused time: the runtime jumps the clock whenever every task waits, so the seconds
    // below take no time and the order of ticks and changes is exact.
    #[tokio::test(start_paused = true)]
    async fn trims_once_a_fall_has_lasted_the_settle_time_and_stops_with_the_sender() {
        let (sender, receiver) = watch::channel(0usize);
        let second = Duration::from_secs(1);
        let task = tokio::spawn(release_after_peaks(
            receiver,
            second,
            second * 5,
            counted_trim,
        ));
        sender.send_replace(1000);
        tokio::time::sleep(second * 3).await;
        sender.send_replace(0);
        tokio::time::sleep(second * 3).await;
        assert_eq!(trims(), 0, "fallen for 3 s of the 5");
        // Back up before the settle time is over: that fall does not count.
        sender.send_replace(1000);
        tokio::time::sleep(second * 3).await;
        assert_eq!(trims(), 0, "the sessions came back");
        sender.send_replace(0);
        tokio::time::sleep(second * 7).await;
        assert_eq!(trims(), 1, "fallen for 5 s: one trim");
        tokio::time::sleep(second * 20).await;
        assert_eq!(trims(), 1, "the peak is the new count: no second trim");
        drop(sender);
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the job ends with the sender")
            .expect("no panic");
    }
}
