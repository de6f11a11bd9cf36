//! What a transfer does, decided once its storage side is open ([`prepare`]), and which
//! path moves its bytes ([`run`]): a local file's fast path when the storage offers one and
//! nothing has to see each chunk, the generic stream copy otherwise.

use std::sync::Arc;
use std::time::Duration;

use ferroftp_backend::{DownloadBody, LocalUploadFile, Storage, StorageError, Upload};
use ferroftp_proto::listing::{ListFormat, MlstFacts};
use ferroftp_proto::session::{TransferFailure, TransferKind, TransferRequest, UploadTarget};
use ferroftp_proto::{DirEntry, StorageErrorKind, VirtualPath};
use tokio::net::TcpStream;

use super::Progress;
use super::connect::{DataChannelOptions, DataSource, DataTls, open_data_connection, protect};
use super::local::{Leftovers, receive_local_upload, send_file_zero_copy};
use super::stream::{Limits, finish_sending, move_bytes};
use crate::passive::PortLease;
use crate::quota::{QuotaLimits, UploadQuota, UsageCounter};
use crate::throttle::Throttle;

/// What the account's policy asks of one transfer (see `user_policy.rs`).
#[derive(Debug, Default)]
pub(crate) struct TransferPolicy {
    /// The bandwidth buckets of the transfer's direction; unlimited keeps the zero-copy
    /// paths (`sendfile`, the blocking receive into the local file).
    pub(crate) throttle: Throttle,
    /// The account's quota, for uploads.
    pub(crate) quota: Option<(Arc<UsageCounter>, QuotaLimits)>,
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

pub(super) enum Work {
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

pub(super) enum ListSource {
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

pub(super) fn storage_failure(error: &StorageError) -> TransferFailure {
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
