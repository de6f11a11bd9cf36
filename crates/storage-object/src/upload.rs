//! One upload into the bucket: bytes gathered into parts, parts sent while the next one
//! fills (a few in flight), published by CompleteMultipartUpload (or one PutObject for a
//! file smaller than a part) only at [`Upload::commit`].
//!
//! Memory is bounded by the parts: at most `part_size` bytes gathering and
//! `parts_in_flight` parts being sent (through OpenDAL's writer, on stores without the direct
//! multipart client, as many more may wait in its channel). Nothing is written to local disk.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use bytes::Bytes;
use ferroftp_backend::{StorageError, StorageErrorKind, Upload, VirtualPath, WriteMode};
use tokio::io::AsyncWrite;
use tokio::task::JoinHandle;

use crate::error::from_opendal;
use crate::multipart::Part;
use crate::partial::{self, PartialState, TailHeader};
use crate::{Inner, UploadClaim};

/// The largest range one UploadPartCopy copies when an upload starts from a committed
/// object (S3 allows 5 GiB; smaller ranges are copied in parallel by the store anyway).
const COPY_RANGE: u64 = 1024 * 1024 * 1024;

/// An upload in progress (see the module documentation).
pub(crate) struct ObjectUpload {
    path: VirtualPath,
    initial_len: u64,
    /// `None` once committed or abandoned; a drop with it still here abandons.
    state: Option<UploadState>,
}

/// Everything an upload holds until it ends.
struct UploadState {
    inner: Arc<Inner>,
    /// Keeps other uploads of the name in this process away until the end (released when
    /// the state is dropped).
    claim: UploadClaim,
    object_path: String,
    key: String,
    /// Bytes not yet in a part.
    buffer: Vec<u8>,
    /// The open multipart upload, once the first part is due.
    upload_id: Option<String>,
    /// CreateMultipartUpload, while it runs.
    creating: Option<JoinHandle<Result<String, StorageError>>>,
    /// Parts sent.
    done: Vec<Part>,
    /// Parts being sent, in order.
    in_flight: VecDeque<JoinHandle<Result<Part, StorageError>>>,
    next_part: u32,
    /// A tail object of an earlier, interrupted upload exists: removed at commit.
    had_tail: bool,
    /// The first failure of a part: every later write and the commit report it.
    failed: Option<StorageError>,
    /// Stores without the direct multipart client (GCS, Azure Blob): OpenDAL's own writer,
    /// in a task fed part by part, once the first part is full.
    writer: Option<WriterFeed>,
    /// Bytes handed to the writer task.
    fed: u64,
}

/// What the writer task is fed.
enum Feed {
    Bytes(Bytes),
    /// Everything was sent: close (publish). The channel closing without it is an abort.
    Commit,
}

/// OpenDAL's writer, in a task of its own (its `write` and `close` are async; `poll_write`
/// hands it whole parts through a channel as deep as `parts_in_flight`).
struct WriterFeed {
    sender: tokio_util::sync::PollSender<Feed>,
    task: JoinHandle<Result<(), StorageError>>,
}

impl WriterFeed {
    fn start(inner: &Inner, object_path: &str) -> Self {
        let settings = &inner.settings;
        let (sender, mut receiver) = tokio::sync::mpsc::channel(settings.parts_in_flight);
        let operator = inner.operator.clone();
        let object_path = object_path.to_owned();
        let (chunk, concurrent) = (settings.part_size, settings.parts_in_flight);
        let task = tokio::spawn(async move {
            let failed = |error| from_opendal(error, &format!("writing {object_path}"));
            let mut writer = operator
                .writer_with(&object_path)
                .chunk(chunk)
                .concurrent(concurrent)
                .await
                .map_err(failed)?;
            while let Some(feed) = receiver.recv().await {
                match feed {
                    Feed::Bytes(bytes) => {
                        if let Err(error) = writer.write(bytes).await {
                            let _ = writer.abort().await;
                            return Err(failed(error));
                        }
                    }
                    Feed::Commit => return writer.close().await.map(drop).map_err(failed),
                }
            }
            // Abandoned: nothing is published (no resume on these stores).
            writer.abort().await.map_err(failed)
        });
        Self {
            sender: tokio_util::sync::PollSender::new(sender),
            task,
        }
    }
}

