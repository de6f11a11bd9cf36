//! The files the measurements read, created through FTP itself when missing, and the upload
//! directory, emptied afterwards: the benchmark needs only write access, not the server's
//! file system.
//!
//! ```text
//! bench_fixtures/big.bin            --big-mib of pseudo-random bytes
//! bench_fixtures/small/f00000 ...   --small-count files of --small-size pseudo-random bytes
//! bench_fixtures/list10000/f00000   --list-entries empty files
//! bench_upload/                     STOR targets, deleted after each run
//!   stor_1.bin, put_1/, put_sessions_1_0/ ...   (stor_pasv, small_put, small_put_8)
//! ```
//!
//! What this run creates is recorded ([`super::cleanup`]) and removed at the end.

use std::collections::HashSet;

use ferroftp_client::ReplyCode;

use super::cleanup::{CleanupRecord, record};
use super::session::{DataChannel, Endpoint, Failure, Session};

/// Where the benchmark's files live on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The directory under which `bench_fixtures` and `bench_upload` are made, with a
    /// trailing `/`; empty for the login directory.
    base: String,
}

impl Layout {
    /// Under `base` (the URL's path), or the login directory when `None`.
    pub(crate) fn new(base: Option<&str>) -> Self {
        let base = match base.map(|base| base.trim_end_matches('/')) {
            None | Some("") => String::new(),
            Some(base) => format!("{base}/"),
        };
        Self { base }
    }

    /// `bench_fixtures`.
    pub(crate) fn fixtures(&self) -> String {
        format!("{}bench_fixtures", self.base)
    }

    /// The large file.
    pub(crate) fn big(&self) -> String {
        format!("{}/big.bin", self.fixtures())
    }

    /// The directory of small files.
    pub(crate) fn small_dir(&self) -> String {
        format!("{}/small", self.fixtures())
    }

    /// Small file `index`.
    pub(crate) fn small(&self, index: u32) -> String {
        format!("{}/{}", self.small_dir(), entry_name(index))
    }

    /// The directory listed by the listing tests.
    pub(crate) fn list_dir(&self, entries: u32) -> String {
        format!("{}/list{entries}", self.fixtures())
    }

    /// `bench_upload`.
    pub(crate) fn upload_dir(&self) -> String {
        format!("{}bench_upload", self.base)
    }

    /// The large upload of run `run`.
    pub(crate) fn stor_file(&self, run: u32) -> String {
        format!("{}/stor_{run}.bin", self.upload_dir())
    }

    /// The directory of run `run`'s small uploads.
    pub(crate) fn put_dir(&self, run: u32) -> String {
        format!("{}/put_{run}", self.upload_dir())
    }

    /// The directory of session `session`'s small uploads in run `run` of small_put_8. Its
    /// name starts with `put_` like small_put's, so the final cleanup finds it in a
    /// `bench_upload` that existed before the run.
    pub(crate) fn session_put_dir(&self, run: u32, session: u32) -> String {
        format!("{}/put_sessions_{run}_{session}", self.upload_dir())
    }
}

/// The name of entry `index` in a fixture directory: `f00000`, `f00001`, …
pub(crate) fn entry_name(index: u32) -> String {
    format!("f{index:05}")
}

/// A fast deterministic byte stream (SplitMix64), so fixtures are incompressible without
/// reading a random source: the same seed gives the same bytes.
#[derive(Debug, Clone)]
pub(crate) struct PseudoRandom {
    state: u64,
}

impl PseudoRandom {
    /// A stream started from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_word(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut word = self.state;
        word = (word ^ (word >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        word = (word ^ (word >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        word ^ (word >> 31)
    }

    /// Fills `buffer` with the next bytes of the stream.
    pub(crate) fn fill(&mut self, buffer: &mut [u8]) {
        let mut chunks = buffer.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_word().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let word = self.next_word().to_le_bytes();
            rest.copy_from_slice(&word[..rest.len()]);
        }
    }
}

/// Which fixtures the selected tests need, and their sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixtureNeeds {
    /// Size of `big.bin`, when a download test of it runs.
    pub big_bytes: Option<u64>,
    /// Count and size of the small files, when small_get or the burst runs.
    pub small: Option<(u32, u64)>,
    /// Entries of the listing directory, when a listing test runs.
    pub list_entries: Option<u32>,
    /// Whether an upload test runs (bench_upload is made).
    pub uploads: bool,
}

/// What [`prepare`] had to upload.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Prepared {
    /// Whether big.bin was (re)written.
    pub big_written: bool,
    /// Small files (re)written.
    pub small_written: u32,
    /// Listing entries created.
    pub list_written: u32,
}

