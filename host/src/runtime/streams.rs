//! `wasi:io` streams over storage: reads use wasmtime-wasi's
//! `AsyncReadStream` over the backend's body; writes go through
//! [`WriteStream`], which buffers at most [`WRITE_CHUNK`] bytes before
//! handing them to the backend upload, so an object of any size streams
//! through bounded memory. Every buffered byte is first reserved from the
//! host's write budget (the guest is told to wait while there is none) and
//! handed with the bytes to the upload (see [`crate::budget`]). Each stream
//! holds a slot of its invocation's open-stream limit until dropped.
//! The guest's log output (stdout, stderr, `log`) goes to `tracing`, line
//! by line, tagged with the plugin's name, within one budget per
//! invocation.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::pipe::AsyncReadStream;
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

use crate::budget::{Held, WriteBudget};
use crate::error::StorageError;
use crate::store::ObjectMeta;
use crate::vfs::SessionUpload;

/// Bytes a guest may hand over before the host writes them out.
pub const WRITE_CHUNK: usize = 1 << 20;
/// The first reservation a writer makes; it doubles up to [`WRITE_CHUNK`],
/// so a writer given a few bytes holds little of the budget.
const FIRST_RESERVATION: usize = 64 * 1024;

/// Streams of one kind an invocation has open, against its limit.
#[derive(Clone)]
pub(crate) struct OpenStreams {
    open: Arc<std::sync::atomic::AtomicUsize>,
    max: usize,
}

/// One open stream's place in [`OpenStreams`], given back when dropped.
pub(crate) struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl OpenStreams {
    pub(crate) fn new(max: usize) -> Self {
        OpenStreams {
            open: Arc::default(),
            max,
        }
    }

    /// A slot, or `None` when `max` streams are open.
    pub(crate) fn take(&self) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| Slot(self.open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A read stream holding its slot.
pub(crate) struct ReadStream {
    inner: AsyncReadStream,
    _slot: Slot,
}

impl ReadStream {
    pub(crate) fn new(body: crate::store::ByteStream, slot: Slot) -> Self {
        ReadStream {
            inner: AsyncReadStream::new(body),
            _slot: slot,
        }
    }
}

#[async_trait::async_trait]
impl InputStream for ReadStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        self.inner.read(size)
    }
}

#[async_trait::async_trait]
impl Pollable for ReadStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

/// Shared between the `writer` resource and its output stream.
struct WriteShared {
    upload: Option<SessionUpload>,
    buffer: BytesMut,
    /// The write budget reserved for `buffer` and the room beyond it.
    held: Held,
    budget: WriteBudget,
    flush_requested: bool,
    failed: Option<StorageError>,
    /// Bytes of content so far: written out, buffered, and any the upload
    /// was seeded with.
    position: u64,
    /// Finished or discarded: its streams accept nothing more.
    closed: bool,
}

type Shared = Arc<Mutex<WriteShared>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, WriteShared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Push buffered bytes to the upload. The lock is never held across I/O.
async fn drain(shared: &Shared) {
    let (upload, data, held) = {
        let mut s = lock(shared);
        if s.buffer.is_empty() || s.failed.is_some() {
            s.flush_requested = false;
            return;
        }
        let data = s.buffer.split().freeze();
        let held = s.held.split(data.len());
        (s.upload.take(), data, held)
    };
    let Some(mut upload) = upload else { return };
    let result = upload.write(data, held).await;
    let mut s = lock(shared);
    s.upload = Some(upload);
    s.flush_requested = false;
    if let Err(e) = result {
        s.failed = Some(e);
    }
}

/// The host side of the WIT `writer` resource.
pub struct WriterState {
    shared: Shared,
    stream: Option<WriteStream>,
    _slot: Slot,
}

impl WriterState {
    /// A writer whose upload already holds `position` bytes.
    pub(crate) fn new(upload: SessionUpload, budget: WriteBudget, slot: Slot, position: u64) -> Self {
        let shared: Shared = Arc::new(Mutex::new(WriteShared {
            upload: Some(upload),
            buffer: BytesMut::new(),
            held: Held::default(),
            budget,
            flush_requested: false,
            failed: None,
            position,
            closed: false,
        }));
        WriterState {
            stream: Some(WriteStream { shared: shared.clone() }),
            shared,
            _slot: slot,
        }
    }

    pub(crate) fn take_stream(&mut self) -> Option<WriteStream> {
        self.stream.take()
    }

    /// Another stream appending to the same content (wasi:filesystem asks
    /// for one per position).
    pub(crate) fn stream(&self) -> WriteStream {
        WriteStream {
            shared: self.shared.clone(),
        }
    }

    /// Where the next byte goes.
    pub(crate) fn position(&self) -> u64 {
        lock(&self.shared).position
    }

