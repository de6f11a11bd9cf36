//! Leaving the server as the benchmark found it: the directories it created
//! (`bench_fixtures`, `bench_upload`) are recorded as they are made, and removed with what
//! is in them at the end — after a failed run, a failed preparation or an interruption too.
//! A `bench_fixtures` that existed before the run is the user's (an earlier
//! `--keep-fixtures`): it is used and kept.

use std::sync::{Arc, Mutex};

use ferroftp_client::ReplyCode;

use super::fixtures::{Layout, names_in};
use super::session::{DataChannel, Endpoint, Failure, Session};

/// How deep [`remove_tree`] goes: `bench_fixtures/small/f00000` is two levels below.
const MAX_DEPTH: u32 = 3;

/// What this run made on the server, and how to reach it.
#[derive(Debug, Clone)]
pub(crate) struct Cleanup {
    /// The server and account.
    pub endpoint: Arc<Endpoint>,
    /// Where the benchmark's directories are.
    pub layout: Layout,
    /// How NLST connects.
    pub channel: DataChannel,
    /// Keep `bench_fixtures` for a following run (`--keep-fixtures`).
    pub keep_fixtures: bool,
    /// `bench_fixtures` was created by this run.
    pub created_fixtures: bool,
    /// `bench_upload` was created by this run.
    pub created_uploads: bool,
}

/// The record shared between the run and the interruption handler: set once the server is
/// known, updated as directories are made. Never locked across an await.
pub(crate) type CleanupRecord = Arc<Mutex<Option<Cleanup>>>;

/// Updates the record, if set.
pub(crate) fn record(cleanup: &CleanupRecord, update: impl FnOnce(&mut Cleanup)) {
    if let Some(cleanup) = cleanup
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .as_mut()
    {
        update(cleanup);
    }
}

/// A copy of the record.
pub(crate) fn snapshot(cleanup: &CleanupRecord) -> Option<Cleanup> {
    cleanup
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// Removes what the run created; `progress` gets one line per directory. A directory that
/// existed before the run loses only the run's own entries (`stor_*`, `put_*` in
/// `bench_upload`) or nothing (`bench_fixtures`).
pub(crate) async fn remove_created(
    cleanup: &Cleanup,
    buffer: &mut [u8],
    progress: &mut dyn FnMut(String),
) -> Result<(), Failure> {
    let (mut session, _greeting) = Session::open(&cleanup.endpoint).await?;
    let channel = cleanup.channel;
    let uploads = cleanup.layout.upload_dir();
    if cleanup.created_uploads {
        let removed = remove_tree(&mut session, &uploads, channel, buffer, MAX_DEPTH).await?;
        progress(format!("removed {uploads} ({removed} entries)"));
    } else {
        // Only what runs put there; a missing directory lists as empty.
        let names = names_in(&mut session, &uploads, channel, buffer).await?;
        for name in names
            .iter()
            .filter(|name| name.starts_with("stor_") || name.starts_with("put_"))
        {
            let path = format!("{uploads}/{name}");
            remove_tree(&mut session, &path, channel, buffer, MAX_DEPTH).await?;
        }
    }
    let fixtures = cleanup.layout.fixtures();
    match (cleanup.created_fixtures, cleanup.keep_fixtures) {
        (true, false) => {
            let removed = remove_tree(&mut session, &fixtures, channel, buffer, MAX_DEPTH).await?;
            progress(format!("removed {fixtures} ({removed} entries)"));
        }
        (true, true) => progress(format!(
            "kept {fixtures} for the next run (--keep-fixtures)"
        )),
        (false, _) => {}
    }
    let _ = session.quit().await;
    Ok(())
}

/// Deletes `path`: a file with DELE, else a directory with its entries (as NLST names them,
/// `depth` levels down) and RMD. Returns the entries removed below `path`; a missing path
/// is nothing to do.
pub(crate) async fn remove_tree(
    session: &mut Session,
    path: &str,
    channel: DataChannel,
    buffer: &mut [u8],
    depth: u32,
) -> Result<u32, Failure> {
    if session
        .command(&format!("DELE {path}"))
        .await?
        .code
        .is_positive_completion()
    {
        return Ok(0);
    }
    let mut removed = 0;
    for name in names_in(session, path, channel, buffer).await? {
        let entry = format!("{path}/{name}");
        let deleted = session.command(&format!("DELE {entry}")).await?;
        if !deleted.code.is_positive_completion() {
            if depth == 0 {
                return Err(Failure::new(format!("DELE:{}", deleted.code)));
            }
            removed += Box::pin(remove_tree(session, &entry, channel, buffer, depth - 1)).await?;
        }
        removed += 1;
    }
    let reply = session.command(&format!("RMD {path}")).await?;
    if reply.code.is_positive_completion() || (removed == 0 && reply.code == ReplyCode(550)) {
        Ok(removed)
    } else {
        Err(Failure::new(format!("RMD:{}", reply.code)))
    }
}
