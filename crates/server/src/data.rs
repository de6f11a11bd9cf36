//! The data channel: making the data connection (passive accept or active connect) and
//! moving the bytes of one transfer.
//!
//! A transfer runs in stages so the control loop can speak between them: [`prepare`] opens
//! the storage side first (a missing file is a 550 with no data connection made), then the
//! data connection (425 on failure); the loop sends 150; [`run`] moves the bytes; for an
//! upload the loop then decides whether to commit (see `connection.rs`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use ferroftp_backend::{DownloadBody, LocalFile, LocalUploadFile, Storage, StorageError, Upload};
use ferroftp_proto::ascii::{FromNetwork, ToNetwork};
use ferroftp_proto::listing::{self, ListFormat, MlstFacts};
use ferroftp_proto::session::{
    DataTlsFailure, TransferFailure, TransferKind, TransferRequest, UploadTarget,
};
use ferroftp_proto::{DirEntry, StorageErrorKind, VirtualPath};
use futures_util::FutureExt as _;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use crate::passive::{PassiveListener, PortLease};
use crate::proxy_protocol::{self, ProxyProtocolOptions};
use crate::quota::{QuotaLimits, UploadQuota, UsageCounter};
use crate::telemetry::{self, RefusedDataConnection};
use crate::throttle::Throttle;
use crate::{tls, tls_lineage};

/// PROT P: how the data connection's TLS handshake is run and checked.
pub(crate) struct DataTls {
    pub(crate) config: Arc<rustls::ServerConfig>,
    /// The control connection's lineage (see `tls_lineage.rs`).
    pub(crate) lineage: tls_lineage::DataLineage,
    pub(crate) require_resumption: bool,
    pub(crate) handshake_timeout: Duration,
}

/// What the account's policy asks of one transfer (see `user_policy.rs`).
#[derive(Debug, Default)]
pub(crate) struct TransferPolicy {
    /// The bandwidth buckets of the transfer's direction; unlimited keeps the zero-copy
    /// paths (`sendfile`, the blocking receive into the local file).
    pub(crate) throttle: Throttle,
    /// The account's quota, for uploads.
    pub(crate) quota: Option<(Arc<UsageCounter>, QuotaLimits)>,
}

/// Timeouts and sizes of the data channel.
#[derive(Clone, Debug)]
pub struct DataChannelOptions {
    /// How long a passive listener waits for the client to connect.
    pub accept_timeout: Duration,
    /// How long an active connect may take.
    pub connect_timeout: Duration,
    /// A transfer with no progress for this long is cut.
    pub idle_timeout: Duration,
}

