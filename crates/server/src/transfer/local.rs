//! The fast paths of a storage that keeps files on a local file system, over a plain data
//! connection in binary mode with nothing to see each chunk: downloads with `sendfile(2)`,
//! uploads received straight into the file on one blocking thread.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use ferroftp_backend::{LocalFile, LocalUploadFile, Upload};
use ferroftp_proto::session::TransferFailure;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::Progress;
use super::stream::{
    FIRST_TRANSFER_BUFFER, TRANSFER_BUFFER, lost, storage_io_failure, with_idle_timeout,
};
use crate::passive::PortLease;

/// What a finished zero-copy download still holds: its data connection (already shut down
/// for writing, so the client has its end of file), its file and its passive port. Dropping
/// it closes them; the control loop drops it once the 226 is written, so the client does not
/// wait for the closes.
#[derive(Default)]
pub(crate) struct Leftovers {
    // In this order: the port is released after its connection is closed.
    pub(super) _data: Option<TcpStream>,
    pub(super) _file: Option<LocalFile>,
    pub(super) _lease: Option<PortLease>,
}

/// A plain binary upload into a local file. The first [`FIRST_TRANSFER_BUFFER`] bytes are read
/// here: a file that ends within them (most files of a many-small-files transfer) goes into
/// the upload's own buffer and costs no thread hand-off (its bytes are written with the
/// commit); a longer one continues in [`receive_into_local_file`]. A client that dies within
/// the first 16 KiB leaves no partial data.
pub(super) async fn receive_local_upload(
    mut data: TcpStream,
    upload: &mut Box<dyn Upload>,
    file: LocalUploadFile,
    idle_timeout: Duration,
    progress: Progress,
) -> Result<u64, TransferFailure> {
    let mut first = vec![0u8; FIRST_TRANSFER_BUFFER];
    let mut filled = 0;
    while filled < first.len() {
        let read = with_idle_timeout(idle_timeout, data.read(&mut first[filled..]))
            .await
            .map_err(lost)?;
        if read == 0 {
            upload
                .write_all(&first[..filled])
                .await
                .map_err(storage_io_failure)?;
            // Our end of file after the client's goes with the close, as `data` drops here
            // (a shutdown first would put nothing more on the wire).
            return Ok(filled as u64);
        }
        filled += read;
        progress.add(read);
    }
    receive_into_local_file(data, file, first, idle_timeout, progress).await
}

/// The rest of a plain binary upload, after the `first` bytes already read, straight into its
/// local file on one blocking thread that reads the socket and writes the file in turn, as a
/// forking server's process does. On two cores beside the client, an async reader and a
/// separate writer thread only contend (the write-behind path measured 0.8 GB/s where this
/// loop reaches 2.2); and the async threads never wait for the disk.
async fn receive_into_local_file(
    data: TcpStream,
    file: LocalUploadFile,
    first: Vec<u8>,
    idle_timeout: Duration,
    progress: Progress,
) -> Result<u64, TransferFailure> {
    let socket = data.into_std().map_err(lost)?;
    socket.set_nonblocking(false).map_err(lost)?;
    // SO_RCVTIMEO is the idle timeout: a read that waits this long fails.
    socket
        .set_read_timeout(Some(idle_timeout.max(Duration::from_millis(1))))
        .map_err(lost)?;
    // Dropping this future (ABOR, the client gone) shuts the socket down, which ends the
    // blocking read at once; the thread then finishes the write it holds and stops. Shared,
    // not duplicated: a session's descriptors are counted (`descriptors.rs`).
    let socket = Arc::new(socket);
    let mut stop_on_drop = ShutdownOnDrop(Some(Arc::clone(&socket)));
    let received =
        tokio::task::spawn_blocking(move || receive_blocking(&socket, &file, first, &progress))
            .await
            .map_err(|error| {
                TransferFailure::ConnectionLost(format!("receiving task failed: {error}"))
            })?;
    stop_on_drop.0 = None;
    received
}

