//! The resume state of interrupted uploads: what is kept, how it is found again, and how it
//! expires.
//!
//! An interrupted upload of `name` leaves
//! - its **multipart upload open**, with the complete parts it sent (each `part_size`
//!   bytes: S3 refuses parts under 5 MiB but for the last, so only full parts are ever
//!   sent before the commit), and
//! - a **tail object** `.ferroftp-partial/name`: a fixed-size header naming that upload
//!   and the offset where the tail starts, then the bytes after the last part.
//!
//! Neither shows in listings (open uploads are not objects; the tail's first segment is
//! refused as an FTP name). A server killed mid-upload writes no tail: its open upload is
//! found by ListMultipartUploads and its complete parts are the resumable content.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ferroftp_backend::StorageError;

use crate::Inner;
use crate::error::from_opendal;
use crate::keys;
use crate::multipart::{OpenUpload, Part};

/// Bytes of the tail object's header: text, padded with spaces, ending with a newline.
pub(crate) const TAIL_HEADER_LEN: usize = 512;
const TAIL_MAGIC: &str = "ferroftp-partial 1";

/// The tail header: which open upload the tail continues, and after how many bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TailHeader {
    /// `None`: there was no multipart upload, the tail holds everything.
    pub(crate) upload_id: Option<String>,
    /// Bytes in the upload's parts before the tail.
    pub(crate) offset: u64,
}

impl TailHeader {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let id = self.upload_id.as_deref().unwrap_or("-");
        let mut header = format!("{TAIL_MAGIC} upload={id} offset={}", self.offset).into_bytes();
        header.resize(TAIL_HEADER_LEN - 1, b' ');
        header.push(b'\n');
        header
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut words = text.trim_end().strip_prefix(TAIL_MAGIC)?.split_whitespace();
        let id = words.next()?.strip_prefix("upload=")?;
        let offset = words.next()?.strip_prefix("offset=")?.parse().ok()?;
        Some(Self {
            upload_id: (id != "-").then(|| id.to_owned()),
            offset,
        })
    }
}

/// What an interrupted upload of one name left.
#[derive(Debug)]
pub(crate) struct PartialState {
    /// The open multipart upload to continue, if any.
    pub(crate) upload_id: Option<String>,
    /// Its usable parts, numbered 1, 2, ... without a gap.
    pub(crate) parts: Vec<Part>,
    /// Bytes in the tail object after its header (0 when there is none).
    pub(crate) tail_len: u64,
    /// Other open uploads of the same name (older attempts): aborted when a new upload
    /// starts.
    pub(crate) stale_uploads: Vec<String>,
}

impl PartialState {
    /// The resumable length.
    pub(crate) fn len(&self) -> u64 {
        self.parts_len() + self.tail_len
    }

    pub(crate) fn parts_len(&self) -> u64 {
        self.parts.iter().map(|part| part.size).sum()
    }

    /// The resume state of `object_path`, or `None` when there is nothing to resume (or the
    /// store has no multipart support here).
    pub(crate) async fn find(
        inner: &Inner,
        object_path: &str,
    ) -> Result<Option<Self>, StorageError> {
        let Some(multipart) = &inner.multipart else {
            return Ok(None);
        };
        let key = inner.keys.full(object_path);
        let uploads = multipart.uploads_of(&key).await?;
        let tail = read_tail_header(inner, object_path).await?;
        let ids = |uploads: &[OpenUpload]| -> Vec<String> {
            uploads
                .iter()
                .map(|upload| upload.upload_id.clone())
                .collect()
        };
        let (chosen, tail) = match tail {
            Some((header, tail_len)) => match &header.upload_id {
                None => (None, Some((header, tail_len))),
                Some(id) if uploads.iter().any(|upload| &upload.upload_id == id) => {
                    (Some(id.clone()), Some((header, tail_len)))
                }
                // The tail continues an upload that is gone (aborted, expired): it cannot
                // be resumed. The newest open upload, if any, stands on its own.
                Some(_) => (uploads.last().map(|upload| upload.upload_id.clone()), None),
            },
            None => (uploads.last().map(|upload| upload.upload_id.clone()), None),
        };
        if chosen.is_none() && tail.is_none() {
            return Ok(None);
        }
        let stale_uploads = ids(&uploads)
            .into_iter()
            .filter(|id| Some(id) != chosen.as_ref())
            .collect();
        let mut parts = match &chosen {
            Some(id) => consecutive(multipart.list_parts(&key, id).await?),
            None => Vec::new(),
        };
        let tail_len = match tail {
            Some((header, tail_len)) => {
                // Only the parts before the tail count: a last, short part sent by a commit
                // that then failed is past the offset, and the tail holds its bytes.
                let mut kept = 0;
                parts.retain(|part| {
                    let keep = kept + part.size <= header.offset;
                    if keep {
                        kept += part.size;
                    }
                    keep
                });
                if kept == header.offset {
                    tail_len
                } else {
                    tracing::warn!(
                        object = object_path,
                        expected = header.offset,
                        found = kept,
                        "the parts of an interrupted upload do not reach its tail; \
                         resuming from its parts only"
                    );
                    0
                }
            }
            None => 0,
        };
        Ok(Some(Self {
            upload_id: chosen,
            parts,
            tail_len,
            stale_uploads,
        }))
    }
}