impl Default for DataChannelOptions {
    fn default() -> Self {
        Self {
            accept_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Bytes moved per read; one buffer per running transfer.
const TRANSFER_BUFFER: usize = 256 * 1024;
/// A transfer's buffer until a read or write fills it: most files of a many-small-files
/// transfer fit, and an idle moment never holds a 256 KiB allocation.
const FIRST_TRANSFER_BUFFER: usize = 16 * 1024;
/// Listing output is flushed in chunks of about this size.
const LISTING_FLUSH: usize = 64 * 1024;

/// Bytes a running transfer has moved so far. Read when the transfer ends early (ABOR, a
/// broken connection, the client gone), when its future is dropped or failed and cannot say:
/// an interrupted upload's log shows what was received and kept for a resume.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress(Arc<AtomicU64>);

impl Progress {
    pub(crate) fn add(&self, bytes: usize) {
        self.0.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Where the data connection comes from.
#[derive(Debug)]
pub(crate) enum DataSource {
    /// Accept on this listener a connection from `expected_peer` only (after the PROXY
    /// header, when the connection comes from a trusted proxy).
    Passive {
        listener: PassiveListener,
        expected_peer: IpAddr,
        proxy: Arc<ProxyProtocolOptions>,
        /// Scores a foreign address that connects (port stealing).
        defender: Arc<crate::Defender>,
    },
    /// Connect from `local_ip` (and `source_port` when it can be bound) to `target`.
    Active {
        local_ip: IpAddr,
        source_port: Option<u16>,
        target: SocketAddr,
    },
}

/// A transfer whose storage side and data connection are ready.
pub(crate) struct Prepared {
    data: TcpStream,
    /// PROT P: TLS is negotiated on `data` once the 150 reply is out.
    tls: Option<Box<DataTls>>,
    /// Keeps a passive port taken until the data connection is done.
    lease: Option<PortLease>,
    work: Work,
    ascii: bool,
    idle_timeout: Duration,
    /// Shown in the 150 reply.
    pub(crate) size: Option<u64>,
    /// The name a STOU upload received.
    pub(crate) stored_as: Option<VirtualPath>,
    throttle: Throttle,
    /// An upload under a quota: its room, and what publishing it will charge.
    pub(crate) upload_quota: Option<Box<UploadQuota>>,
}

enum Work {
    Retrieve {
        /// A local file's bytes are sent with `sendfile` over a plain data connection in
        /// binary mode (the bytes go out unchanged only there), and read as a stream
        /// otherwise.
        body: DownloadBody,
        size: u64,
    },
    Store {
        upload: Box<dyn Upload>,
        /// The upload's local file, for a binary upload over a plain data connection:
        /// received straight into (`receive_local_upload`); otherwise the bytes go through
        /// `upload`.
        local_file: Option<LocalUploadFile>,
    },
    List {
        entries: ListSource,
        format: ListFormat,
        facts: MlstFacts,
        writable: bool,
    },
}

enum ListSource {
    Stream(ferroftp_backend::EntryStream),
    Single(DirEntry),
}

/// How a transfer's byte moving ended.
pub(crate) enum Moved {
    /// Download or listing complete.
    Sent { bytes: u64, leftovers: Leftovers },
    /// Upload data complete; not yet committed.
    Received { upload: Box<dyn Upload>, bytes: u64 },
}

fn storage_failure(error: &StorageError) -> TransferFailure {
    TransferFailure::Storage(error.kind)
}

/// Opens the storage side, then the data connection.
pub(crate) async fn prepare(
    request: TransferRequest,
    storage: Arc<dyn Storage>,
    source: DataSource,
    tls: Option<DataTls>,
    options: &DataChannelOptions,
    policy: TransferPolicy,
) -> Result<Prepared, TransferFailure> {
    let mut size = None;
    let mut stored_as = None;
    let mut upload_quota = None;
    let work = match request.kind {
        TransferKind::Retrieve { path, offset } => {
            let download = storage
                .read(&path, offset)
                .await
                .map_err(|e| storage_failure(&e))?;
            size = Some(download.size);
            Work::Retrieve {
                body: download.body,
                size: download.size,
            }
        }
        TransferKind::Store { target, mode } => {
            if let Some((counter, limits)) = policy.quota {
                // Before anything is opened: a refusal is a 552 with no data connection.
                let usage = counter.counted().await;
                let existing = match &target {
                    UploadTarget::Path(path) => storage
                        .metadata(path)
                        .await
                        .ok()
                        .filter(|meta| !meta.is_dir())
                        .map(|meta| meta.size),
                    UploadTarget::UniqueIn(_) => None,
                };
                upload_quota = Some(Box::new(
                    UploadQuota::check(
                        counter,
                        limits,
                        usage,
                        mode,
                        existing,
                        request.allocated_size,
                    )
                    .map_err(TransferFailure::Storage)?,
                ));
            }
            let mut upload = storage
                .start_upload(&target, mode)
                .await
                .map_err(|e| storage_failure(&e))?;
            stored_as = Some(upload.path().clone());
            // Only a plain binary transfer receives straight into the file, and only when
            // no bucket or quota has to see each chunk.
            let local_file = if request.ascii
                || tls.is_some()
                || !policy.throttle.is_unlimited()
                || upload_quota.is_some()
            {
                None
            } else {
                upload.local_file()
            };
            Work::Store { upload, local_file }
        }
        TransferKind::List {
            path,
            format,
            facts,
            writable,
        } => {
            let entries = match storage.list(&path).await {
                Ok(stream) => ListSource::Stream(stream),
                // LIST and NLST of a file show that one file (as `ls -l file` does).
                Err(error)
                    if error.kind == StorageErrorKind::NotADirectory
                        && format != ListFormat::Machine =>
                {
                    let meta = storage
                        .metadata(&path)
                        .await
                        .map_err(|e| storage_failure(&e))?;
                    let name = path.file_name().unwrap_or("/").to_owned();
                    ListSource::Single(DirEntry { name, meta })
                }
                Err(error) => return Err(storage_failure(&error)),
            };
            Work::List {
                entries,
                format,
                facts,
                writable,
            }
        }
    };
    let (data, lease) = open_data_connection(source, options).await?;
    Ok(Prepared {
        data,
        tls: tls.map(Box::new),
        lease,
        work,
        ascii: request.ascii,
        idle_timeout: options.idle_timeout,
        size,
        stored_as,
        throttle: policy.throttle,
        upload_quota,
    })
}

async fn open_data_connection(
    source: DataSource,
    options: &DataChannelOptions,
) -> Result<(TcpStream, Option<PortLease>), TransferFailure> {
    let (stream, lease) = match source {
        DataSource::Passive {
            listener,
            expected_peer,
            proxy,
            defender,
        } => {
            let (stream, lease) = accept_from(
                listener,
                expected_peer,
                &proxy,
                &defender,
                options.accept_timeout,
            )
            .await?;
            (stream, Some(lease))
        }
        DataSource::Active {
            local_ip,
            source_port,
            target,
        } => {
            let stream = connect_to(local_ip, source_port, target, options.connect_timeout).await?;
            // (A passive connection has it from its listener.)
            let _ = stream.set_nodelay(true);
            (stream, None)
        }
    };
    Ok((stream, lease))
}

/// Accepts the data connection, refusing any from another address than the control
/// connection's client: a third party that guesses the port must not get the data. Behind a
/// trusted proxy, the address compared is the one its PROXY header names.
async fn accept_from(
    mut passive: PassiveListener,
    expected_peer: IpAddr,
    proxy: &ProxyProtocolOptions,
    defender: &crate::Defender,
    accept_timeout: Duration,
) -> Result<(TcpStream, PortLease), TransferFailure> {
    let expected_peer = expected_peer.to_canonical();
    let deadline = tokio::time::Instant::now() + accept_timeout;
    loop {
        let accepted = tokio::time::timeout_at(deadline, passive.accept()).await;
        let (mut stream, mut peer) = match accepted {
            Err(_) => {
                telemetry::data_connection_refused(RefusedDataConnection::Timeout, 1);
                return Err(TransferFailure::DataConnection(format!(
                    "no connection to passive port {} within {}s",
                    passive.port(),
                    accept_timeout.as_secs()
                )));
            }
            Ok(Err(error)) => return Err(TransferFailure::DataConnection(error.to_string())),
            Ok(Ok(accepted)) => accepted,
        };
        if proxy.is_trusted(peer.ip()) {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            match proxy_protocol::read_header(&mut stream, proxy.header_timeout.min(remaining))
                .await
            {
                Ok(Some(source)) => peer = source,
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%peer, %error, "passive data connection from the proxy without a valid PROXY header");
                    telemetry::proxy_header_rejected(telemetry::ProxyHeaderRejection::Invalid);
                    continue;
                }
            }
        }
        if peer.ip().to_canonical() == expected_peer {
            return Ok((stream, passive.into_lease()));
        }
        telemetry::data_connection_refused(RefusedDataConnection::ForeignPeer, 1);
        defender.record(peer.ip(), crate::DefenderEvent::ForeignDataConnection);
        tracing::warn!(
            %peer,
            expected = %expected_peer,
            port = passive.port(),
            "refused passive data connection from a foreign address"
        );
    }
}

/// Set once the configured active source port could not be bound, so the fallback is
/// reported once, not at every transfer.
static SOURCE_PORT_WARNED: AtomicBool = AtomicBool::new(false);

async fn connect_to(
    local_ip: IpAddr,
    source_port: Option<u16>,
    target: SocketAddr,
    connect_timeout: Duration,
) -> Result<TcpStream, TransferFailure> {
    let new_socket = || {
        if target.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|error| TransferFailure::DataConnection(error.to_string()))
    };
    let mut socket = new_socket()?;
    // Leave from the address the client talks to, so its firewall sees the server it knows.
    if local_ip.is_ipv4() == target.is_ipv4() {
        let mut bound = false;
        if let Some(port) = source_port {
            // RFC 959 §3.2: the server's default data port is L-1. Several transfers may
            // leave from it at once (each to another client port): SO_REUSEADDR.
            let _ = socket.set_reuseaddr(true);
            match socket.bind(SocketAddr::new(local_ip, port)) {
                Ok(()) => bound = true,
                Err(error) => {
                    if !SOURCE_PORT_WARNED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            port,
                            %error,
                            "active.source_port: cannot bind the data source port, using an ephemeral port"
                        );
                    }
                    socket = new_socket()?;
                }
            }
        }
        if !bound {
            let _ = socket.bind(SocketAddr::new(local_ip, 0));
        }
    }
    match timeout(connect_timeout, socket.connect(target)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(error)) => Err(TransferFailure::DataConnection(format!(
            "connecting to {target} failed: {error}"
        ))),
        Err(_) => {
            telemetry::data_connection_refused(RefusedDataConnection::Timeout, 1);
            Err(TransferFailure::DataConnection(format!(
                "connecting to {target} timed out after {}s",
                connect_timeout.as_secs()
            )))
        }
    }
}

