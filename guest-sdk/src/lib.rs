//! The Silo guest SDK: write Silo plugins in plain Rust.
//!
//! A plugin is a type implementing [`Plugin`], exported with
//! [`export_plugin!`], built for `wasm32-wasip2` as a `cdylib`. It reaches
//! storage through [`files`] (or `std::fs` on `/<volume>/...`, the same
//! storage), which Silo checks against the plugin's grants; everything
//! else (host files, network, environment) is closed.
//!
//! ```no_run
//! use silo_sdk::{files, Error, Outcome, Plugin, Upload};
//!
//! struct NoEmptyFiles;
//!
//! impl Plugin for NoEmptyFiles {
//!     fn on_upload(upload: Upload) -> Result<Outcome, Error> {
//!         if upload.info.size == 0 {
//!             return Ok(Outcome::Reject("empty files are not accepted".into()));
//!         }
//!         let head = files::read_range(&upload.file, 0, 16)?;
//!         silo_sdk::log::info(&format!("{} starts with {head:02x?}", upload.file.path));
//!         Ok(Outcome::Accept(Vec::new()))
//!     }
//! }
//!
//! silo_sdk::export_plugin!(NoEmptyFiles);
//! ```

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "upload-plugin",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_silo_bindings",
        default_bindings_module: "silo_sdk::bindings",
        generate_all,
    });
}

use bindings::exports::silo::plugin::handler as raw;
use bindings::silo::plugin::files as wit;
use bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};

pub use bindings::silo::plugin::types::{Condition, Error, ListEntry, ListPage, Location, ObjectInfo};
pub use raw::{DerivedFile, Outcome};

impl Location {
    /// A location in `volume` at `path`.
    pub fn new(volume: impl Into<String>, path: impl Into<String>) -> Self {
        Location {
            volume: volume.into(),
            path: path.into(),
        }
    }
}

/// An upload waiting for the plugin's verdict.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Where it will be stored; readable through [`files`] right now.
    pub file: Location,
    pub info: ObjectInfo,
    settings: Vec<(String, String)>,
}

/// A derivative requested before it exists.
#[derive(Debug, Clone)]
pub struct DeriveRequest {
    pub source: Location,
    pub style: String,
    pub target: Location,
    settings: Vec<(String, String)>,
    /// The transformation asked for (dynamic images), normalised by the host.
    pub params: Vec<(String, String)>,
}

fn lookup<'a>(settings: &'a [(String, String)], key: &str) -> Option<&'a str> {
    settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

impl Upload {
    /// A setting from this plugin's `settings` table in the host's config.
    pub fn setting(&self, key: &str) -> Option<&str> {
        lookup(&self.settings, key)
    }
}

impl DeriveRequest {
    /// A setting from this plugin's `settings` table in the host's config.
    pub fn setting(&self, key: &str) -> Option<&str> {
        lookup(&self.settings, key)
    }

    /// A parameter of the request (see the WIT's `derive-request`).
    pub fn param(&self, key: &str) -> Option<&str> {
        lookup(&self.params, key)
    }
}

/// A Silo plugin. Each call runs in a fresh instance: nothing (statics
/// included) survives from one call to the next.
pub trait Plugin {
    /// Judge an upload: accept it (listing any files derived from it) or
    /// reject it with a reason.
    fn on_upload(upload: Upload) -> Result<Outcome, Error>;

    /// Generate one derivative on request. The default refuses.
    fn on_derive(request: DeriveRequest) -> Result<DerivedFile, Error> {
        let _ = request;
        Err(Error::Unsupported)
    }
}

#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::exports::silo::plugin::handler::{DeriveRequest, Guest, Upload};

    pub fn upload(u: Upload) -> crate::Upload {
        crate::Upload {
            file: u.file,
            info: u.info,
            settings: u.settings,
        }
    }

    pub fn derive(r: DeriveRequest) -> crate::DeriveRequest {
        crate::DeriveRequest {
            source: r.source,
            style: r.style,
            target: r.target,
            settings: r.settings,
            params: r.params,
        }
    }
}

/// Export a [`Plugin`] implementation as the component's handler.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct SiloExport;
            impl $crate::__private::Guest for SiloExport {
                fn on_upload(u: $crate::__private::Upload) -> Result<$crate::Outcome, $crate::Error> {
                    <$plugin as $crate::Plugin>::on_upload($crate::__private::upload(u))
                }
                fn on_derive(r: $crate::__private::DeriveRequest) -> Result<$crate::DerivedFile, $crate::Error> {
                    <$plugin as $crate::Plugin>::on_derive($crate::__private::derive(r))
                }
            }
            // Component exports exist only on wasm: a native build (`cargo
            // build --workspace`, clippy) cannot link their names, and just
            // keeps the handlers alive.
            #[cfg(target_family = "wasm")]
    $crate::bindings::__export_silo_bindings!(SiloExport with_types_in $crate::bindings);
            #[cfg(not(target_family = "wasm"))]
            #[used]
            static HANDLERS: (
                fn($crate::__private::Upload) -> Result<$crate::Outcome, $crate::Error>,
                fn($crate::__private::DeriveRequest) -> Result<$crate::DerivedFile, $crate::Error>,
            ) = (
                <SiloExport as $crate::__private::Guest>::on_upload,
                <SiloExport as $crate::__private::Guest>::on_derive,
            );
        };
    };
}

