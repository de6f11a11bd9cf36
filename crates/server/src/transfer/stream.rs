//! The generic byte paths, for any storage and any data connection (plain or TLS): a
//! download's body or a listing copied to the data connection, an upload's bytes copied into
//! the storage's writer, with TYPE A conversion, bandwidth buckets, the quota's room and the
//! idle timeout.

use std::io;
use std::time::{Duration, SystemTime};

use ferroftp_backend::{Upload, io_error_kind};
use ferroftp_proto::StorageErrorKind;
use ferroftp_proto::ascii::{FromNetwork, ToNetwork};
use ferroftp_proto::listing::{self, ListFormat, MlstFacts};
use ferroftp_proto::session::TransferFailure;
use futures_util::FutureExt as _;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;

use super::Progress;
use super::local::Leftovers;
use super::work::{ListSource, Moved, Work, storage_failure};
use crate::throttle::Throttle;

/// Bytes moved per read; one buffer per running transfer.
pub(super) const TRANSFER_BUFFER: usize = 256 * 1024;
/// A transfer's buffer until a read or write fills it: most files of a many-small-files
/// transfer fit, and an idle moment never holds a 256 KiB allocation.
pub(super) const FIRST_TRANSFER_BUFFER: usize = 16 * 1024;
/// Listing output is flushed in chunks of about this size.
const LISTING_FLUSH: usize = 64 * 1024;

pub(super) async fn move_bytes<S>(
    mut data: S,
    work: Work,
    ascii: bool,
    idle_timeout: Duration,
    progress: &Progress,
    limits: &Limits,
) -> Result<Moved, TransferFailure>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match work {
        Work::Retrieve { body, .. } => {
            let mut body = body.into_stream().map_err(storage_io_failure)?;
            let bytes = send_file(
                &mut body,
                &mut data,
                ascii,
                idle_timeout,
                progress,
                &limits.throttle,
            )
            .await?;
            finish_sending(&mut data).await?;
            Ok(Moved::Sent {
                bytes,
                leftovers: Leftovers::default(),
            })
        }
        Work::Store { mut upload, .. } => {
            let bytes = receive_file(
                &mut data,
                &mut upload,
                ascii,
                idle_timeout,
                progress,
                limits,
            )
            .await?;
            // Answer the client's end of file with ours: over TLS a close_notify, which
            // clients that close TLS cleanly (Python's unwrap) wait for. All data is in, so
            // a failure here changes nothing.
            let _ = timeout(idle_timeout, data.shutdown()).await;
            Ok(Moved::Received { upload, bytes })
        }
        Work::List {
            entries,
            format,
            facts,
            writable,
        } => {
            let bytes = send_listing(entries, format, facts, writable, &mut data, progress).await?;
            finish_sending(&mut data).await?;
            Ok(Moved::Sent {
                bytes,
                leftovers: Leftovers::default(),
            })
        }
    }
}

/// A storage stream's I/O error (a download's body, an upload's writer), by the one mapping
/// that storage operations use too: a full disk is 552 here as it is for `open`.
pub(super) fn storage_io_failure(error: io::Error) -> TransferFailure {
    TransferFailure::Storage(io_error_kind(&error))
}

pub(super) fn lost(error: io::Error) -> TransferFailure {
    TransferFailure::ConnectionLost(error.to_string())
}

pub(super) async fn with_idle_timeout<T>(
    idle_timeout: Duration,
    operation: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    timeout(idle_timeout, operation).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "data connection idle",
        ))
    })
}

async fn send_file(
    body: &mut (dyn AsyncRead + Send + Unpin),
    data: &mut (impl AsyncWrite + Unpin),
    ascii: bool,
    idle_timeout: Duration,
    progress: &Progress,
    throttle: &Throttle,
) -> Result<u64, TransferFailure> {
    let mut buffer = vec![0u8; FIRST_TRANSFER_BUFFER];
    let mut converted = Vec::new();
    let mut converter = ToNetwork::default();
    let mut sent = 0u64;
    let chunk_limit = throttle.chunk_limit();
    loop {
        let want = buffer.len().min(chunk_limit);
        let read = body
            .read(&mut buffer[..want])
            .await
            .map_err(storage_io_failure)?;
        if read == 0 {
            return Ok(sent);
        }
        grow_when_filled(&mut buffer, read);
        // The bytes wait for their turn in the buckets before they leave.
        throttle.pass(read).await;
        let chunk = if ascii {
            converted.clear();
            converter.convert(&buffer[..read], &mut converted);
            &converted[..]
        } else {
            &buffer[..read]
        };
        with_idle_timeout(idle_timeout, data.write_all(chunk))
            .await
            .map_err(lost)?;
        sent += chunk.len() as u64;
        progress.add(chunk.len());
    }
}