/// What a finished zero-copy download still holds: its data connection (already shut down
/// for writing, so the client has its end of file), its file and its passive port. Dropping
/// it closes them; the control loop drops it once the 226 is written, so the client does not
/// wait for the closes.
#[derive(Default)]
pub(crate) struct Leftovers {
    // In this order: the port is released after its connection is closed.
    _data: Option<TcpStream>,
    _file: Option<LocalFile>,
    _lease: Option<PortLease>,
}

/// Moves the bytes (after the TLS handshake, for PROT P).
pub(crate) async fn run(prepared: Prepared, progress: Progress) -> Result<Moved, TransferFailure> {
    // `lease` lives until the bytes are moved: the passive port stays taken meanwhile.
    let Prepared {
        data,
        tls,
        work,
        ascii,
        idle_timeout,
        lease,
        throttle,
        upload_quota,
        ..
    } = prepared;
    let limits = Limits {
        throttle,
        room: upload_quota.map_or(u64::MAX, |quota| quota.room),
    };
    match (tls, work) {
        (
            None,
            Work::Retrieve {
                body: DownloadBody::LocalFile(file),
                size,
            },
        ) if !ascii && limits.throttle.is_unlimited() => {
            let mut data = data;
            let bytes = send_file_zero_copy(&data, &file, size, idle_timeout, &progress).await?;
            finish_sending(&mut data).await?;
            let leftovers = Leftovers {
                _data: Some(data),
                _file: Some(file),
                _lease: lease,
            };
            Ok(Moved::Sent { bytes, leftovers })
        }
        (
            None,
            Work::Store {
                mut upload,
                local_file: Some(file),
            },
        ) => {
            let bytes =
                receive_local_upload(data, &mut upload, file, idle_timeout, progress).await?;
            Ok(Moved::Received { upload, bytes })
        }
        (None, work) => move_bytes(data, work, ascii, idle_timeout, &progress, &limits).await,
        (Some(tls), work) => {
            let data = protect(data, &tls).await?;
            move_bytes(data, work, ascii, idle_timeout, &progress, &limits).await
        }
    }
}