/// Creates whatever fixture is missing or has the wrong size, over one session, and checks
/// the result with SIZE and NLST. `progress` gets one line per step that uploads; the
/// directories it creates go into `created`.
pub(crate) async fn prepare(
    endpoint: &Endpoint,
    layout: &Layout,
    needs: FixtureNeeds,
    channel: DataChannel,
    buffer: &mut [u8],
    created: &CleanupRecord,
    progress: &mut dyn FnMut(String),
) -> Result<Prepared, Failure> {
    let (mut session, _greeting) = Session::open(endpoint).await?;
    session.expect("TYPE I", ReplyCode::OK).await?;
    let mut prepared = Prepared::default();
    let any_fixture =
        needs.big_bytes.is_some() || needs.small.is_some() || needs.list_entries.is_some();
    if any_fixture && make_dir(&mut session, &layout.fixtures()).await? {
        record(created, |cleanup| cleanup.created_fixtures = true);
    }
    if let Some(bytes) = needs.big_bytes
        && session.size(&layout.big()).await? != Some(bytes)
    {
        progress(format!(
            "fixtures: uploading {} ({bytes} bytes)",
            layout.big()
        ));
        let mut stream = PseudoRandom::new(0xB16);
        session
            .upload(&layout.big(), channel, bytes, buffer, |chunk| {
                stream.fill(chunk)
            })
            .await?;
        check_size(&mut session, &layout.big(), bytes).await?;
        prepared.big_written = true;
    }
    if let Some((count, size)) = needs.small {
        make_dir(&mut session, &layout.small_dir()).await?;
        let chunk_len = usize::try_from(size).map_or(buffer.len(), |size| size.min(buffer.len()));
        let chunk = &mut buffer[..chunk_len];
        for index in 0..count {
            let path = layout.small(index);
            if session.size(&path).await? == Some(size) {
                continue;
            }
            if prepared.small_written == 0 {
                progress(format!(
                    "fixtures: uploading small files to {} (up to {count})",
                    layout.small_dir()
                ));
            }
            let mut stream = PseudoRandom::new(u64::from(index));
            session
                .upload(&path, channel, size, chunk, |chunk| stream.fill(chunk))
                .await?;
            check_size(&mut session, &path, size).await?;
            prepared.small_written += 1;
        }
    }
    if let Some(entries) = needs.list_entries {
        let dir = layout.list_dir(entries);
        make_dir(&mut session, &dir).await?;
        let present = names_in(&mut session, &dir, channel, buffer).await?;
        let missing: Vec<u32> = (0..entries)
            .filter(|&index| !present.contains(&entry_name(index)))
            .collect();
        if !missing.is_empty() {
            progress(format!(
                "fixtures: creating {} empty files in {dir}",
                missing.len()
            ));
        }
        for index in missing {
            let path = format!("{dir}/{}", entry_name(index));
            session.upload(&path, channel, 0, buffer, |_| {}).await?;
            prepared.list_written += 1;
        }
        let present = names_in(&mut session, &dir, channel, buffer).await?;
        let complete = (0..entries).all(|index| present.contains(&entry_name(index)));
        if !complete {
            return Err(Failure::new(format!("fixtures:{dir}:incomplete")));
        }
    }
    if needs.uploads && make_dir(&mut session, &layout.upload_dir()).await? {
        record(created, |cleanup| cleanup.created_uploads = true);
    }
    // A failed QUIT does not make the fixtures wrong.
    let _ = session.quit().await;
    Ok(prepared)
}

/// MKD `dir`: `true` when it was created, `false` when it existed. Anything else is an
/// error that quotes the server, since every later step depends on the directory: a
/// missing parent or a read-only account shows here, not as `STOR:550` later.
async fn make_dir(session: &mut Session, dir: &str) -> Result<bool, Failure> {
    let reply = session.command(&format!("MKD {dir}")).await?;
    if reply.code == ReplyCode::PATH_CREATED {
        return Ok(true);
    }
    if is_directory(session, dir).await? {
        return Ok(false);
    }
    Err(Failure::new(format!(
        "MKD {dir}: {} {}",
        reply.code,
        reply.text()
    )))
}

/// Whether `dir` is a directory: CWD into it and back (PWD names the way back).
async fn is_directory(session: &mut Session, dir: &str) -> Result<bool, Failure> {
    let pwd = session.expect("PWD", ReplyCode::PATH_CREATED).await?;
    let text = pwd.text();
    // RFC 959 appendix II: 257 "<path>" with embedded quotes doubled.
    let Some(here) = text
        .strip_prefix('"')
        .and_then(|rest| rest.rfind('"').map(|end| rest[..end].replace("\"\"", "\"")))
    else {
        return Err(Failure::new("PWD:unparsable"));
    };
    if !session
        .command(&format!("CWD {dir}"))
        .await?
        .code
        .is_positive_completion()
    {
        return Ok(false);
    }
    session
        .expect(&format!("CWD {here}"), ReplyCode::FILE_ACTION_OK)
        .await?;
    Ok(true)
}