/// The parts numbered 1, 2, ... up to the first gap (a part still in flight when a server
/// was killed), each but possibly the last a full part.
fn consecutive(parts: Vec<Part>) -> Vec<Part> {
    let mut kept = Vec::with_capacity(parts.len());
    for (expected, part) in (1..).zip(parts) {
        if part.number != expected {
            break;
        }
        kept.push(part);
    }
    kept
}

/// The tail header of `object_path` and the length of its bytes, if it has a tail.
async fn read_tail_header(
    inner: &Inner,
    object_path: &str,
) -> Result<Option<(TailHeader, u64)>, StorageError> {
    let tail = keys::tail_path(object_path);
    let metadata = match inner.operator.stat(&tail).await {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == opendal::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(from_opendal(error, &format!("stat {tail}"))),
    };
    let length = metadata.content_length();
    if length < TAIL_HEADER_LEN as u64 {
        tracing::warn!(
            tail,
            length,
            "a tail object shorter than its header: ignored"
        );
        return Ok(None);
    }
    let header = inner
        .operator
        .read_with(&tail)
        .range(0..TAIL_HEADER_LEN as u64)
        .await
        .map_err(|error| from_opendal(error, &format!("reading {tail}")))?
        .to_bytes();
    match TailHeader::decode(&header) {
        Some(decoded) => Ok(Some((decoded, length - TAIL_HEADER_LEN as u64))),
        None => {
            tracing::warn!(tail, "a tail object with an unreadable header: ignored");
            Ok(None)
        }
    }
}

/// The first `length` bytes of `object_path`'s tail.
pub(crate) async fn read_tail(
    inner: &Inner,
    object_path: &str,
    length: u64,
) -> Result<Bytes, StorageError> {
    if length == 0 {
        return Ok(Bytes::new());
    }
    let tail = keys::tail_path(object_path);
    let start = TAIL_HEADER_LEN as u64;
    inner
        .operator
        .read_with(&tail)
        .range(start..start + length)
        .await
        .map(|buffer| buffer.to_bytes())
        .map_err(|error| from_opendal(error, &format!("reading {tail}")))
}

/// Writes `object_path`'s tail: `header` then `bytes`, in one PutObject.
pub(crate) async fn write_tail(
    inner: &Inner,
    object_path: &str,
    header: &TailHeader,
    bytes: &[u8],
) -> Result<(), StorageError> {
    let tail = keys::tail_path(object_path);
    let mut content = header.encode();
    content.extend_from_slice(bytes);
    inner
        .operator
        .write(&tail, content)
        .await
        .map(drop)
        .map_err(|error| from_opendal(error, &format!("writing {tail}")))
}

/// Drops every resume state below the directory prefix `dir_prefix` (RMD), but that of
/// uploads running now.
pub(crate) async fn discard_below(inner: &Inner, dir_prefix: &str) -> Result<(), StorageError> {
    let Some(multipart) = &inner.multipart else {
        return Ok(());
    };
    for open in multipart
        .list_uploads(&inner.keys.full(dir_prefix), usize::MAX)
        .await?
    {
        let running = inner
            .keys
            .relative(&open.key)
            .is_some_and(|object_path| inner.is_uploading(object_path));
        if !running {
            multipart.abort(&open.key, &open.upload_id).await?;
        }
    }
    let tails = keys::tail_path(dir_prefix);
    inner
        .operator
        .delete_with(&tails)
        .recursive(true)
        .await
        .map_err(|error| from_opendal(error, &format!("removing {tails}")))
}