impl ObjectUpload {
    /// Prepares the upload's starting point for `mode` (see [`WriteMode`]): nothing, the
    /// committed object (copied server-side, but for its last partial part), or an
    /// interrupted upload's parts and tail. Refusals (`InvalidRange`) change nothing.
    pub(crate) async fn start(
        inner: Arc<Inner>,
        claim: UploadClaim,
        path: VirtualPath,
        object_path: String,
        mode: WriteMode,
    ) -> Result<Self, StorageError> {
        if mode != WriteMode::Create && inner.multipart.is_none() {
            return Err(StorageError::new(
                StorageErrorKind::Unsupported,
                format!("{path}: this store keeps no resume state (APPE, REST + STOR)"),
            ));
        }
        let key = inner.keys.full(&object_path);
        let mut state = UploadState {
            buffer: inner.part_buffers.take(),
            inner,
            claim,
            object_path,
            key,
            upload_id: None,
            creating: None,
            done: Vec::new(),
            in_flight: VecDeque::new(),
            next_part: 1,
            had_tail: false,
            failed: None,
            writer: None,
            fed: 0,
        };
        let initial_len = match mode {
            WriteMode::Create => {
                state.inner.discard_partial(&state.object_path).await?;
                0
            }
            WriteMode::Append => state.start_from_resumable(None, &path).await?,
            WriteMode::ResumeAt(offset) => state.start_from_resumable(Some(offset), &path).await?,
        };
        Ok(Self {
            path,
            initial_len,
            state: Some(state),
        })
    }
}

impl UploadState {
    /// Builds on the resumable content cut at `cut` (`None`: all of it, APPE) and returns
    /// its length.
    async fn start_from_resumable(
        &mut self,
        cut: Option<u64>,
        path: &VirtualPath,
    ) -> Result<u64, StorageError> {
        let beyond = |length: u64, what: &str| {
            StorageError::new(
                StorageErrorKind::InvalidRange,
                format!("resuming {path} at {cut:?}: {what} has {length} bytes"),
            )
        };
        if let Some(committed) = self.inner.stat_file(&self.object_path).await? {
            let size = committed.content_length();
            let keep = cut.unwrap_or(size);
            if keep > size {
                return Err(beyond(size, "the file"));
            }
            self.inner.discard_partial(&self.object_path).await?;
            self.start_from_committed(keep, committed.etag()).await?;
            return Ok(keep);
        }
        let Some(found) = PartialState::find(&self.inner, &self.object_path).await? else {
            return match cut {
                Some(0) | None => Ok(0),
                Some(_) => Err(beyond(0, "nothing")),
            };
        };
        let keep = cut.unwrap_or(found.len());
        if keep > found.len() {
            return Err(beyond(found.len(), "the interrupted upload"));
        }
        self.start_from_partial(found, keep, path).await?;
        Ok(keep)
    }

    /// The first `keep` bytes of the committed object: whole parts copied inside the store,
    /// the rest (less than a part) read into the buffer.
    async fn start_from_committed(
        &mut self,
        keep: u64,
        etag: Option<&str>,
    ) -> Result<(), StorageError> {
        let part_size = self.inner.settings.part_size as u64;
        let copied = keep - keep % part_size;
        if copied > 0 {
            let inner = Arc::clone(&self.inner);
            let multipart = multipart_of(&inner)?;
            let upload_id = multipart.create(&self.key).await?;
            self.upload_id = Some(upload_id.clone());
            let range_len = (COPY_RANGE / part_size).max(1) * part_size;
            let mut first = 0;
            while first < copied {
                let last = (first + range_len).min(copied) - 1;
                let part = multipart
                    .copy_part(
                        &self.key,
                        &upload_id,
                        self.next_part,
                        &self.key,
                        (first, last),
                    )
                    .await;
                match part {
                    Ok(part) => self.done.push(part),
                    Err(error) => {
                        self.abort_quietly().await;
                        return Err(error);
                    }
                }
                self.next_part += 1;
                first = last + 1;
            }
        }
        if keep > copied {
            let mut read = self
                .inner
                .operator
                .read_with(&self.object_path)
                .range(copied..keep);
            if let Some(etag) = etag {
                read = read.if_match(etag);
            }
            match read.await {
                Ok(bytes) => self.buffer.extend_from_slice(&bytes.to_bytes()),
                Err(error) => {
                    self.abort_quietly().await;
                    return Err(from_opendal(
                        error,
                        &format!("reading {}", self.object_path),
                    ));
                }
            }
        }
        Ok(())
    }

