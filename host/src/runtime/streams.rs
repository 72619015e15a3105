//! `wasi:io` streams over storage: reads use wasmtime-wasi's
//! `AsyncReadStream` over the backend's body; writes go through
//! [`WriteStream`], which buffers at most [`WRITE_CHUNK`] bytes before
//! handing them to the backend upload, so an object of any size streams
//! through bounded memory. The guest's log output (stdout, stderr) goes to
//! `tracing`, line by line, tagged with the plugin's name.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::pipe::AsyncReadStream;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use crate::error::StorageError;
use crate::store::ObjectMeta;
use crate::vfs::SessionUpload;

/// Bytes a guest may hand over before the host writes them out.
pub const WRITE_CHUNK: usize = 1 << 20;

pub(crate) type ReadStream = AsyncReadStream;

/// Shared between the `writer` resource and its output stream.
#[derive(Default)]
struct WriteShared {
    upload: Option<SessionUpload>,
    buffer: BytesMut,
    flush_requested: bool,
    failed: Option<StorageError>,
}

type Shared = Arc<Mutex<WriteShared>>;

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, WriteShared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Push buffered bytes to the upload. The lock is never held across I/O.
async fn drain(shared: &Shared) {
    let (upload, data) = {
        let mut s = lock(shared);
        if s.buffer.is_empty() || s.failed.is_some() {
            s.flush_requested = false;
            return;
        }
        (s.upload.take(), s.buffer.split().freeze())
    };
    let Some(mut upload) = upload else { return };
    let result = upload.write(data).await;
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
}

impl WriterState {
    pub(crate) fn new(upload: SessionUpload) -> Self {
        let shared: Shared = Arc::new(Mutex::new(WriteShared {
            upload: Some(upload),
            ..Default::default()
        }));
        WriterState {
            stream: Some(WriteStream { shared: shared.clone() }),
            shared,
        }
    }

    pub(crate) fn take_stream(&mut self) -> Option<WriteStream> {
        self.stream.take()
    }

    /// Write out what is buffered and commit the object.
    pub(crate) async fn finish(self) -> Result<ObjectMeta, StorageError> {
        drain(&self.shared).await;
        let upload = {
            let mut s = lock(&self.shared);
            if let Some(e) = s.failed.take() {
                return Err(e);
            }
            s.upload.take()
        };
        let upload = upload.ok_or_else(|| StorageError::unavailable("the write is still in progress"))?;
        upload.finish().await
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
        if s.buffer.len() + bytes.len() > WRITE_CHUNK {
            return Err(StreamError::trap("write exceeded the permit from check-write"));
        }
        s.buffer.extend_from_slice(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        lock(&self.shared).flush_requested = true;
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let s = lock(&self.shared);
        if let Some(e) = &s.failed {
            return Err(StreamError::LastOperationFailed(wasmtime::format_err!("{e}")));
        }
        if s.flush_requested {
            return Ok(0);
        }
        Ok(WRITE_CHUNK - s.buffer.len())
    }
}

#[async_trait::async_trait]
impl Pollable for WriteStream {
    async fn ready(&mut self) {
        let due = {
            let s = lock(&self.shared);
            s.flush_requested || s.buffer.len() >= WRITE_CHUNK
        };
        if due {
            drain(&self.shared).await;
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

/// Most bytes of log output kept per invocation; the rest is dropped.
const MAX_LOG_BYTES: usize = 64 * 1024;
const MAX_LINE: usize = 4096;

/// Guest stdout or stderr, forwarded to `tracing` line by line.
#[derive(Clone)]
pub(crate) struct GuestLog {
    inner: Arc<Mutex<LogState>>,
}

struct LogState {
    plugin: Arc<str>,
    stream: &'static str,
    line: Vec<u8>,
    total: usize,
}

impl GuestLog {
    pub(crate) fn new(plugin: Arc<str>, stream: &'static str) -> Self {
        GuestLog {
            inner: Arc::new(Mutex::new(LogState {
                plugin,
                stream,
                line: Vec::new(),
                total: 0,
            })),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let take = bytes.len().min(MAX_LOG_BYTES.saturating_sub(s.total));
        s.total += bytes.len();
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
        if self.total > MAX_LOG_BYTES {
            tracing::warn!(
                plugin = &*self.plugin,
                "dropped {} bytes of {}",
                self.total - MAX_LOG_BYTES,
                self.stream
            );
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