struct ShutdownOnDrop(Option<Arc<std::net::TcpStream>>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        if let Some(socket) = &self.0 {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Bytes received between two starts of writeback (`LocalUploadFile::write_back_early`).
const WRITE_BACK_STEP: u64 = 8 << 20;

fn receive_blocking(
    socket: &std::net::TcpStream,
    file: &LocalUploadFile,
    first: Vec<u8>,
    progress: &Progress,
) -> Result<u64, TransferFailure> {
    use std::io::Read as _;
    use std::os::unix::fs::FileExt as _;
    file.file
        .write_all_at(&first, file.offset)
        .map_err(storage_io_failure)?;
    let mut offset = file.offset + first.len() as u64;
    // The first bytes filled their buffer: this is a large upload.
    let mut buffer = first;
    buffer.resize(TRANSFER_BUFFER, 0);
    let mut written_back_to = file.offset;
    loop {
        let read = match (&*socket).read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(lost(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "data connection idle",
                )));
            }
            Err(error) => return Err(lost(error)),
        };
        progress.add(read);
        file.file
            .write_all_at(&buffer[..read], offset)
            .map_err(storage_io_failure)?;
        offset += read as u64;
        if file.write_back_early && offset - written_back_to >= WRITE_BACK_STEP {
            start_write_back(&file.file, written_back_to, offset);
            written_back_to = offset;
        }
    }
    // Our end of file after the client's, as the async path answers with its shutdown.
    let _ = socket.shutdown(std::net::Shutdown::Write);
    Ok(offset - file.offset)
}

/// Starts writing `from..to` of `file` back to the disk without waiting, so the fsync before
/// publishing waits only for what arrived last (measured: STOR with fsync ≈1.5 → ≈2.0 GB/s,
/// close to the speed without fsync). `POSIX_FADV_DONTNEED` does this on Linux: it starts
/// writeback of the range's dirty pages (as `sync_file_range(SYNC_FILE_RANGE_WRITE)` would;
/// rustix offers no such call and this crate allows no `unsafe`) and drops only pages that
/// are already clean, which these, just written, are not. Advice: a failure changes nothing.
fn start_write_back(file: &std::fs::File, from: u64, to: u64) {
    // A length of `None` would mean "to the end of the file": an empty range is no advice.
    if let Some(length) = std::num::NonZeroU64::new(to.saturating_sub(from)) {
        let _ = rustix::fs::fadvise(file, from, Some(length), rustix::fs::Advice::DontNeed);
    }
}

/// Most bytes one `sendfile` call moves: bounds the time a call can hold the async thread
/// when the file is not in the page cache.
const SENDFILE_CHUNK: usize = 1 << 20;

/// Sends `file` from its offset to `end` with `sendfile(2)`: the kernel copies from the page
/// cache to the socket, no user-space buffer, no read/write pair per chunk.
pub(super) async fn send_file_zero_copy(
    data: &TcpStream,
    file: &LocalFile,
    end: u64,
    idle_timeout: Duration,
    progress: &Progress,
) -> Result<u64, TransferFailure> {
    let mut offset = file.offset;
    while offset < end {
        let count = usize::try_from(end - offset)
            .unwrap_or(usize::MAX)
            .min(SENDFILE_CHUNK);
        if offset == file.offset {
            // A new connection is writable, but the event loop learns that only at its next
            // turn: the first chunk is tried at once, so a small file goes out (and its
            // transfer completes) without that trip. Later chunks follow the readiness
            // events, which this attempt leaves untouched.
            let mut position = offset;
            match rustix::fs::sendfile(data, &file.file, Some(&mut position), count) {
                Ok(0) => break,
                Ok(sent) => {
                    offset += sent as u64;
                    progress.add(sent);
                    continue;
                }
                // Not ready or interrupted: the loop below waits and tries again.
                Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {}
                Err(error) => return Err(lost(error.into())),
            }
        }
        let sent = with_idle_timeout(idle_timeout, async {
            loop {
                data.writable().await?;
                let mut position = offset;
                match data.try_io(Interest::WRITABLE, || {
                    rustix::fs::sendfile(data, &file.file, Some(&mut position), count)
                        .map_err(io::Error::from)
                }) {
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                    result => return result,
                }
            }
        })
        .await
        .map_err(lost)?;
        if sent == 0 {
            // The file shrank under us: what is there has been sent.
            break;
        }
        offset += sent as u64;
        progress.add(sent);
    }
    Ok(offset - file.offset)
}