    /// An interrupted upload's parts and tail, cut at `keep`. A cut inside a part that was
    /// sent cannot be served (S3 cannot read a part back before completion): it is refused,
    /// unless it falls on a part boundary.
    async fn start_from_partial(
        &mut self,
        found: PartialState,
        keep: u64,
        path: &VirtualPath,
    ) -> Result<(), StorageError> {
        let parts_len = found.parts_len();
        let mut parts = found.parts;
        if keep < parts_len {
            // Whole parts only: the cut must fall on a boundary between two of them.
            let (mut length, mut count) = (0, 0);
            for part in &parts {
                if length + part.size > keep {
                    break;
                }
                length += part.size;
                count += 1;
            }
            if length != keep {
                return Err(StorageError::new(
                    StorageErrorKind::InvalidRange,
                    format!(
                        "resuming {path} at {keep}: inside a part already sent to the store \
                         (resume at {} or at a multiple of the part size)",
                        found.tail_len + parts_len
                    ),
                ));
            }
            parts.truncate(count);
        } else {
            let tail = partial::read_tail(&self.inner, &self.object_path, keep - parts_len).await?;
            self.buffer.extend_from_slice(&tail);
        }
        let inner = Arc::clone(&self.inner);
        let multipart = multipart_of(&inner)?;
        for stale in &found.stale_uploads {
            multipart.abort(&self.key, stale).await?;
        }
        self.next_part = u32::try_from(parts.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        self.done = parts;
        self.upload_id = found.upload_id;
        self.had_tail = true;
        Ok(())
    }

    /// Accepts bytes into the buffer, sending full parts as it goes; `Pending` while the
    /// parts in flight are at their limit (backpressure down to the data connection).
    fn poll_accept(&mut self, context: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let part_size = self.inner.settings.part_size;
        loop {
            if let Some(error) = &self.failed {
                return Poll::Ready(Err(io::Error::other(error.to_string())));
            }
            self.collect_finished(context);
            if self.buffer.len() < part_size {
                let room = part_size - self.buffer.len();
                let taken = room.min(bytes.len());
                self.buffer.extend_from_slice(&bytes[..taken]);
                return Poll::Ready(Ok(taken));
            }
            if self.inner.multipart.is_none() {
                ready!(self.poll_feed_writer(context));
                continue;
            }
            // A full part: it needs the multipart upload, and room among the parts in
            // flight.
            let Some(upload_id) = self.upload_id.clone() else {
                ready!(self.poll_create(context));
                continue;
            };
            if self.in_flight.len() >= self.inner.settings.parts_in_flight {
                ready!(self.poll_oldest(context));
                continue;
            }
            let next = self.inner.part_buffers.take();
            let data = self
                .inner
                .part_buffers
                .share(std::mem::replace(&mut self.buffer, next));
            self.send_part(upload_id, data);
        }
    }

    /// Hands the full buffer to the writer task (started on the first part).
    fn poll_feed_writer(&mut self, context: &mut Context<'_>) -> Poll<()> {
        let writer = self
            .writer
            .get_or_insert_with(|| WriterFeed::start(&self.inner, &self.object_path));
        let sent = match ready!(writer.sender.poll_reserve(context)) {
            Ok(()) => {
                let next = self.inner.part_buffers.take();
                let data = std::mem::replace(&mut self.buffer, next);
                self.fed += data.len() as u64;
                let data = self.inner.part_buffers.share(data);
                writer.sender.send_item(Feed::Bytes(data)).is_ok()
            }
            Err(_) => false,
        };
        if !sent && self.failed.is_none() {
            // The task ended early: its error is reported by commit.
            self.failed = Some(StorageError::new(
                StorageErrorKind::Transient,
                format!("writing {}: the writer stopped", self.object_path),
            ));
        }
        Poll::Ready(())
    }

    fn send_part(&mut self, upload_id: String, data: Bytes) {
        let inner = Arc::clone(&self.inner);
        let key = self.key.clone();
        let number = self.next_part;
        self.next_part += 1;
        self.in_flight.push_back(tokio::spawn(async move {
            let multipart = inner.multipart.as_ref().ok_or_else(|| {
                StorageError::new(StorageErrorKind::Unsupported, "multipart upload")
            })?;
            multipart.upload_part(&key, &upload_id, number, data).await
        }));
    }

    fn poll_create(&mut self, context: &mut Context<'_>) -> Poll<()> {
        let creating = self.creating.get_or_insert_with(|| {
            let inner = Arc::clone(&self.inner);
            let key = self.key.clone();
            tokio::spawn(async move {
                let multipart = inner.multipart.as_ref().ok_or_else(|| {
                    StorageError::new(StorageErrorKind::Unsupported, "multipart upload")
                })?;
                multipart.create(&key).await
            })
        });
        let created = ready!(Pin::new(creating).poll(context));
        self.creating = None;
        match flatten(created) {
            Ok(upload_id) => self.upload_id = Some(upload_id),
            Err(error) => self.failed = Some(error),
        }
        Poll::Ready(())
    }

    /// Waits for the oldest part in flight.
    fn poll_oldest(&mut self, context: &mut Context<'_>) -> Poll<()> {
        let Some(oldest) = self.in_flight.front_mut() else {
            return Poll::Ready(());
        };
        let sent = ready!(Pin::new(oldest).poll(context));
        self.in_flight.pop_front();
        self.record(flatten(sent));
        Poll::Ready(())
    }

    /// Takes the parts that have finished, in order, without waiting.
    fn collect_finished(&mut self, context: &mut Context<'_>) {
        while let Some(oldest) = self.in_flight.front_mut() {
            let Poll::Ready(sent) = Pin::new(oldest).poll(context) else {
                return;
            };
            self.in_flight.pop_front();
            self.record(flatten(sent));
        }
    }

    fn record(&mut self, sent: Result<Part, StorageError>) {
        match sent {
            Ok(part) => self.done.push(part),
            Err(error) => {
                if self.failed.is_none() {
                    self.failed = Some(error);
                }
            }
        }
    }

    /// Waits for every part in flight; the first failure is the upload's.
    async fn settle(&mut self) -> Result<(), StorageError> {
        if let Some(creating) = self.creating.take() {
            match flatten(creating.await) {
                Ok(upload_id) => self.upload_id = Some(upload_id),
                Err(error) => self.failed = self.failed.take().or(Some(error)),
            }
        }
        while let Some(oldest) = self.in_flight.pop_front() {
            let sent = flatten(oldest.await);
            self.record(sent);
        }
        match &self.failed {
            Some(error) => Err(StorageError::new(error.kind, error.detail.clone())),
            None => Ok(()),
        }
    }

    fn total(&self) -> u64 {
        self.done.iter().map(|part| part.size).sum::<u64>() + self.buffer.len() as u64
    }

    /// Publishes: the last part and CompleteMultipartUpload, or one PutObject when the
    /// whole file fits in the buffer. The previous version is replaced in one step.
    async fn commit(mut self) -> Result<u64, StorageError> {
        if let Some(writer) = self.writer.take() {
            return self.commit_writer(writer).await;
        }
        self.settle().await?;
        let total = self.total();
        let published = match self.upload_id.clone() {
            None => {
                let data = self
                    .inner
                    .part_buffers
                    .share(std::mem::take(&mut self.buffer));
                self.inner
                    .operator
                    .write(&self.object_path, data.clone())
                    .await
                    .map(drop)
                    .map_err(|error| {
                        self.buffer = data.to_vec();
                        from_opendal(error, &format!("writing {}", self.object_path))
                    })
            }
            Some(upload_id) => self.complete(&upload_id).await,
        };
        if let Err(error) = published {
            // Keep what can be kept for a resume, then report the failure.
            let kept = self.abandon().await;
            if let Err(abandon_error) = kept {
                tracing::warn!(error = %abandon_error, "keeping a failed upload for a resume failed");
            }
            return Err(error);
        }
        self.inner
            .part_buffers
            .give_back(std::mem::take(&mut self.buffer));
        if self.had_tail {
            let tail = crate::keys::tail_path(&self.object_path);
            if let Err(error) = self.inner.operator.delete(&tail).await {
                // Harmless: a tail naming a completed upload is ignored, then expires.
                tracing::warn!(%error, tail, "removing a resumed upload's tail failed");
            }
        }
        Ok(total)
    }

    /// The OpenDAL writer's end: the rest of the buffer, then close (which publishes).
    async fn commit_writer(mut self, writer: WriterFeed) -> Result<u64, StorageError> {
        let total = self.fed + self.buffer.len() as u64;
        let WriterFeed { sender, task } = writer;
        let sender = sender.get_ref().cloned();
        if let Some(sender) = sender {
            let rest = Bytes::from(std::mem::take(&mut self.buffer));
            let _ = sender.send(Feed::Bytes(rest)).await;
            let _ = sender.send(Feed::Commit).await;
        }
        flatten(task.await)?;
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        Ok(total)
    }

    async fn complete(&mut self, upload_id: &str) -> Result<(), StorageError> {
        let multipart = multipart_of(&self.inner)?;
        let mut parts = self.done.clone();
        if !self.buffer.is_empty() || parts.is_empty() {
            let data = Bytes::copy_from_slice(&self.buffer);
            parts.push(
                multipart
                    .upload_part(&self.key, upload_id, self.next_part, data)
                    .await?,
            );
        }
        multipart.complete(&self.key, upload_id, &parts).await
    }

    /// Stops without publishing: the parts stay in the open multipart upload, the bytes
    /// after them go to the tail object, for a resume.
    async fn abandon(mut self) -> Result<(), StorageError> {
        if let Some(WriterFeed { sender, task }) = self.writer.take() {
            // The channel closes without a commit: the writer task aborts (no resume here).
            drop(sender);
            return flatten(task.await);
        }
        let settled = self.settle().await;
        let mut parts = self.done.clone();
        parts.sort_by_key(|part| part.number);
        let consecutive = (1..)
            .zip(&parts)
            .take_while(|(number, part)| part.number == *number)
            .count();
        let gap = consecutive < parts.len() || settled.is_err();
        let offset: u64 = parts[..consecutive].iter().map(|part| part.size).sum();
        // After a failed part its bytes are lost: the resumable content ends at the last
        // part that was sent without a gap.
        let tail: &[u8] = if gap { &[] } else { &self.buffer };
        if self.upload_id.is_none() && tail.is_empty() {
            let tail_path = crate::keys::tail_path(&self.object_path);
            return self
                .inner
                .operator
                .delete(&tail_path)
                .await
                .map_err(|error| from_opendal(error, &format!("removing {tail_path}")));
        }
        let header = TailHeader {
            upload_id: self.upload_id.clone(),
            offset,
        };
        partial::write_tail(&self.inner, &self.object_path, &header, tail).await?;
        tracing::debug!(
            object = self.object_path,
            kept = offset + tail.len() as u64,
            "upload abandoned; kept for a resume"
        );
        Ok(())
    }

    /// Aborts the multipart upload this upload created, on a failed start.
    async fn abort_quietly(&mut self) {
        if let (Some(upload_id), Some(multipart)) = (self.upload_id.take(), &self.inner.multipart)
            && let Err(error) = multipart.abort(&self.key, &upload_id).await
        {
            tracing::warn!(%error, "aborting a multipart upload that failed to start");
        }
        self.done.clear();
        self.next_part = 1;
    }
}

/// The direct S3 client: uploads that are resumed or composed need it.
fn multipart_of(inner: &Inner) -> Result<&crate::multipart::S3Multipart, StorageError> {
    inner.multipart.as_ref().ok_or_else(|| {
        StorageError::new(
            StorageErrorKind::Unsupported,
            "resuming uploads needs an S3 store",
        )
    })
}

fn flatten<T>(
    joined: Result<Result<T, StorageError>, tokio::task::JoinError>,
) -> Result<T, StorageError> {
    joined.unwrap_or_else(|error| {
        Err(
            StorageError::new(StorageErrorKind::Local, "a part upload task ended")
                .with_source(error),
        )
    })
}

impl AsyncWrite for ObjectUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.state.as_mut() {
            Some(state) => state.poll_accept(context, bytes),
            None => Poll::Ready(Err(io::Error::other("the upload has ended"))),
        }
    }

    // Bytes are published only by commit, and a part is sent as soon as it is full: there
    // is nothing for a flush to do.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Upload for ObjectUpload {
    fn path(&self) -> &VirtualPath {
        &self.path
    }

    fn initial_len(&self) -> u64 {
        self.initial_len
    }

    /// Waits until every full part is stored (S3 keeps a part durably once it answered).
    /// The last, short part is sent by the commit.
    async fn make_durable(&mut self) -> Result<(), StorageError> {
        match self.state.as_mut() {
            Some(state) => state.settle().await,
            None => Ok(()),
        }
    }

    async fn commit(mut self: Box<Self>) -> Result<u64, StorageError> {
        match self.state.take() {
            Some(state) => state.commit().await,
            None => Err(StorageError::new(
                StorageErrorKind::Local,
                "the upload has ended",
            )),
        }
    }

    async fn abandon(mut self: Box<Self>) -> Result<(), StorageError> {
        match self.state.take() {
            Some(state) => state.abandon().await,
            None => Ok(()),
        }
    }
}

impl Drop for ObjectUpload {
    /// A client that vanished: abandon in the background (the claim on the name is held
    /// until that is done, so a resume waits for the tail to be written).
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        state.claim.mark_abandoning();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = state.abandon().await {
                        tracing::warn!(%error, "keeping a dropped upload for a resume failed");
                    }
                });
            }
            Err(_) => tracing::warn!(
                object = state.object_path,
                "an upload dropped outside the runtime: its unsent bytes are lost"
            ),
        }
    }
}
