//! The single `bindgen!` call and the thin glue from WIT calls to the
//! storage core. Only this module sees generated types: each host function
//! resolves the guest's location against its grants, calls the [`Session`],
//! and converts the result. Guest mistakes and backend failures come back
//! as WIT errors; only a broken host invariant (a stale resource handle)
//! traps.

use bytes::Bytes;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use super::streams::{MAX_LINE, ReadStream, WriterState};
use super::{Invocation, MAX_PLUGIN_MESSAGE};
use crate::cache::Entry;
use crate::error::StorageError;
use crate::store::{Condition, ObjectMeta, PutOptions};
use crate::vfs::{Access, Location, MAX_LIST_LIMIT};

wasmtime::component::bindgen!({
    world: "upload-plugin",
    path: "../wit",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "silo:plugin/files.writer": crate::runtime::streams::WriterState,
    },
});

pub use exports::silo::plugin::handler::{DeriveRequest, DerivedFile, Outcome, Upload};
use silo::plugin::types;
pub use types::ObjectInfo;

type GuestResult<T> = wasmtime::Result<Result<T, types::Error>>;

pub(crate) fn add_to_linker(linker: &mut Linker<Invocation>) -> wasmtime::Result<()> {
    // WASI (wasi:io included) is linked separately by wasmtime-wasi.
    silo::plugin::types::add_to_linker::<Invocation, HasSelf<Invocation>>(linker, |s| s)?;
    silo::plugin::files::add_to_linker::<Invocation, HasSelf<Invocation>>(linker, |s| s)?;
    silo::plugin::log::add_to_linker::<Invocation, HasSelf<Invocation>>(linker, |s| s)
}

impl From<StorageError> for types::Error {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => types::Error::NotFound,
            StorageError::AlreadyExists => types::Error::AlreadyExists,
            StorageError::PreconditionFailed => types::Error::PreconditionFailed,
            StorageError::AccessDenied => types::Error::AccessDenied,
            StorageError::InvalidPath(m) => types::Error::InvalidPath(m),
            StorageError::TooLarge => types::Error::TooLarge,
            StorageError::QuotaExceeded(_) => types::Error::QuotaExceeded,
            StorageError::Unsupported(_) => types::Error::Unsupported,
            StorageError::Unavailable(m) => types::Error::Unavailable(m),
            StorageError::Busy(m) => types::Error::Unavailable(format!("busy: {m}")),
            StorageError::Forbidden(m) => types::Error::Forbidden(m),
        }
    }
}

impl From<types::Error> for StorageError {
    fn from(e: types::Error) -> Self {
        match e {
            types::Error::NotFound => StorageError::NotFound,
            types::Error::AlreadyExists => StorageError::AlreadyExists,
            types::Error::PreconditionFailed => StorageError::PreconditionFailed,
            types::Error::AccessDenied => StorageError::AccessDenied,
            types::Error::InvalidPath(m) => StorageError::InvalidPath(plugin_message(m)),
            types::Error::TooLarge => StorageError::TooLarge,
            types::Error::QuotaExceeded => StorageError::QuotaExceeded("reported by the plugin".into()),
            types::Error::Unsupported => StorageError::Unsupported("reported by the plugin".into()),
            types::Error::Unavailable(m) => StorageError::Unavailable(plugin_message(m)),
            types::Error::Forbidden(m) => StorageError::Forbidden(plugin_message(m)),
        }
    }
}

/// A message a plugin returned, cut to [`MAX_PLUGIN_MESSAGE`] bytes.
fn plugin_message(mut m: String) -> String {
    if m.len() > MAX_PLUGIN_MESSAGE {
        let kept = super::streams::clip(&m, MAX_PLUGIN_MESSAGE).len();
        m.truncate(kept);
        m.push_str(" [truncated]");
    }
    m
}

impl From<&ObjectMeta> for ObjectInfo {
    fn from(m: &ObjectMeta) -> Self {
        ObjectInfo {
            size: m.size,
            etag: m.etag.clone(),
            content_type: m.content_type.clone(),
            modified_ms: m.modified_ms,
        }
    }
}

impl From<&Location> for types::Location {
    fn from(l: &Location) -> Self {
        types::Location {
            volume: l.volume.clone(),
            path: l.path.to_string(),
        }
    }
}

fn put_options(o: types::WriteOptions) -> PutOptions {
    PutOptions {
        content_type: o.content_type.unwrap_or_default(),
        cache_control: o.cache_control,
        metadata: o.metadata,
        content_disposition: None,
        headers: Default::default(),
        condition: o.condition.map(|c| match c {
            types::Condition::CreateOnly => Condition::CreateOnly,
            types::Condition::IfEtagMatches(etag) => Condition::IfMatch(etag),
        }),
        etag: None,
    }
}

impl Invocation {
    fn at(&self, file: &types::Location, access: Access) -> Result<Location, types::Error> {
        Ok(self.session.resolve(&file.volume, &file.path, access)?)
    }
}

impl silo::plugin::types::Host for Invocation {}

