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

/// Runs until the session count's sender is gone: watches the open sessions and trims after
/// each fall that [`worth_trimming`] accepts, once the count has held for `settle`
/// ([`SETTLE`]).
pub(crate) async fn release_after_peaks(mut sessions: watch::Receiver<usize>, settle: Duration) {
    let mut peak = *sessions.borrow_and_update();
    loop {
        if sessions.changed().await.is_err() {
            return;
        }
        let open = *sessions.borrow_and_update();
        peak = peak.max(open);
        if !worth_trimming(peak, open) {
            continue;
        }
        // Wait until the count holds still (or only falls further) for `settle`.
        match tokio::time::timeout(settle, rises(&mut sessions, open)).await {
            Ok(Some(())) => continue, // sessions came back: the peak stands
            Ok(None) => return,
            Err(_elapsed) => {}
        }
        let open = *sessions.borrow_and_update();
        let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
        tracing::debug!(peak, open, released, "free memory returned to the system");
        peak = open;
    }
}

/// Completes when the count rises above `open` (`Some`), or the sender is gone (`None`).
async fn rises(sessions: &mut watch::Receiver<usize>, open: usize) -> Option<()> {
    loop {
        sessions.changed().await.ok()?;
        if *sessions.borrow_and_update() > open {
            return Some(());
        }
    }
}

/// Asks glibc to return free memory from every arena; `true` when some was returned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the one FFI call, proven sound below
fn trim() -> bool {
    // SAFETY: malloc_trim(3) takes a pad size and has no other precondition: it locks each
    // arena in turn (safe beside concurrent malloc/free on other threads), touches only
    // memory the allocator owns and has marked free, and never moves or frees a live
    // allocation, so no Rust reference or pointer is affected.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
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

    #[tokio::test]
    async fn trims_after_the_count_settles_and_stops_with_the_sender() {
        let (sender, receiver) = watch::channel(0usize);
        let settle = Duration::from_millis(20);
        let task = tokio::spawn(release_after_peaks(receiver, settle));
        sender.send_replace(1000);
        tokio::task::yield_now().await;
        sender.send_replace(0);
        tokio::time::sleep(settle * 5).await;
        // A rise during the settle time cancels that trim; the job keeps watching.
        sender.send_replace(1000);
        sender.send_replace(0);
        sender.send_replace(10);
        drop(sender);
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the job ends with the sender")
            .expect("no panic");
    }
}