/// What a transfer on the generic copy path must respect.
struct Limits {
    throttle: Throttle,
    /// Most bytes an upload may receive (its quota's room).
    room: u64,
}

/// A plain binary upload into a local file. The first [`FIRST_TRANSFER_BUFFER`] bytes are read
/// here: a file that ends within them (most files of a many-small-files transfer) goes into
/// the upload's own buffer and costs no thread hand-off (its bytes are written with the
/// commit); a longer one continues in [`receive_into_local_file`]. A client that dies within
/// the first 16 KiB leaves no partial data.
async fn receive_local_upload(
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
                .map_err(|error| TransferFailure::Storage(kind_of_io_error(&error)))?;
            // Our end of file after the client's, as for every upload.
            let _ = timeout(idle_timeout, data.shutdown()).await;
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
    // blocking read at once; the thread then finishes the write it holds and stops.
    let mut stop_on_drop = ShutdownOnDrop(Some(socket.try_clone().map_err(lost)?));
    let received =
        tokio::task::spawn_blocking(move || receive_blocking(&socket, &file, first, &progress))
            .await
            .map_err(|error| {
                TransferFailure::ConnectionLost(format!("receiving task failed: {error}"))
            })?;
    stop_on_drop.0 = None;
    received
}

struct ShutdownOnDrop(Option<std::net::TcpStream>);

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
    let storage = |error: io::Error| TransferFailure::Storage(kind_of_io_error(&error));
    file.file
        .write_all_at(&first, file.offset)
        .map_err(storage)?;
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
            .map_err(storage)?;
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
    let _ = rustix::fs::fadvise(file, from, to - from, rustix::fs::Advice::DontNeed);
}