impl silo::plugin::files::Host for Invocation {
    async fn stat(&mut self, file: types::Location) -> GuestResult<ObjectInfo> {
        let loc = match self.at(&file, Access::Read) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.session.stat(&loc).await.map(|m| (&m).into()).map_err(Into::into))
    }

    async fn exists(&mut self, file: types::Location) -> GuestResult<bool> {
        let loc = match self.at(&file, Access::Read) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.session.exists(&loc).await.map_err(Into::into))
    }

    async fn read(&mut self, file: types::Location) -> GuestResult<Vec<u8>> {
        let loc = match self.at(&file, Access::Read) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.session.read(&loc).await.map_err(Into::into))
    }

    async fn read_range(&mut self, file: types::Location, offset: u64, length: u64) -> GuestResult<Vec<u8>> {
        let loc = match self.at(&file, Access::Read) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.session.read_range(&loc, offset, length).await.map_err(Into::into))
    }

    async fn open_read(&mut self, file: types::Location) -> GuestResult<Resource<DynInputStream>> {
        let loc = match self.at(&file, Access::Read) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        let Some(slot) = self.readers.take() else {
            return Ok(Err(types::Error::QuotaExceeded));
        };
        match self.session.open_read(&loc, None).await {
            Ok((_, body)) => {
                let stream: DynInputStream = Box::new(ReadStream::new(body, slot));
                Ok(Ok(self.table.push(stream)?))
            }
            Err(e) => Ok(Err(e.into())),
        }
    }

    async fn write(
        &mut self,
        file: types::Location,
        data: Vec<u8>,
        options: types::WriteOptions,
    ) -> GuestResult<ObjectInfo> {
        let loc = match self.at(&file, Access::Write) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        let result = self.session.write(&loc, Bytes::from(data), put_options(options)).await;
        Ok(result.map(|m| (&m).into()).map_err(Into::into))
    }

    async fn open_write(
        &mut self,
        file: types::Location,
        options: types::WriteOptions,
    ) -> GuestResult<Resource<WriterState>> {
        let loc = match self.at(&file, Access::Write) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        let Some(slot) = self.writers.take() else {
            return Ok(Err(types::Error::QuotaExceeded));
        };
        match self.session.open_write(&loc, put_options(options)).await {
            Ok(upload) => {
                let budget = self.session.storage().budget().clone();
                Ok(Ok(self.table.push(WriterState::new(upload, budget, slot, 0))?))
            }
            Err(e) => Ok(Err(e.into())),
        }
    }

    async fn list(
        &mut self,
        volume: String,
        prefix: String,
        options: types::ListOptions,
    ) -> GuestResult<types::ListPage> {
        let limit = (options.limit as usize).min(MAX_LIST_LIMIT);
        let page = match self
            .session
            .list(&volume, &prefix, options.recursive, options.cursor.as_deref(), limit)
            .await
        {
            Ok(p) => p,
            Err(e) => return Ok(Err(e.into())),
        };
        let mut out = types::ListPage {
            files: Vec::new(),
            directories: Vec::new(),
            next_cursor: page.next_cursor,
        };
        for entry in page.entries {
            match entry {
                Entry::File { path, meta } => out.files.push(types::ListEntry {
                    path,
                    info: (&meta).into(),
                }),
                Entry::Dir { path } => out.directories.push(path),
            }
        }
        Ok(Ok(out))
    }

    async fn delete(&mut self, file: types::Location) -> GuestResult<()> {
        let loc = match self.at(&file, Access::Delete) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.session.delete(&loc).await.map_err(Into::into))
    }

    async fn copy(
        &mut self,
        source: types::Location,
        destination: types::Location,
        options: types::WriteOptions,
    ) -> GuestResult<ObjectInfo> {
        let (from, to) = match (self.at(&source, Access::Read), self.at(&destination, Access::Write)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        };
        let result = self.session.copy(&from, &to, put_options(options)).await;
        Ok(result.map(|m| (&m).into()).map_err(Into::into))
    }

    async fn rename(&mut self, source: types::Location, destination: types::Location) -> GuestResult<ObjectInfo> {
        let checks = (
            self.at(&source, Access::Read),
            self.at(&source, Access::Delete),
            self.at(&destination, Access::Write),
        );
        let (from, to) = match checks {
            (Ok(f), Ok(_), Ok(t)) => (f, t),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Ok(Err(e)),
        };
        let result = self.session.rename(&from, &to).await;
        Ok(result.map(|m| (&m).into()).map_err(Into::into))
    }

    async fn url(&mut self, file: types::Location, expires_in_seconds: u32) -> GuestResult<String> {
        let loc = match self.at(&file, Access::Read) {
            Ok(l) => l,
            Err(e) => return Ok(Err(e)),
        };
        let expires_in = std::time::Duration::from_secs(expires_in_seconds.into());
        Ok(self.session.url(&loc, expires_in).await.map_err(Into::into))
    }
}

impl silo::plugin::files::HostWriter for Invocation {
    async fn content(&mut self, writer: Resource<WriterState>) -> GuestResult<Resource<DynOutputStream>> {
        let state = self.table.get_mut(&writer)?;
        match state.take_stream() {
            Some(stream) => {
                let stream: DynOutputStream = Box::new(stream);
                Ok(Ok(self.table.push_child(stream, &writer)?))
            }
            None => Ok(Err(types::Error::Unavailable(
                "the writer's content stream was already taken".into(),
            ))),
        }
    }

    async fn finish(&mut self, writer: Resource<WriterState>) -> GuestResult<ObjectInfo> {
        let state = self.table.delete(writer)?;
        Ok(state.finish().await.map(|m| (&m).into()).map_err(Into::into))
    }

    async fn drop(&mut self, writer: Resource<WriterState>) -> wasmtime::Result<()> {
        // Dropping the upload discards the temporary object.
        self.table.delete(writer)?;
        Ok(())
    }
}

impl silo::plugin::log::Host for Invocation {
    async fn log(&mut self, level: silo::plugin::log::Level, message: String) -> wasmtime::Result<()> {
        use silo::plugin::log::Level;
        let message = super::streams::clip(&message, MAX_LINE);
        let kept = self.log.take(message.len());
        let message = super::streams::clip(message, kept);
        if message.is_empty() {
            return Ok(());
        }
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}
