//! Write-behind for uploads: received bytes collect in a large buffer in memory, and a full
//! buffer is written on the blocking pool while the next one fills. When the client pauses,
//! [`WriteBehind::write_soon`] starts writing what is buffered without waiting for it.
//! The last, partly filled buffer is handed to whoever finishes the upload, which writes it
//! in the same blocking job as its fsync and rename: a small file costs one hand-off to the
//! blocking pool for all of its data, not one per write plus one per flush.
//!
//! Writes carry their offset (`pwrite`), so writes in flight at the same time, or a buffer
//! written when the upload is dropped, can never land out of order.

use std::collections::VecDeque;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::AsyncWrite;
use tokio::task::JoinHandle;

/// Bytes per write on the blocking pool.
pub(crate) const CHUNK: usize = 1 << 20;

/// The upload's file behind an in-memory buffer; see the module documentation.
pub(crate) struct WriteBehind {
    file: Arc<File>,
    /// Bytes accepted but not yet handed to a write.
    buffer: Vec<u8>,
    /// The file offset of `buffer[0]`.
    offset: u64,
    /// Writes on the blocking pool, oldest first; each returns its buffer for reuse.
    in_flight: VecDeque<JoinHandle<(Vec<u8>, io::Result<()>)>>,
    /// A buffer back from a finished write, for the next one.
    spare: Vec<u8>,
}

/// What is left to write when an upload finishes: done on the blocking thread that also
/// fsyncs and renames.
pub(crate) struct Tail {
    pub(crate) file: Arc<File>,
    bytes: Vec<u8>,
    offset: u64,
}

impl Tail {
    /// Writes the remaining bytes. Blocking.
    pub(crate) fn write(&self) -> io::Result<()> {
        self.file.write_all_at(&self.bytes, self.offset)
    }
}