/// Most bytes one `sendfile` call moves: bounds the time a call can hold the async thread
/// when the file is not in the page cache.
const SENDFILE_CHUNK: usize = 1 << 20;

/// Sends `file` from its offset to `end` with `sendfile(2)`: the kernel copies from the page
/// cache to the socket, no user-space buffer, no read/write pair per chunk.
async fn send_file_zero_copy(
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

/// The server side of the data connection's handshake, then the reuse check (see `tls.rs`).
async fn protect(
    data: TcpStream,
    tls: &DataTls,
) -> Result<tokio_rustls::server::TlsStream<TcpStream>, TransferFailure> {
    let handshake =
        tls::handshake(&tls.config, data, tls.lineage.id(), tls.handshake_timeout).await;
    telemetry::tls_handshake(telemetry::TlsConnection::Data, handshake.is_ok());
    let (stream, resumed) = handshake
        .map_err(|error| TransferFailure::DataTls(DataTlsFailure::Handshake(error.to_string())))?;
    // Exempt transfers (`require_resumption` false) are not checked, and never wait.
    let accepted = !tls.require_resumption
        || match resumed {
            Some(lineage) => {
                tls.lineage
                    .accepts(lineage, tls.handshake_timeout, std::time::Instant::now())
                    .await
            }
            None => false,
        };
    if !accepted {
        metrics::counter!("ferroftp_tls_reuse_refused_total").increment(1);
        let connection = stream.get_ref().1;
        tracing::warn!(
            handshake = ?connection.handshake_kind(),
            version = ?connection.protocol_version(),
            foreign_session = resumed.is_some(),
            "refused a protected data connection that did not resume a TLS session of its control connection's lineage"
        );
        return Err(TransferFailure::DataTls(DataTlsFailure::NotResumed));
    }
    Ok(stream)
}

async fn move_bytes<S>(
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
            let mut body = body
                .into_stream()
                .map_err(|error| TransferFailure::Storage(kind_of_io_error(&error)))?;
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

fn lost(error: io::Error) -> TransferFailure {
    TransferFailure::ConnectionLost(error.to_string())
}

async fn with_idle_timeout<T>(
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
            .map_err(|error| TransferFailure::Storage(kind_of_io_error(&error)))?;
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
        upload
            .write_all(chunk)
            .await
            .map_err(|error| TransferFailure::Storage(kind_of_io_error(&error)))?;
        received += read as u64;
        progress.add(read);
        if read == 0 {
            break;
        }
        if filled {
            grow_when_filled(&mut buffer, read);
        }
    }
    // No flush here: `Upload::make_durable` flushes next, in one hand-off with its fsync.
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
async fn finish_sending(data: &mut (impl AsyncWrite + Unpin)) -> Result<(), TransferFailure> {
    data.shutdown().await.map_err(lost)
}

/// Storage streams report `io::Error`s; their kind decides the reply, anything unexpected
/// is a local error (451).
fn kind_of_io_error(error: &io::Error) -> StorageErrorKind {
    match error.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            StorageErrorKind::InsufficientSpace
        }
        io::ErrorKind::PermissionDenied => StorageErrorKind::PermissionDenied,
        io::ErrorKind::NotFound => StorageErrorKind::NotFound,
        _ => StorageErrorKind::Local,
    }
}