    /// Append `data` (already in host memory, and reserved by the caller),
    /// after whatever a stream buffered, and write it out.
    pub(crate) async fn append(&self, data: Bytes, held: Held) -> Result<(), StorageError> {
        {
            let mut s = lock(&self.shared);
            if let Some(e) = &s.failed {
                return Err(e.clone());
            }
            if s.closed {
                return Err(StorageError::unavailable("the write is already finished"));
            }
            s.buffer.extend_from_slice(&data);
            s.held.merge(held);
            s.position += data.len() as u64;
        }
        drain(&self.shared).await;
        match &lock(&self.shared).failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Write out what is buffered and commit the object.
    pub(crate) async fn finish(self) -> Result<ObjectMeta, StorageError> {
        drain(&self.shared).await;
        let upload = {
            let mut s = lock(&self.shared);
            s.closed = true;
            if let Some(e) = s.failed.take() {
                return Err(e);
            }
            s.upload.take()
        };
        let upload = upload.ok_or_else(|| StorageError::unavailable("the write is still in progress"))?;
        upload.finish().await
    }
}

impl Drop for WriterState {
    fn drop(&mut self) {
        // Discarded unfinished: streams still open must not go on
        // accepting bytes that will never be stored.
        let mut s = lock(&self.shared);
        s.closed = true;
        s.upload = None;
        s.buffer.clear();
        s.held = Held::default();
    }
}

/// The output stream of a `writer`.
pub struct WriteStream {
    shared: Shared,
}

#[async_trait::async_trait]
impl OutputStream for WriteStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut s = lock(&self.shared);
        if s.closed {
            return Err(StreamError::Closed);
        }
        if s.buffer.len() + bytes.len() > s.held.bytes() {
            return Err(StreamError::trap("write exceeded the permit from check-write"));
        }
        s.buffer.extend_from_slice(&bytes);
        s.position += bytes.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        lock(&self.shared).flush_requested = true;
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let s = lock(&self.shared);
        if let Some(e) = &s.failed {
            // The storage error itself, so wasi:filesystem can name it.
            return Err(StreamError::LastOperationFailed(wasmtime::Error::new(e.clone())));
        }
        if s.closed {
            return Err(StreamError::Closed);
        }
        if s.flush_requested {
            return Ok(0);
        }
        // Only reserved room is offered; with none, the guest waits in
        // `ready`, which reserves more.
        Ok(s.held.bytes().saturating_sub(s.buffer.len()))
    }
}

#[async_trait::async_trait]
impl Pollable for WriteStream {
    async fn ready(&mut self) {
        let (due, want, budget) = {
            let s = lock(&self.shared);
            let room = s.held.bytes().saturating_sub(s.buffer.len());
            let want = s
                .held
                .bytes()
                .clamp(FIRST_RESERVATION, WRITE_CHUNK)
                .min(WRITE_CHUNK - s.buffer.len().min(WRITE_CHUNK));
            (
                s.flush_requested || s.buffer.len() >= WRITE_CHUNK,
                (room == 0 && s.failed.is_none() && !s.closed).then_some(want),
                s.budget.clone(),
            )
        };
        if due {
            drain(&self.shared).await;
            return;
        }
        if let Some(want) = want {
            // Waits in turn while the host's budget is spent; a wait past
            // its limit fails the write as `busy`.
            match budget.reserve(want).await {
                Ok(more) => lock(&self.shared).held.merge(more),
                Err(e) => {
                    let mut s = lock(&self.shared);
                    s.failed.get_or_insert(e);
                }
            }
        }
    }
}

/// Keep at most `max` bytes of `s`, on a character boundary.
pub(crate) fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Most bytes of log output kept per invocation, stdout, stderr and `log`
/// together; the rest is dropped (and counted in one warning).
pub const MAX_LOG_BYTES: usize = 64 * 1024;
/// Longest line or `log` message kept; longer ones are cut.
pub const MAX_LINE: usize = 4096;

/// What an invocation may still log, shared by its log streams.
#[derive(Clone, Default)]
pub(crate) struct LogBudget {
    used: Arc<std::sync::atomic::AtomicUsize>,
}

impl LogBudget {
    /// How many of `len` bytes may still be logged; all of them count.
    pub(crate) fn take(&self, len: usize) -> usize {
        let before = self.used.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        len.min(MAX_LOG_BYTES.saturating_sub(before))
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Guest stdout or stderr, forwarded to `tracing` line by line.
#[derive(Clone)]
pub(crate) struct GuestLog {
    inner: Arc<Mutex<LogState>>,
}

struct LogState {
    plugin: Arc<str>,
    stream: &'static str,
    line: Vec<u8>,
    budget: LogBudget,
}

impl GuestLog {
    pub(crate) fn new(plugin: Arc<str>, stream: &'static str, budget: LogBudget) -> Self {
        GuestLog {
            inner: Arc::new(Mutex::new(LogState {
                plugin,
                stream,
                line: Vec::new(),
                budget,
            })),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let take = s.budget.take(bytes.len());
        for &b in &bytes[..take] {
            if b == b'\n' || s.line.len() >= MAX_LINE {
                s.emit();
            }
            if b != b'\n' {
                s.line.push(b);
            }
        }
    }
}

impl LogState {
    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        tracing::info!(plugin = &*self.plugin, stream = self.stream, "{text}");
        self.line.clear();
    }
}

impl Drop for LogState {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for GuestLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

#[async_trait::async_trait]
impl Pollable for GuestLog {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestLog {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