/// Options for a write; see [`files::write_with`].
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    inner: Option<bindings::silo::plugin::types::WriteOptions>,
}

impl WriteOptions {
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&mut self) -> &mut bindings::silo::plugin::types::WriteOptions {
        self.inner
            .get_or_insert_with(|| bindings::silo::plugin::types::WriteOptions {
                content_type: None,
                cache_control: None,
                metadata: Vec::new(),
                condition: None,
            })
    }

    /// The MIME type (default: guessed from the path).
    pub fn content_type(mut self, t: impl Into<String>) -> Self {
        self.get().content_type = Some(t.into());
        self
    }

    pub fn cache_control(mut self, v: impl Into<String>) -> Self {
        self.get().cache_control = Some(v.into());
        self
    }

    /// Add a user metadata pair.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.get().metadata.push((key.into(), value.into()));
        self
    }

    /// Fail with [`Error::AlreadyExists`] if the file exists.
    pub fn create_only(mut self) -> Self {
        self.get().condition = Some(Condition::CreateOnly);
        self
    }

    /// Fail with [`Error::PreconditionFailed`] unless the file's etag is `etag`.
    pub fn if_etag_matches(mut self, etag: impl Into<String>) -> Self {
        self.get().condition = Some(Condition::IfEtagMatches(etag.into()));
        self
    }

    fn into_wit(mut self) -> bindings::silo::plugin::types::WriteOptions {
        self.get();
        self.inner.take().unwrap_or_else(|| unreachable!())
    }
}

/// Storage, as granted to this plugin.
pub mod files {
    use super::*;

    /// Metadata of a file (served from Silo's cache).
    pub fn stat(file: &Location) -> Result<ObjectInfo, Error> {
        wit::stat(file)
    }

    pub fn exists(file: &Location) -> Result<bool, Error> {
        wit::exists(file)
    }

    /// The whole file; at most 16 MiB (else [`Error::TooLarge`]: use [`open_read`]).
    pub fn read(file: &Location) -> Result<Vec<u8>, Error> {
        wit::read(file)
    }

    /// Up to `length` bytes from `offset`.
    pub fn read_range(file: &Location, offset: u64, length: u64) -> Result<Vec<u8>, Error> {
        wit::read_range(file, offset, length)
    }

    /// A [`std::io::Read`] over the file, for files of any size.
    ///
    /// ```no_run
    /// use std::io::Read;
    /// # fn demo(file: &silo_sdk::Location) -> Result<(), Box<dyn std::error::Error>> {
    /// let mut reader = silo_sdk::files::open_read(file)?;
    /// let mut head = [0u8; 512];
    /// let n = reader.read(&mut head)?;
    /// # let _ = n; Ok(()) }
    /// ```
    pub fn open_read(file: &Location) -> Result<Reader, Error> {
        Ok(Reader {
            stream: wit::open_read(file)?,
            pending: Vec::new(),
        })
    }

    /// Store `data`, replacing any file there.
    pub fn write(file: &Location, data: &[u8]) -> Result<ObjectInfo, Error> {
        write_with(file, data, WriteOptions::new())
    }

    /// Store `data` with options (content type, condition, ...).
    pub fn write_with(file: &Location, data: &[u8], options: WriteOptions) -> Result<ObjectInfo, Error> {
        wit::write(file, data, &options.into_wit())
    }

    /// A [`std::io::Write`] that streams into a new file; call
    /// [`Writer::finish`] to commit it. Dropping it discards the file.
    ///
    /// ```no_run
    /// use std::io::Write;
    /// use silo_sdk::{files, Location, WriteOptions};
    /// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let target = Location::new("public", "reports/2026.csv");
    /// let mut out = files::create(&target, WriteOptions::new().content_type("text/csv").create_only())?;
    /// for row in 0..100_000 {
    ///     writeln!(out, "{row},ok")?;
    /// }
    /// let info = out.finish()?; // nothing is visible before this
    /// # let _ = info; Ok(()) }
    /// ```
    pub fn create(file: &Location, options: WriteOptions) -> Result<Writer, Error> {
        let writer = wit::open_write(file, &options.into_wit())?;
        let stream = writer.content()?;
        Ok(Writer {
            stream: Some(stream),
            writer: Some(writer),
        })
    }