/// Requires SIZE `path` to be `bytes`.
pub(crate) async fn check_size(
    session: &mut Session,
    path: &str,
    bytes: u64,
) -> Result<(), Failure> {
    match session.size(path).await? {
        Some(size) if size == bytes => Ok(()),
        Some(_) => Err(Failure::new("SIZE:wrong-size")),
        None => Err(Failure::new("SIZE:missing")),
    }
}

/// The entry names in `dir` (NLST; a server may answer with paths, so only the last part
/// counts). A refused NLST (some servers refuse an empty directory) is no names.
pub(crate) async fn names_in(
    session: &mut Session,
    dir: &str,
    channel: DataChannel,
    buffer: &mut [u8],
) -> Result<HashSet<String>, Failure> {
    let mut listing = Vec::new();
    let result = session
        .download_with(&format!("NLST {dir}"), channel, buffer, |chunk| {
            listing.extend_from_slice(chunk)
        })
        .await;
    match result {
        Ok(_) => Ok(parse_names(&listing)),
        Err(failure) if failure.0.starts_with("NLST:5") => Ok(HashSet::new()),
        Err(failure) => Err(failure),
    }
}

/// The last path component of each line of an NLST listing, without `.` and `..` (which
/// pure-ftpd lists: `bench_upload/d/.`).
pub(crate) fn parse_names(listing: &[u8]) -> HashSet<String> {
    String::from_utf8_lossy(listing)
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .map(|line| line.rsplit('/').next().unwrap_or(line))
        .filter(|name| !matches!(*name, "" | "." | ".."))
        .map(str::to_owned)
        .collect()
}

/// Deletes every entry of `dir` (as NLST names them) and then `dir`. Returns the entries
/// deleted; a missing directory is nothing to do.
pub(crate) async fn remove_dir(
    session: &mut Session,
    dir: &str,
    channel: DataChannel,
    buffer: &mut [u8],
) -> Result<u32, Failure> {
    let names = names_in(session, dir, channel, buffer).await?;
    let mut deleted = 0;
    for name in &names {
        session
            .expect(&format!("DELE {dir}/{name}"), ReplyCode::FILE_ACTION_OK)
            .await?;
        deleted += 1;
    }
    let reply = session.command(&format!("RMD {dir}")).await?;
    if reply.code.is_positive_completion() || names.is_empty() {
        Ok(deleted)
    } else {
        Err(Failure::new(format!("RMD:{}", reply.code)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_under_the_login_directory_and_under_a_path() {
        let here = Layout::new(None);
        assert_eq!(here.big(), "bench_fixtures/big.bin");
        assert_eq!(here.small(7), "bench_fixtures/small/f00007");
        assert_eq!(here.list_dir(10_000), "bench_fixtures/list10000");
        assert_eq!(here.stor_file(2), "bench_upload/stor_2.bin");
        assert_eq!(here.put_dir(0), "bench_upload/put_0");
        assert_eq!(here.session_put_dir(2, 7), "bench_upload/put_sessions_2_7");
        assert_eq!(Layout::new(Some("/")), here);
        let there = Layout::new(Some("/pub/bench/"));
        assert_eq!(there.big(), "/pub/bench/bench_fixtures/big.bin");
        assert_eq!(there.upload_dir(), "/pub/bench/bench_upload");
    }

    #[test]
    fn pseudo_random_stream_is_deterministic_in_whole_word_chunks() {
        let mut whole = vec![0u8; 1000];
        PseudoRandom::new(1).fill(&mut whole);
        let mut again = PseudoRandom::new(1);
        let mut pieces = vec![0u8; 1000];
        for chunk in pieces.chunks_mut(200) {
            again.fill(chunk);
        }
        assert_eq!(whole, pieces);
        let mut other = vec![0u8; 1000];
        PseudoRandom::new(2).fill(&mut other);
        assert_ne!(whole, other);
        // Not constant, not trivially compressible: most byte values appear.
        let distinct: HashSet<u8> = whole.iter().copied().collect();
        assert!(distinct.len() > 200, "{}", distinct.len());
    }

    #[test]
    fn nlst_names_are_last_components() {
        let names = parse_names(
            b"f00000\r\nbench_fixtures/list3/f00001\r\n\r\nf00002\nd/.\r\nd/..\r\n.\r\n",
        );
        let expected: HashSet<String> = ["f00000", "f00001", "f00002"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(names, expected);
    }
}