impl WriteBehind {
    /// Writes to `file` from `offset` on (where a resumed upload continues).
    pub(crate) fn new(file: File, offset: u64) -> Self {
        Self {
            file: Arc::new(file),
            buffer: Vec::new(),
            offset,
            in_flight: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    /// Waits for every write in flight and reports the first error.
    fn poll_in_flight(&mut self, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(oldest) = self.in_flight.front_mut() {
            let joined = ready!(Pin::new(oldest).poll(context));
            self.in_flight.pop_front();
            match joined {
                Ok((mut buffer, result)) => {
                    buffer.clear();
                    self.spare = buffer;
                    result?;
                }
                Err(error) => {
                    return Poll::Ready(Err(io::Error::other(format!(
                        "upload write task failed: {error}"
                    ))));
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Hands the buffer to a write on the blocking pool.
    fn ship(&mut self) {
        let next = std::mem::take(&mut self.spare);
        let bytes = std::mem::replace(&mut self.buffer, next);
        let offset = self.offset;
        self.offset += bytes.len() as u64;
        let file = Arc::clone(&self.file);
        self.in_flight
            .push_back(tokio::task::spawn_blocking(move || {
                let result = file.write_all_at(&bytes, offset);
                (bytes, result)
            }));
    }

    /// The file and the offset the next byte goes to, if nothing is buffered or being
    /// written: for a writer that bypasses this one.
    pub(crate) fn bypass(&self) -> Option<(Arc<File>, u64)> {
        if !self.buffer.is_empty() || !self.in_flight.is_empty() {
            return None;
        }
        Some((Arc::clone(&self.file), self.offset))
    }

    /// Starts writing what is buffered, without waiting: the client paused, so a write now
    /// costs no throughput and puts its bytes in the partial file, where a resume finds them
    /// should the client (or the server) die.
    pub(crate) fn write_soon(&mut self) {
        if !self.buffer.is_empty() {
            self.ship();
        }
    }

    /// Waits for the write in flight and takes the bytes not yet written, for the caller to
    /// write on its own blocking thread. Later writes continue after them.
    pub(crate) async fn take_tail(&mut self) -> io::Result<Tail> {
        std::future::poll_fn(|context| self.poll_in_flight(context)).await?;
        let bytes = std::mem::take(&mut self.buffer);
        let offset = self.offset;
        self.offset += bytes.len() as u64;
        Ok(Tail {
            file: Arc::clone(&self.file),
            bytes,
            offset,
        })
    }
}

impl AsyncWrite for WriteBehind {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buffer.len() >= CHUNK {
            ready!(this.poll_in_flight(context))?;
            this.ship();
        }
        if this.buffer.capacity() == 0 {
            // Sized for the first write: a 4 KiB file does not get a 1 MiB buffer.
            this.buffer.reserve(data.len().min(CHUNK));
        }
        let taken = data.len().min(CHUNK - this.buffer.len());
        this.buffer.extend_from_slice(&data[..taken]);
        Poll::Ready(Ok(taken))
    }

    /// Writes everything accepted so far (two hand-offs: use [`WriteBehind::take_tail`] to
    /// end an upload).
    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_in_flight(context))?;
        if !this.buffer.is_empty() {
            this.ship();
            ready!(this.poll_in_flight(context))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(context)
    }
}

impl Drop for WriteBehind {
    /// An upload dropped mid-transfer (ABOR, a broken connection) keeps every byte it
    /// accepted: they are part of the partial data a resume continues from.
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let tail = Tail {
            file: Arc::clone(&self.file),
            bytes: std::mem::take(&mut self.buffer),
            offset: self.offset,
        };
        let write = move || {
            if let Err(error) = tail.write() {
                tracing::warn!(%error, "writing the last bytes of an interrupted upload failed");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn pattern(length: usize) -> Vec<u8> {
        (0..length).map(|index| (index % 251) as u8).collect()
    }

    fn file_in(directory: &tempfile::TempDir, prefix: &[u8]) -> (std::path::PathBuf, File) {
        let path = directory.path().join("upload");
        std::fs::write(&path, prefix).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        (path, file)
    }

    #[tokio::test]
    async fn bytes_land_in_order_after_the_offset_across_chunks() {
        let directory = tempfile::tempdir().unwrap();
        let (path, file) = file_in(&directory, b"kept");
        let mut writer = WriteBehind::new(file, 4);
        let data = pattern(3 * CHUNK + 12_345);
        // Odd-sized writes, as a socket delivers them.
        for piece in data.chunks(100_003) {
            writer.write_all(piece).await.unwrap();
        }
        let tail = writer.take_tail().await.unwrap();
        tokio::task::spawn_blocking(move || tail.write())
            .await
            .unwrap()
            .unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(&written[..4], b"kept");
        assert!(written[4..] == data[..], "content differs");
    }

    #[tokio::test]
    async fn writes_after_a_tail_continue_behind_it() {
        let directory = tempfile::tempdir().unwrap();
        let (path, file) = file_in(&directory, b"");
        let mut writer = WriteBehind::new(file, 0);
        writer.write_all(b"first ").await.unwrap();
        writer.take_tail().await.unwrap().write().unwrap();
        writer.write_all(b"second").await.unwrap();
        writer.flush().await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first second");
    }

    /// Polls (bounded: 10 s) until the file at `path` holds `length` bytes.
    async fn wait_for_length(path: &std::path::Path, length: usize) {
        for _ in 0..2000 {
            if std::fs::metadata(path).unwrap().len() == length as u64 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn write_soon_writes_without_being_awaited_and_in_order() {
        let directory = tempfile::tempdir().unwrap();
        let (path, file) = file_in(&directory, b"");
        let data = pattern(300_000);
        let mut writer = WriteBehind::new(file, 0);
        // Several pauses while earlier writes may still be in flight.
        for piece in data.chunks(70_000) {
            writer.write_all(piece).await.unwrap();
            writer.write_soon();
        }
        wait_for_length(&path, data.len()).await;
        assert!(std::fs::read(&path).unwrap() == data, "content differs");
        // Nothing is left for the tail.
        let tail = writer.take_tail().await.unwrap();
        assert!(tail.bytes.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_writer_still_writes_what_it_accepted() {
        let directory = tempfile::tempdir().unwrap();
        let (path, file) = file_in(&directory, b"");
        let data = pattern(CHUNK + 777);
        let mut writer = WriteBehind::new(file, 0);
        writer.write_all(&data).await.unwrap();
        drop(writer);
        // The last bytes go out on the blocking pool.
        wait_for_length(&path, data.len()).await;
        assert!(std::fs::read(&path).unwrap() == data, "content differs");
    }
}
