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

/// How far the resident size must stand above its lowest since start for a trim without a
/// fall of sessions: what a large transfer leaves in the arenas (an object store's download
/// path keeps 60-130 MiB of small buffers there, docs/BENCHMARKS.md "P9").
const RESIDENT_GROWTH: u64 = 64 * 1024 * 1024;

/// A trim for resident growth alone comes at most this often: when the memory is in use (many
/// transfers at once), each trim returns little and walks every arena.
const RESIDENT_TRIM_INTERVAL: Duration = Duration::from_secs(60);

/// What the job reads and does: the trim, and the process's resident size in bytes.
#[derive(Clone, Copy)]
pub(crate) struct Probes {
    /// [`trim`] in the server.
    pub(crate) trim: fn() -> bool,
    /// [`resident_bytes`] in the server.
    pub(crate) resident: fn() -> Option<u64>,
}

/// The server's probes.
pub(crate) const PROBES: Probes = Probes {
    trim,
    resident: resident_bytes,
};

/// Runs until the session count's sender is gone: reads the open sessions and the resident
/// size every `check_every` ([`CHECK_EVERY`]) and trims ([`trim`]) once either has lasted
/// `settle` ([`SETTLE`]): a fall of sessions that [`worth_trimming`] accepts, or a resident
/// size [`RESIDENT_GROWTH`] above its lowest (the latter at most every
/// [`RESIDENT_TRIM_INTERVAL`]).
pub(crate) async fn release_after_peaks(
    sessions: watch::Receiver<usize>,
    check_every: Duration,
    settle: Duration,
    probes: Probes,
) {
    let mut ticks = tokio::time::interval(check_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peak = 0;
    let mut lowest_resident = u64::MAX;
    let mut last_resident_trim: Option<tokio::time::Instant> = None;
    let mut fallen_since: Option<tokio::time::Instant> = None;
    let mut grown_since: Option<tokio::time::Instant> = None;
    loop {
        let now = ticks.tick().await;
        if sessions.has_changed().is_err() {
            return; // the server is gone
        }
        let open = *sessions.borrow();
        peak = peak.max(open);
        let fallen = worth_trimming(peak, open);
        let resident = (probes.resident)();
        if let Some(resident) = resident {
            lowest_resident = lowest_resident.min(resident);
        }
        let grown = resident.is_some_and(|resident| {
            resident >= lowest_resident.saturating_add(RESIDENT_GROWTH)
                && last_resident_trim
                    .is_none_or(|last| now.duration_since(last) >= RESIDENT_TRIM_INTERVAL)
        });
        let fallen_for = held_for(&mut fallen_since, fallen, now);
        let grown_for = held_for(&mut grown_since, grown, now);
        if fallen_for < settle && grown_for < settle {
            continue;
        }
        let released = tokio::task::spawn_blocking(probes.trim)
            .await
            .unwrap_or(false);
        tracing::debug!(
            peak,
            open,
            ?resident,
            released,
            "free memory returned to the system"
        );
        if fallen_for >= settle {
            peak = open;
        }
        if grown_for >= settle {
            last_resident_trim = Some(now);
        }
        fallen_since = None;
        grown_since = None;
    }
}

/// How long `condition` has held, `since` remembering when it began (reset when it fails).
fn held_for(
    since: &mut Option<tokio::time::Instant>,
    condition: bool,
    now: tokio::time::Instant,
) -> Duration {
    if !condition {
        *since = None;
        return Duration::ZERO;
    }
    now.duration_since(*since.get_or_insert(now))
}

/// The process's resident set size, from `/proc/self/statm` (Linux).
pub(crate) fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
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
            Probes {
                trim: counted_trim,
                resident: || None,
            },
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

    static RESIDENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static RESIDENT_TRIMS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    fn resident_trim() -> bool {
        RESIDENT_TRIMS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // What a trim does: the resident size falls back.
        RESIDENT.store(20 << 20, std::sync::atomic::Ordering::SeqCst);
        true
    }

    fn set_resident(mib: u64) {
        RESIDENT.store(mib << 20, std::sync::atomic::Ordering::SeqCst);
    }

    fn resident_trims() -> usize {
        RESIDENT_TRIMS.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test(start_paused = true)]
    async fn trims_once_the_resident_size_has_stood_well_above_its_lowest() {
        let (sender, receiver) = watch::channel(1usize);
        let second = Duration::from_secs(1);
        set_resident(15);
        let task = tokio::spawn(release_after_peaks(
            receiver,
            second,
            second * 5,
            Probes {
                trim: resident_trim,
                resident: || Some(RESIDENT.load(std::sync::atomic::Ordering::SeqCst)),
            },
        ));
        tokio::time::sleep(second * 3).await;
        set_resident(60);
        tokio::time::sleep(second * 10).await;
        assert_eq!(resident_trims(), 0, "45 MiB above the lowest: not worth it");
        set_resident(130);
        tokio::time::sleep(second * 3).await;
        assert_eq!(resident_trims(), 0, "grown for 3 s of the 5");
        tokio::time::sleep(second * 4).await;
        assert_eq!(resident_trims(), 1, "grown for 5 s: one trim");
        // Grown again at once (memory in use): no second trim within the minute.
        set_resident(130);
        tokio::time::sleep(second * 30).await;
        assert_eq!(resident_trims(), 1, "at most one a minute");
        tokio::time::sleep(second * 40).await;
        assert_eq!(
            resident_trims(),
            2,
            "a minute later, still grown: the next one"
        );
        drop(sender);
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the job ends with the sender")
            .expect("no panic");
    }
}