async fn receive_file(
    data: &mut (impl AsyncRead + Unpin),
    upload: &mut Box<dyn Upload>,
    ascii: bool,
    idle_timeout: Duration,
    progress: &Progress,
    limits: &Limits,
) -> Result<u64, TransferFailure> {
    let mut buffer = vec![0u8; FIRST_TRANSFER_BUFFER];
    let mut converted = Vec::new();
    let mut converter = FromNetwork::default();
    let mut received = 0u64;
    let chunk_limit = limits.throttle.chunk_limit();
    loop {
        let want = buffer.len().min(chunk_limit);
        let read = match data.read(&mut buffer[..want]).now_or_never() {
            Some(read) => read.map_err(lost)?,
            None => {
                // The client has nothing more for us yet: the upload may write what it holds
                // meanwhile, so a pausing or dying client's bytes reach the partial file.
                upload.write_soon();
                with_idle_timeout(idle_timeout, data.read(&mut buffer[..want]))
                    .await
                    .map_err(lost)?
            }
        };
        // Over the quota: stop before writing, so nothing past the room is kept; the
        // upload is dropped unpublished and the previous version stays.
        if received.saturating_add(read as u64) > limits.room {
            return Err(TransferFailure::Storage(StorageErrorKind::QuotaExceeded));
        }
        // Not reading on until the buckets allow slows the client down (TCP flow control).
        limits.throttle.pass(read).await;
        let filled = read == buffer.len();
        let chunk = if read == 0 {
            if !ascii {
                break;
            }
            converted.clear();
            converter.finish(&mut converted);
            &converted[..]
        } else if ascii {
            converted.clear();
            converter.convert(&buffer[..read], &mut converted);
            &converted[..]
        } else {
            &buffer[..read]
        };
        upload.write_all(chunk).await.map_err(storage_io_failure)?;
        received += read as u64;
        progress.add(read);
        if read == 0 {
            break;
        }
        if filled {
            grow_when_filled(&mut buffer, read);
        }
    }
    // No flush here: `Upload::publish_if` flushes next, in the hand-off with its fsync.
    Ok(received)
}

/// A transfer that filled its buffer is a large one: continue with large reads.
fn grow_when_filled(buffer: &mut Vec<u8>, used: usize) {
    if used == buffer.len() && buffer.len() < TRANSFER_BUFFER {
        buffer.resize(TRANSFER_BUFFER, 0);
    }
}

async fn send_listing(
    entries: ListSource,
    format: ListFormat,
    facts: MlstFacts,
    writable: bool,
    data: &mut (impl AsyncWrite + Unpin),
    progress: &Progress,
) -> Result<u64, TransferFailure> {
    let now = SystemTime::now();
    let mut out = Vec::with_capacity(LISTING_FLUSH + 512);
    let mut sent = 0u64;
    match entries {
        ListSource::Single(entry) => {
            listing::format_entry(format, &entry, now, facts, writable, &mut out);
        }
        ListSource::Stream(mut stream) => {
            while let Some(entry) = stream.next().await {
                let entry = entry.map_err(|error| storage_failure(&error))?;
                listing::format_entry(format, &entry, now, facts, writable, &mut out);
                if out.len() >= LISTING_FLUSH {
                    data.write_all(&out).await.map_err(lost)?;
                    sent += out.len() as u64;
                    progress.add(out.len());
                    out.clear();
                }
            }
        }
    }
    data.write_all(&out).await.map_err(lost)?;
    Ok(sent + out.len() as u64)
}

/// Ends a download: the FIN is the end-of-file mark in stream mode (RFC 959 §3.4.1).
/// Over TLS, shutdown sends close_notify first, so the client can tell a complete file from a
/// cut connection.
pub(super) async fn finish_sending(
    data: &mut (impl AsyncWrite + Unpin),
) -> Result<(), TransferFailure> {
    data.shutdown().await.map_err(lost)
}

/// What a transfer on the generic copy path must respect.
pub(super) struct Limits {
    pub(super) throttle: Throttle,
    /// Most bytes an upload may receive (its quota's room).
    pub(super) room: u64,
}

#[cfg(test)]
mod tests {
    use ferroftp_backend::StorageError;
    use rustix::io::Errno;

    use super::*;

    /// A disk that fills up, a file over the size limit or a read-only file system during a
    /// transfer's bytes get the reply the same error gets from a storage operation (552,
    /// 552, 550), not a generic 451.
    #[test]
    fn data_path_errors_map_as_storage_errors_do() {
        let cases = [
            (Errno::NOSPC, StorageErrorKind::InsufficientSpace),
            (Errno::DQUOT, StorageErrorKind::InsufficientSpace),
            (Errno::FBIG, StorageErrorKind::InsufficientSpace),
            (Errno::ROFS, StorageErrorKind::PermissionDenied),
            (Errno::ACCESS, StorageErrorKind::PermissionDenied),
            (Errno::IO, StorageErrorKind::Local),
        ];
        for (errno, kind) in cases {
            let storage_path = StorageError::from_io(io::Error::from(errno), "open /f").kind;
            let data_path = storage_io_failure(io::Error::from(errno));
            assert_eq!(storage_path, kind, "{errno:?}");
            assert_eq!(data_path, TransferFailure::Storage(kind), "{errno:?}");
        }
    }
}