    /// Pages of a listing: a directory's direct children, or (`recursive`)
    /// every file under a prefix. Each item is one page.
    ///
    /// ```no_run
    /// # fn demo() -> Result<u64, silo_sdk::Error> {
    /// let mut total = 0;
    /// for page in silo_sdk::files::pages("public", "styles", true) {
    ///     total += page?.files.iter().map(|f| f.info.size).sum::<u64>();
    /// }
    /// # Ok(total) }
    /// ```
    pub fn pages(volume: &str, prefix: &str, recursive: bool) -> Pages {
        Pages {
            volume: volume.into(),
            prefix: prefix.into(),
            recursive,
            cursor: None,
            done: false,
        }
    }

    pub fn delete(file: &Location) -> Result<(), Error> {
        wit::delete(file)
    }

    pub fn copy(source: &Location, destination: &Location, options: WriteOptions) -> Result<ObjectInfo, Error> {
        wit::copy(source, destination, &options.into_wit())
    }

    pub fn rename(source: &Location, destination: &Location) -> Result<ObjectInfo, Error> {
        wit::rename(source, destination)
    }

    /// A URL a browser can fetch the file from: the public URL on public
    /// volumes; on private S3 volumes a presigned URL that expires after
    /// `expires_in_seconds` (1 to 604800). `Error::Unsupported` where the
    /// volume has no such URL.
    pub fn url(file: &Location, expires_in_seconds: u32) -> Result<String, Error> {
        wit::url(file, expires_in_seconds)
    }

    /// Iterator over listing pages; see [`pages`].
    pub struct Pages {
        volume: String,
        prefix: String,
        recursive: bool,
        cursor: Option<String>,
        done: bool,
    }

    impl Iterator for Pages {
        type Item = Result<ListPage, Error>;

        fn next(&mut self) -> Option<Self::Item> {
            if self.done {
                return None;
            }
            let options = bindings::silo::plugin::types::ListOptions {
                recursive: self.recursive,
                cursor: self.cursor.take(),
                limit: 0,
            };
            let page = wit::list(&self.volume, &self.prefix, &options);
            match &page {
                Ok(p) => {
                    self.cursor = p.next_cursor.clone();
                    self.done = self.cursor.is_none();
                }
                Err(_) => self.done = true,
            }
            Some(page)
        }
    }

    /// A streamed read; see [`open_read`].
    pub struct Reader {
        stream: InputStream,
        pending: Vec<u8>,
    }

    impl std::io::Read for Reader {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.pending.is_empty() {
                match self.stream.blocking_read(64 * 1024) {
                    Ok(bytes) => self.pending = bytes,
                    Err(StreamError::Closed) => return Ok(0),
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(std::io::Error::other(e.to_debug_string()));
                    }
                }
            }
            let n = buf.len().min(self.pending.len());
            buf[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }
    }

    /// A streamed write; see [`create`].
    pub struct Writer {
        // Field order matters: the stream must be dropped before the writer.
        stream: Option<OutputStream>,
        writer: Option<wit::Writer>,
    }

    fn io_error(e: StreamError) -> std::io::Error {
        match e {
            StreamError::Closed => std::io::Error::new(std::io::ErrorKind::BrokenPipe, "stream closed"),
            StreamError::LastOperationFailed(e) => std::io::Error::other(e.to_debug_string()),
        }
    }

    impl Writer {
        /// Commit the file and return its metadata.
        pub fn finish(mut self) -> Result<ObjectInfo, Error> {
            if let Some(stream) = self.stream.take() {
                stream
                    .blocking_flush()
                    .map_err(|e| Error::Unavailable(io_error(e).to_string()))?;
            }
            let writer = self
                .writer
                .take()
                .ok_or(Error::Unavailable("writer already finished".into()))?;
            wit::Writer::finish(writer)
        }
    }

    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let stream = self.stream.as_ref().ok_or_else(|| io_error(StreamError::Closed))?;
            loop {
                let permit = stream.check_write().map_err(io_error)? as usize;
                if permit == 0 {
                    stream.subscribe().block();
                    continue;
                }
                let n = permit.min(buf.len());
                stream.write(&buf[..n]).map_err(io_error)?;
                return Ok(n);
            }
        }

        fn flush(&mut self) -> std::io::Result<()> {
            match &self.stream {
                Some(stream) => stream.blocking_flush().map_err(io_error),
                None => Ok(()),
            }
        }
    }
}

/// Messages for the host's log, tagged with the plugin's name.
pub mod log {
    use crate::bindings::silo::plugin::log::{Level, log};

    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}