/// Expires resume state older than `storage.partial_expiry`: open multipart uploads by the
/// time they were started, tails by the time they were written. Uploads running in this
/// process are left alone; another node's upload running for longer than the expiry would
/// not be (keep the expiry well above the longest upload).
pub struct PartialSweeper {
    inner: Arc<Inner>,
    max_age: Duration,
}

/// What one pass of the [`PartialSweeper`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Open multipart uploads aborted.
    pub uploads_aborted: usize,
    /// Tail objects removed.
    pub tails_removed: usize,
}

/// Open uploads and tails one pass looks at, at most.
const PASS_BUDGET: usize = 10_000;

impl PartialSweeper {
    pub(crate) fn new(inner: Arc<Inner>, max_age: Duration) -> Self {
        Self { inner, max_age }
    }

    /// The configured expiry.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// One pass, as of `now`.
    pub async fn pass(&self, now: SystemTime) -> Result<SweepReport, StorageError> {
        let mut report = SweepReport::default();
        let Some(multipart) = &self.inner.multipart else {
            return Ok(report);
        };
        let expired = |time: Option<SystemTime>| {
            time.is_some_and(|time| now.duration_since(time).unwrap_or_default() > self.max_age)
        };
        let prefix = self.inner.keys.prefix();
        for open in multipart.list_uploads(prefix, PASS_BUDGET).await? {
            let Some(object_path) = self.inner.keys.relative(&open.key) else {
                continue;
            };
            if expired(open.initiated) && !self.inner.is_uploading(object_path) {
                multipart.abort(&open.key, &open.upload_id).await?;
                tracing::info!(object = object_path, "expired an abandoned upload's parts");
                report.uploads_aborted += 1;
            }
        }
        let hidden = format!("{}/", keys::HIDDEN_SEGMENT);
        let tails = self
            .inner
            .first_entries(&hidden, true, PASS_BUDGET)
            .await
            .map_err(|error| from_opendal(error, "listing the resume state"))?;
        for tail in tails {
            let Some(object_path) = tail.path().strip_prefix(&hidden) else {
                continue;
            };
            let written = tail.metadata().last_modified().map(SystemTime::from);
            if tail.metadata().is_file()
                && expired(written)
                && !self.inner.is_uploading(object_path)
            {
                self.inner
                    .operator
                    .delete(tail.path())
                    .await
                    .map_err(|error| from_opendal(error, "removing an expired tail"))?;
                report.tails_removed += 1;
            }
        }
        Ok(report)
    }

    /// Passes forever: one now, then one every quarter of the expiry (between 1 s and an
    /// hour). A failed pass is logged and the next one tries again.
    pub async fn run(self) {
        let interval = (self.max_age / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
        loop {
            match self.pass(SystemTime::now()).await {
                Ok(report) if report != SweepReport::default() => {
                    tracing::info!(?report, "partial-upload expiry pass");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "partial-upload expiry pass failed"),
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// A tail's header never runs into its bytes, whatever the upload id.
const _: () = assert!(TAIL_HEADER_LEN > TAIL_MAGIC.len() + 64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_headers_round_trip() {
        for header in [
            TailHeader {
                upload_id: None,
                offset: 0,
            },
            TailHeader {
                upload_id: Some("2~abcDEF-_.xyz".to_owned()),
                offset: 16_777_216,
            },
        ] {
            let encoded = header.encode();
            assert_eq!(encoded.len(), TAIL_HEADER_LEN);
            assert_eq!(TailHeader::decode(&encoded), Some(header));
        }
        assert_eq!(TailHeader::decode(b"something else"), None);
    }

    #[test]
    fn parts_stop_at_the_first_gap() {
        let part = |number| Part {
            number,
            etag: String::new(),
            size: 1,
        };
        let kept = consecutive(vec![part(1), part(2), part(4)]);
        assert_eq!(kept.len(), 2);
        assert!(consecutive(vec![part(2)]).is_empty());
    }
}
