//! Silo runs untrusted CMS plugins, compiled to WebAssembly components,
//! against file storage they cannot escape.
//!
//! Layers, top to bottom: the doors ([`serve`]: the HTTP sidecar and the
//! S3 endpoint, which only translate), the client operations of [`Silo`]
//! (each takes the acting [`Caller`]: [`Silo::read`], [`Silo::put`],
//! [`Silo::copy`], [`Silo::delete`], [`Silo::list`], the multipart calls),
//! the storage core ([`vfs`]: volumes, path rules, grants, quotas) and the
//! object stores ([`store`], whose [`store::ObjectStore`] trait a custom
//! backend implements). [`Silo`] wires them together from a [`Config`].
//! Under them, private to the crate, are the plugin runtime (wasmtime and
//! the WIT bindings), the metadata cache, the upload pipeline and the
//! multipart store: no type of theirs appears in a public signature, which
//! `deny(private_interfaces, unnameable_types)` checks at every build.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use silo_host::listing::ListRequest;
//! use silo_host::serving::ReadRequest;
//! use silo_host::{Caller, Outcome, PutRequest, Silo};
//!
//! // Opened from silo.toml; recovery, audit upkeep and multipart expiry
//! // run for as long as `_background` lives.
//! let (silo, _background) = Silo::builder(".".as_ref()).config_file("silo.toml").serve().await?;
//! // An upload by the application itself, judged by the plugins.
//! let cms = Caller::Host("cms");
//! let body = futures_util::stream::iter([Ok(bytes::Bytes::from_static(b"hello"))]);
//! let request = PutRequest { content_type: Some("text/plain".into()), ..Default::default() };
//! let report = silo.put(&cms, "public", "notes/hello.txt", body, request).await?;
//! assert_eq!(report.outcome(), Outcome::Stored);
//! // A visitor's read: access, preconditions, range and headers decided here.
//! let served = silo.read(&Caller::Anonymous, "public", "notes/hello.txt", &ReadRequest::default()).await?;
//! println!("{} {:?}", served.status.code(), served.headers.to_header_map());
//! let page = silo.list(&cms, "public", &ListRequest { prefix: "notes/".into(), max: 100, ..Default::default() }).await?;
//! for (key, meta) in &page.contents {
//!     println!("{key}: {} bytes", meta.size);
//! }
//! # Ok(()) }
//! ```

// Silo's API names only Silo's types: a layer under it (the runtime and its
// generated bindings, the metadata cache, the pipeline) showing through a
// public signature is an error, not a warning.
#![deny(private_interfaces, private_bounds, unnameable_types)]
#![warn(missing_docs)]

/// Layers under Silo's API: private to the crate, and public (hidden from
/// the docs) only for the project's own tests and benchmarks, with the
/// `internals` feature.
macro_rules! internal_modules {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        mod $name;
    )*};
}
internal_modules!(budget, cache, hotcache, multipart, pipeline, readcache, runtime);

pub mod access;
pub mod admin;
pub mod audit;
pub mod builder;
#[cfg(feature = "bundled-plugins")]
pub mod bundled;
pub mod config;
pub mod cors;
pub mod error;
pub mod images;
pub mod listing;
pub mod maintenance;
mod memory;
pub mod metrics;
pub mod migrate;
pub mod path;
pub mod policy;
pub mod principals;
pub mod put;
#[cfg(feature = "http")]
pub mod serve;
pub mod serving;
pub mod store;
pub mod uploads;
pub mod vfs;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use access::{Caller, Denied, Op, RequestError};
pub use builder::SiloBuilder;
pub use config::{Config, ConfigError};
pub use error::StorageError;
pub use pipeline::{Derivative, ErrorReport, FileReport, PluginRun, Status, UploadReport};
pub use put::{CopyRequest, Description, Outcome, PutError, PutRequest, WriteConditions};
use runtime::Runtime;
pub use runtime::{Inspection, InvokeError, LoadError};
pub use store::{Checksum, Condition, Headers, ObjectMeta};
pub use uploads::{PartsPage, UploadError, UploadsPage};
pub use vfs::{Location, Session, Storage};

/// Why Silo could not start or could not take an upload.
#[derive(Debug, thiserror::Error)]
pub enum SiloError {
    #[error(transparent)]
    /// The configuration is invalid.
    Config(#[from] ConfigError),
    #[error(transparent)]
    /// A plugin could not be loaded.
    Load(#[from] LoadError),
    #[error(transparent)]
    /// The storage failed.
    Storage(#[from] StorageError),
    /// A file Silo needed could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    #[error("plugin '{plugin}': {message}")]
    /// A plugin failed.
    Plugin {
        /// The plugin's name.
        plugin: String,
        /// What went wrong.
        message: String,
    },
    /// The upload's own stream failed (a client went away mid-body).
    #[error("reading the upload: {0}")]
    Source(std::io::Error),
    /// The upload is larger than its volume takes.
    #[error("the upload is larger than volume '{volume}' takes ({limit} bytes; its `max_upload_mib`)")]
    TooLarge {
        /// The volume.
        volume: String,
        /// Its limit, in bytes.
        limit: u64,
    },
}

/// A configured Silo: volumes, metadata cache, runtime and upload pipeline.
pub struct Silo {
    config: Config,
    storage: Arc<Storage>,
    runtime: Runtime,
    stages: Vec<pipeline::Stage>,
    /// Styles being derived, so concurrent requests for one wait for it.
    deriving: std::sync::Mutex<std::collections::HashMap<StyleKey, Arc<tokio::sync::Mutex<()>>>>,
    derivations: std::sync::atomic::AtomicU64,
    /// Set when the node shuts down: it finishes what it has, and a load
    /// balancer should send it nothing new.
    draining: std::sync::atomic::AtomicBool,
    /// Keys image URLs must be signed with, by volume.
    image_keys: std::collections::BTreeMap<String, Vec<u8>>,
    /// Places of uploads under way (`[limits] max_uploads`): one is taken
    /// before an upload's first byte is read and given back when it is
    /// stored or refused.
    uploads: budget::WriteBudget,
    /// S3 multipart uploads under way, shared by every node.
    multipart: Arc<multipart::MultipartStore>,
    /// Set once [`Silo::start_background`] has started the upkeep.
    background: std::sync::atomic::AtomicBool,
    /// What every caller may read: the public volumes' files.
    public_reads: Arc<[vfs::Grant]>,
}

/// The upkeep a serving `Silo` runs (see [`Silo::start_background`]):
/// stopped when this is dropped or [`Background::stop`] is called.
#[must_use = "the background work stops when this is dropped"]
pub struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Files this node's last process left half-recorded, set right at
    /// the start.
    pub recovered: u64,
}

impl Background {
    /// Stop the upkeep.
    pub fn stop(self) {}
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How long unfinished multipart uploads are kept without `[s3_api]
/// multipart_lifetime_hours`.
const DEFAULT_MULTIPART_LIFETIME: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// How often [`Silo::give_back_memory`] looks for the end of a burst.
const GIVE_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The key readiness asks each backend for: its answer (found or not)
/// shows the backend is reachable.
const READY_PROBE: &str = "silo-readiness-probe";
/// How long readiness waits for the metadata engine and each backend.
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A style being derived: volume and target path.
type StyleKey = (String, String);

/// A dynamic image variant, located.
struct ImagePlan<'a> {
    source: Location,
    target: Location,
    /// The prefix of the variants of the original's version.
    dir: String,
    params: Vec<(String, String)>,
    /// The volume's `images.max_variants`.
    max_variants: usize,
    stage: &'a pipeline::Stage,
}

/// The style name of dynamic image variants (see [`images`]).
pub const IMAGE_STYLE: &str = "image";

/// Why a style could not be served.
#[derive(Debug, thiserror::Error)]
pub enum StyleError {
    /// No plugin derives this style for this type.
    #[error("no plugin derives style '{style}' for {content_type}")]
    UnknownStyle {
        /// The style asked for.
        style: String,
        /// The source's type.
        content_type: String,
    },
    #[error(transparent)]
    /// The image URL's arguments are invalid.
    BadArgument(#[from] images::BadArgument),
    /// The source has as many variants as its volume allows.
    #[error("{path} has {max} variants already, this volume's `images.max_variants`")]
    TooManyVariants {
        /// The source.
        path: String,
        /// The most variants a source may have.
        max: usize,
    },
    #[error(transparent)]
    /// The storage failed.
    Storage(#[from] StorageError),
    #[error(transparent)]
    /// The style's plugin failed.
    Plugin(#[from] InvokeError),
    #[error(transparent)]
    /// The caller may not read the source.
    Denied(#[from] Denied),
}

impl From<RequestError> for StyleError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Denied(e) => StyleError::Denied(e),
            RequestError::Storage(e) => StyleError::Storage(e),
        }
    }
}

impl Silo {
    /// Open the volumes and the metadata cache, start the runtime and load
    /// every configured plugin. Any problem is reported before anything is
    /// written.
    pub async fn open(config: Config) -> Result<Silo, SiloError> {
        Silo::open_with(config, &Stores::new()).await
    }

    /// [`Silo::open`], with `stores` in place of the backends the
    /// configuration declares for those volumes.
    pub(crate) async fn open_with(config: Config, stores: &Stores) -> Result<Silo, SiloError> {
        let runtime = Runtime::new(
            config.compile_cache.as_deref(),
            config.plugins.iter().map(|p| p.limits.memory_mib).max().unwrap_or(64),
        )?;
        let mut stages = Vec::new();
        for plugin in &config.plugins {
            let bytes = component_bytes(&config, plugin)?;
            let component = runtime.load(&plugin.name, &bytes, plugin.sha256.as_deref())?;
            if component.min_memory_bytes > plugin.limits.memory_mib << 20 {
                return Err(LoadError::MemoryTooSmall {
                    name: plugin.name.clone(),
                    needs_mib: component.min_memory_bytes.div_ceil(1 << 20),
                    limit_mib: plugin.limits.memory_mib,
                }
                .into());
            }
            let grants: Vec<vfs::Grant> = plugin
                .grants
                .iter()
                .map(|g| vfs::Grant {
                    volume: g.volume.get_ref().clone(),
                    prefix: g.prefix.clone(),
                    access: g.access.clone(),
                })
                .collect();
            stages.push(pipeline::Stage {
                component,
                settings: plugin.settings_strings(),
                config: plugin.clone(),
                grants: grants.into(),
            });
        }
        let mut image_keys = std::collections::BTreeMap::new();
        for (name, volume) in &config.volumes {
            if let Some(file) = &volume.images.signing_key_file {
                let text = std::fs::read_to_string(file).map_err(|source| SiloError::Io {
                    path: file.clone(),
                    source,
                })?;
                let key = text.trim_end_matches(['\n', '\r']);
                if key.chars().count() < 16 {
                    return Err(ConfigError::Invalid {
                        origin: config.origin.clone(),
                        message: format!(
                            "volume '{name}': the image signing key in {} must be at least 16 characters",
                            file.display()
                        ),
                    }
                    .into());
                }
                image_keys.insert(name.clone(), key.as_bytes().to_vec());
            }
        }
        let storage = open_storage_with(&config, stores).await?;
        store::local::sweep_abandoned(&config.data_dir.join("staging"));
        let uploads = budget::WriteBudget::places(config.limits.max_uploads as usize, "the uploads under way")
            .with_wait(std::time::Duration::from_secs(config.limits.write_wait_secs));
        let multipart = Arc::new(multipart::MultipartStore::open(
            storage.clone(),
            config.data_dir.join("multipart"),
        ));
        Ok(Silo {
            uploads,
            multipart,
            background: Default::default(),
            public_reads: access::public_reads(&storage),
            storage,
            runtime,
            stages,
            config,
            deriving: Default::default(),
            derivations: Default::default(),
            draining: Default::default(),
            image_keys,
        })
    }

    /// The key `volume`'s image URLs must be signed with, if any.
    pub fn image_key(&self, volume: &str) -> Option<&[u8]> {
        self.image_keys.get(volume).map(Vec::as_slice)
    }

    /// Whether a dynamic image URL for `path` of `volume` may be served:
    /// always where the volume does not sign its image URLs, else only
    /// when `signature` (the `s` argument) is the HMAC-SHA256 of the path,
    /// `?` and the other arguments as they stand in the URL (`query`).
    pub fn image_url_holds(&self, volume: &str, path: &str, query: &str, signature: Option<&str>) -> bool {
        match self.image_key(volume) {
            None => true,
            Some(key) => signature.is_some_and(|s| images::signed(key, path, query, s)),
        }
    }

    /// Start shutting down: from now on the node is not ready.
    pub fn drain(&self) {
        self.draining.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Whether the node is shutting down (it finishes what it has).
    pub fn draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Why this node should take no requests now, if so: it drains, or its
    /// metadata engine or a volume's backend does not answer (each asked
    /// once, waited for at most two seconds).
    pub async fn unready(&self) -> Option<String> {
        if self.draining() {
            return Some("the node is shutting down".into());
        }
        let stall = std::time::Duration::from_secs(self.config.limits.stall_secs);
        for (what, budget) in [
            ("writes waiting for the write buffer budget", self.storage.budget()),
            ("uploads waiting for a place among [limits] max_uploads", &self.uploads),
        ] {
            if let Some(stalled) = budget.stalled_for().filter(|s| *s >= stall) {
                return Some(format!(
                    "{} {what} have made no progress for {}s",
                    budget.waiting(),
                    stalled.as_secs()
                ));
            }
        }
        let engine = self.storage.cache().engine();
        match tokio::time::timeout(READY_WAIT, engine.get("", READY_PROBE)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Some(format!("the metadata engine: {e}")),
            Err(_) => return Some(format!("the metadata engine ({}) does not answer", engine.describe())),
        }
        let probes = self.storage.volumes().map(|v| async move {
            match tokio::time::timeout(READY_WAIT, v.store.head(READY_PROBE)).await {
                Ok(Ok(_) | Err(StorageError::NotFound)) => None,
                Ok(Err(e)) => Some(format!("volume '{}': {e}", v.name)),
                Err(_) => Some(format!("volume '{}': {} does not answer", v.name, v.store.describe())),
            }
        });
        futures_util::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .next()
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Start what a node that serves clients runs beside them, once (later
    /// calls start nothing): set right what this node's last process left
    /// half-recorded (stopped between changing a file and writing its
    /// row); then, for as long as the returned handle lives, prune the
    /// audit trail and set right what other nodes left, hand this node's
    /// multipart parts to the nodes that complete their uploads, remove
    /// expired multipart uploads, and give memory back after bursts.
    pub async fn start_background(self: &Arc<Self>) -> Result<Background, SiloError> {
        let mut background = Background {
            tasks: Vec::new(),
            recovered: 0,
        };
        if self.background.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok(background);
        }
        let node = self.storage.audit().node.clone();
        background.recovered = match self.storage.recover(Some(&node), u64::MAX).await {
            Ok(n) => n,
            Err(e) => {
                // Nothing started: a later call may try again.
                self.background.store(false, std::sync::atomic::Ordering::SeqCst);
                return Err(e.into());
            }
        };
        if background.recovered > 0 {
            tracing::warn!(
                "set right {} files node '{node}' left half-recorded when it stopped",
                background.recovered
            );
        }
        background.tasks.push(maintenance::upkeep(self.storage.clone()));
        background.tasks.push(tokio::spawn(self.clone().give_back_memory()));
        self.multipart.answer_requests();
        let lifetime = self.config.s3_api.as_ref().map_or(DEFAULT_MULTIPART_LIFETIME, |s| {
            std::time::Duration::from_secs(s.multipart_lifetime_hours * 3600)
        });
        let multipart = self.multipart.clone();
        background.tasks.push(tokio::spawn(async move {
            loop {
                match multipart.sweep(lifetime).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("removed {n} expired multipart uploads"),
                    Err(e) => tracing::warn!("sweeping expired multipart uploads: {e}"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(3600).min(lifetime)).await;
            }
        }));
        Ok(background)
    }

    /// The grants every caller has: reads of the public volumes' files.
    pub(crate) fn public_reads(&self) -> &Arc<[vfs::Grant]> {
        &self.public_reads
    }

    /// The S3 multipart uploads under way.
    #[cfg_attr(feature = "internals", visibility::make(pub))]
    pub(crate) fn multipart(&self) -> &Arc<multipart::MultipartStore> {
        &self.multipart
    }

    /// Runs for as long as the node serves: once a burst of uploads is
    /// over (nothing reserved from the write budget, no upload under way),
    /// hands the memory the allocator kept from it back to the system, so
    /// that resident memory follows the load instead of its highest point.
    async fn give_back_memory(self: Arc<Self>) {
        let mut seen = (0, 0);
        loop {
            tokio::time::sleep(GIVE_BACK_EVERY).await;
            let budget = self.storage.budget();
            let now = (budget.granted_marker(), self.uploads.granted_marker());
            if now != seen && budget.idle() && self.uploads.idle() {
                seen = now;
                tokio::task::spawn_blocking(memory::trim);
            }
        }
    }

    /// The node's counters (Prometheus text with `render`).
    pub fn metrics(&self) -> &Arc<metrics::Metrics> {
        self.storage.metrics()
    }

    /// The volumes and the metadata cache.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    /// The plugin runtime.
    #[cfg_attr(feature = "internals", visibility::make(pub))]
    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The loaded pipeline, in order.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    #[cfg_attr(feature = "internals", visibility::make(pub))]
    pub(crate) fn stages(&self) -> &[pipeline::Stage] {
        &self.stages
    }

    /// Put a local file through the upload pipeline to `target`
    /// (`<volume>/<path>`). `content_type` defaults to a guess from the
    /// path. Rejections are reports, not errors; errors mean the upload
    /// could not even be judged (bad path, unreadable file).
    pub async fn upload_file(
        &self,
        target: &str,
        source: &Path,
        content_type: Option<&str>,
    ) -> Result<UploadReport, SiloError> {
        // A bad destination is refused before the source is opened.
        self.storage.parse_location(target)?;
        let io = |source_error| SiloError::Io {
            path: source.to_owned(),
            source: source_error,
        };
        let file = tokio::fs::File::open(source).await.map_err(io)?;
        if file.metadata().await.map_err(io)?.is_dir() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "is a directory",
            )));
        }
        self.upload_stream(target, file, content_type)
            .await
            .map_err(|e| match e {
                SiloError::Source(e) => io(e),
                other => other,
            })
    }

    /// As [`Silo::upload_file`], from a stream (an HTTP request body),
    /// staged as it arrives: the destination is checked before the first
    /// byte is read.
    pub async fn upload_stream(
        &self,
        target: &str,
        body: impl tokio::io::AsyncRead + Unpin,
        content_type: Option<&str>,
    ) -> Result<UploadReport, SiloError> {
        let pending = self.stage_stream(target, body, content_type).await?;
        Ok(self.judge(pending).await)
    }

    /// Stage an upload from a stream without judging it yet (see
    /// [`Silo::judge`]); nothing is visible to anyone.
    pub async fn stage_stream(
        &self,
        target: &str,
        body: impl tokio::io::AsyncRead + Unpin,
        content_type: Option<&str>,
    ) -> Result<vfs::PendingUpload, SiloError> {
        let chunks = tokio_util::io::ReaderStream::with_capacity(body, 64 * 1024);
        self.stage_chunks(target, chunks, content_type).await
    }

    /// As [`Silo::stage_stream`], from the chunks the body arrives in (an
    /// HTTP body's frames), which spares a small upload a read buffer.
    pub async fn stage_chunks(
        &self,
        target: &str,
        body: impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
        content_type: Option<&str>,
    ) -> Result<vfs::PendingUpload, SiloError> {
        let (location, content_type) = self.staging_target(target, content_type)?;
        let place = self.uploads.reserve(1).await?;
        let staging = self.config.data_dir.join("staging");
        let limit = self.upload_limit(&location.volume);
        let (staged, meta, digests) = pipeline::stage_chunks(&staging, body, &content_type, limit)
            .await?
            .ok_or_else(|| SiloError::TooLarge {
                volume: location.volume.clone(),
                limit,
            })?;
        let mut pending = pending_upload(location, meta, staged, digests.sha256);
        pending.etag = Some(digests.md5);
        pending.place = Some(Arc::new(place));
        Ok(pending)
    }

    /// Where an upload for `target` goes, and its type: the one declared,
    /// else the one its name suggests.
    fn staging_target(&self, target: &str, content_type: Option<&str>) -> Result<(Location, String), SiloError> {
        let location = self.storage.parse_location(target)?;
        let content_type = match content_type {
            Some(t) => t.to_owned(),
            None => store::guess_content_type(location.path.as_str()),
        };
        Ok((location, content_type))
    }

    /// Stage an upload for `target` whose bytes are `files`, one after
    /// another, each of the size given (a multipart upload's parts kept on
    /// this node): they are hashed where they are, not copied. A file not
    /// of its size is an error.
    pub async fn stage_files(
        &self,
        target: &str,
        files: Vec<(std::path::PathBuf, u64)>,
        content_type: Option<&str>,
    ) -> Result<vfs::PendingUpload, SiloError> {
        let (location, content_type) = self.staging_target(target, content_type)?;
        let size: u64 = files.iter().map(|(_, size)| size).sum();
        let limit = self.upload_limit(&location.volume);
        if size > limit {
            return Err(SiloError::TooLarge {
                volume: location.volume.clone(),
                limit,
            });
        }
        let place = self.uploads.reserve(1).await?;
        let hashed = files.clone();
        let sha256 = tokio::task::spawn_blocking(move || pipeline::hash_files(&hashed))
            .await
            .map_err(|e| SiloError::Source(std::io::Error::other(e)))?
            .map_err(SiloError::Source)?;
        let meta = pipeline::staged_meta(size, &sha256, &content_type);
        let mut pending = pending_upload(location, meta, vfs::Staged::Parts(files), sha256);
        pending.place = Some(Arc::new(place));
        Ok(pending)
    }

    /// Run a staged upload through the pipeline: stored if every plugin
    /// accepts it, else rolled back with everything its plugins wrote.
    pub async fn judge(&self, pending: vfs::PendingUpload) -> UploadReport {
        let loc = pending.location.clone();
        let actor = pending.actor.clone();
        let report = pipeline::run(&self.storage, &self.runtime, &self.stages, pending).await;
        // A replaced image's variants of its earlier versions go.
        if let Some(etag) = &report.file.etag {
            let mut host = self.storage.host_session();
            if let Some(actor) = actor {
                host = host.with_actor(actor);
            }
            self.forget_variants(&host, &loc, &report.file.content_type, Some(etag))
                .await;
        }
        report
    }

    /// Delete `path` of `volume` for `caller`, and the dynamic image
    /// variants made of it; the id of the change's request.
    pub async fn delete(&self, caller: &Caller, volume: &str, path: &str) -> Result<String, RequestError> {
        self.authorize(caller, volume, path, Op::Delete)?;
        let loc = self.storage.location(volume, path)?;
        let actor = audit::Actor::request(caller.name());
        let session = self.session_for(caller).with_actor(actor.clone());
        self.delete_with(&session, &loc).await?;
        Ok(actor.request_id.clone())
    }

    /// Delete `loc` through `session`, and (as the host, for the session's
    /// actor) the dynamic image variants made of it.
    async fn delete_with(&self, session: &Session, loc: &Location) -> Result<(), StorageError> {
        // The type decides whether it has variants; asked only where some
        // plugin renders them.
        let renders = self
            .stages
            .iter()
            .any(|s| s.config.styles.iter().any(|s| s == IMAGE_STYLE));
        let content_type = if renders {
            session.stat(loc).await.map(|m| m.content_type).ok()
        } else {
            None
        };
        session.delete(loc).await?;
        if let Some(content_type) = content_type {
            let mut host = self.storage.host_session();
            if let Some(actor) = session.actor() {
                host = host.with_actor(actor.clone());
            }
            self.forget_variants(&host, loc, &content_type, None).await;
        }
        Ok(())
    }

    /// Delete the variants of `loc` but those of its version `keep` (all
    /// of them without): a replaced or deleted original's. Only where a
    /// plugin renders its type; a failure is logged (the variants are
    /// unreachable through `/v1/images` anyway, and the next one made for
    /// the original removes them).
    async fn forget_variants(&self, session: &Session, loc: &Location, content_type: &str, keep: Option<&str>) {
        if self.stage_for(IMAGE_STYLE, content_type).is_err() {
            return;
        }
        let prefix = format!("{}/{}/", images::VARIANTS, loc.path);
        let dir = match keep {
            Some(etag) => images::version_dir(loc.path.as_str(), etag),
            // No variant path has a trailing slash: nothing is kept.
            None => format!("{prefix}/"),
        };
        if let Err(e) = self.variants_now(session, &loc.volume, &prefix, &dir).await {
            tracing::warn!("removing the image variants of {loc}: {e}");
        }
    }
}

impl Silo {
    /// The largest upload `volume` takes, in bytes.
    pub fn upload_limit(&self, volume: &str) -> u64 {
        self.config
            .volumes
            .get(volume)
            .and_then(|v| v.max_upload_bytes().ok())
            .unwrap_or(config::DEFAULT_MAX_UPLOAD_MIB << 20)
    }

    /// The file of `style` for the image at `volume`/`path`, deriving it
    /// with the plugin that declares the style if it does not exist yet.
    /// Concurrent requests for the same missing style derive it once.
    pub async fn style(&self, volume: &str, path: &str, style: &str) -> Result<(Location, ObjectMeta), StyleError> {
        let source = self.storage.location(volume, path)?;
        let target = self.storage.location(volume, &format!("styles/{style}/{path}"))?;
        let meta = self.storage.host_session().stat(&source).await?;
        let stage = self.stage_for(style, &meta.content_type)?;
        self.derive_once(stage, source, target, style, Vec::new()).await
    }

    /// The variant of the image at `volume`/`path` that `args` ask for
    /// (see [`images`]), derived by the plugin that lists the `image`
    /// style if it is not stored yet; concurrent requests for one variant
    /// derive it once. With `accepts_webp`, `webp=1` gives WebP.
    pub async fn image(
        &self,
        volume: &str,
        path: &str,
        args: &images::ImageArgs,
        accepts_webp: bool,
    ) -> Result<(Location, ObjectMeta), StyleError> {
        let plan = self.image_plan(volume, path, args, accepts_webp).await?;
        let ImagePlan {
            source,
            target,
            dir,
            params,
            max_variants,
            stage,
        } = plan;
        let host = self.storage.host_session();
        match host.stat(&target).await {
            Ok(stored) => return Ok((target, stored)),
            Err(StorageError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        // One original's new variants are counted and derived one at a
        // time, so that concurrent requests cannot pass the cap together.
        let prefix = format!("{}/{}/", images::VARIANTS, source.path);
        let key = (volume.to_owned(), prefix.clone());
        self.exclusive(key, async {
            match host.stat(&target).await {
                Ok(stored) => return Ok((target.clone(), stored)),
                Err(StorageError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            let current = self.variants_now(&host, volume, &prefix, &dir).await?;
            if current >= max_variants {
                return Err(StyleError::TooManyVariants {
                    path: path.to_owned(),
                    max: max_variants,
                });
            }
            self.derive_once(stage, source.clone(), target.clone(), IMAGE_STYLE, params)
                .await
        })
        .await
    }

    /// Serve the style `style` of the image at `volume`/`path` to `caller`
    /// (who must be able to read the image), derived first if it is
    /// missing. Deriving runs as its own task: a client that leaves does
    /// not stop it half-way, and others waiting for the style are answered.
    pub async fn read_style(
        self: &Arc<Self>,
        caller: &Caller,
        style: &str,
        volume: &str,
        path: &str,
        request: &serving::ReadRequest,
    ) -> Result<serving::Served, StyleError> {
        self.authorize(caller, volume, path, Op::Read)?;
        let session = self.session_for(caller);
        let derive = || {
            let silo = self.clone();
            let (style, volume, path) = (style.to_owned(), volume.to_owned(), path.to_owned());
            async move {
                tokio::spawn(async move { silo.style(&volume, &path, &style).await })
                    .await
                    .map_err(|e| StorageError::unavailable(format!("deriving the style stopped: {e}")))?
                    .map(|(loc, _)| loc)
            }
        };
        let loc = derive().await?;
        match self.serve_file(&session, loc, request).await {
            // The style's row outlived its object (deleted behind Silo's
            // back); reading it dropped the row, so derive it again.
            Err(RequestError::Storage(StorageError::NotFound)) => {
                let loc = derive().await?;
                Ok(self.serve_file(&session, loc, request).await?)
            }
            other => Ok(other?),
        }
    }

    /// Serve the variant of the image at `volume`/`path` that `args` ask
    /// for to `caller` (who must be able to read the image), derived first
    /// (as its own task) if it is not stored yet.
    pub async fn read_image(
        self: &Arc<Self>,
        caller: &Caller,
        volume: &str,
        path: &str,
        args: &images::ImageArgs,
        accepts_webp: bool,
        request: &serving::ReadRequest,
    ) -> Result<serving::Served, StyleError> {
        self.authorize(caller, volume, path, Op::Read)?;
        let loc = match self.stored_image(volume, path, args, accepts_webp).await? {
            Some(loc) => loc,
            None => {
                let silo = self.clone();
                let (volume, path, args) = (volume.to_owned(), path.to_owned(), args.clone());
                tokio::spawn(async move { silo.image(&volume, &path, &args, accepts_webp).await })
                    .await
                    .map_err(|e| StorageError::unavailable(format!("deriving the image stopped: {e}")))??
                    .0
            }
        };
        let mut served = self.serve_file(&self.session_for(caller), loc, request).await?;
        if args.varies_by_accept() && self.webp_by_accept(volume) {
            served.headers.vary = Some("Accept");
        }
        Ok(served)
    }

    /// Whether `webp=1` on `volume` follows the client's `Accept` (else
    /// it forces WebP).
    fn webp_by_accept(&self, volume: &str) -> bool {
        self.config.volumes.get(volume).is_some_and(|v| v.images.webp_by_accept)
    }

    /// The variant `args` ask for if it is stored already (the common
    /// case, answered without a task or a plugin); `None` if it must be
    /// derived.
    pub async fn stored_image(
        &self,
        volume: &str,
        path: &str,
        args: &images::ImageArgs,
        accepts_webp: bool,
    ) -> Result<Option<Location>, StyleError> {
        let plan = self.image_plan(volume, path, args, accepts_webp).await?;
        match self.storage.host_session().stat(&plan.target).await {
            Ok(_) => Ok(Some(plan.target)),
            Err(StorageError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Where the variant `args` ask for lives, and what deriving it takes.
    async fn image_plan(
        &self,
        volume: &str,
        path: &str,
        args: &images::ImageArgs,
        accepts_webp: bool,
    ) -> Result<ImagePlan<'_>, StyleError> {
        let source = self.storage.location(volume, path)?;
        let meta = self.storage.host_session().stat(&source).await?;
        let original = images::Format::of(&meta.content_type).ok_or_else(|| StyleError::UnknownStyle {
            style: IMAGE_STYLE.into(),
            content_type: meta.content_type.clone(),
        })?;
        let stage = self.stage_for(IMAGE_STYLE, &meta.content_type)?;
        let settings = self.config.volumes.get(volume).map(|v| &v.images);
        let max_variants = settings.map_or_else(|| images::ImagesConfig::default().max_variants, |s| s.max_variants);
        let format = args.format(original, accepts_webp || !self.webp_by_accept(volume));
        let params = args.params(format, settings.map_or(&[], |s| s.sizes.as_slice()))?;
        let (variant, dir) = images::variant_path(source.path.as_str(), &meta.etag, &params, format);
        let target = self.storage.location(volume, &variant)?;
        Ok(ImagePlan {
            source,
            target,
            dir,
            params,
            max_variants,
            stage,
        })
    }

    /// How many variants under `prefix` belong to this version (`dir`);
    /// those of older versions of the original are deleted.
    async fn variants_now(&self, host: &Session, volume: &str, prefix: &str, dir: &str) -> Result<usize, StyleError> {
        let mut current = 0;
        let mut cursor = None;
        loop {
            let page = host.list(volume, prefix, true, cursor.as_deref(), 1000).await?;
            for entry in &page.entries {
                if let cache::Entry::File { path, .. } = entry {
                    if path.starts_with(dir) {
                        current += 1;
                    } else if let Ok(old) = self.storage.location(volume, path) {
                        let _ = host.delete(&old).await;
                    }
                }
            }
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(current),
            }
        }
    }

    /// Run `work` while holding the lock of `key`, one holder at a time.
    async fn exclusive<T>(&self, key: StyleKey, work: impl std::future::Future<Output = T>) -> T {
        let lock = self
            .deriving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let result = {
            let _turn = lock.lock().await;
            work.await
        };
        let mut deriving = self.deriving.lock().unwrap_or_else(|p| p.into_inner());
        // The last one out removes the entry.
        if Arc::strong_count(&lock) == 2 {
            deriving.remove(&key);
        }
        result
    }

    /// The stage that derives `style` for `content_type`.
    fn stage_for(&self, style: &str, content_type: &str) -> Result<&pipeline::Stage, StyleError> {
        self.stages
            .iter()
            .find(|s| s.config.styles.iter().any(|s| s == style) && s.config.handles(content_type))
            .ok_or_else(|| StyleError::UnknownStyle {
                style: style.to_owned(),
                content_type: content_type.to_owned(),
            })
    }

    /// The file at `target`, derived from `source` by `stage` if it is not
    /// there yet, once however many ask at the same time.
    async fn derive_once(
        &self,
        stage: &pipeline::Stage,
        source: Location,
        target: Location,
        style: &str,
        params: Vec<(String, String)>,
    ) -> Result<(Location, ObjectMeta), StyleError> {
        let host = self.storage.host_session();
        let key = (target.volume.clone(), target.path.to_string());
        self.exclusive(key, async {
            match host.stat(&target).await {
                Ok(existing) => return Ok((target, existing)),
                Err(StorageError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            // Derived on a read: the plugin's write, in a request of its own.
            let actor = audit::Actor::request(audit::HOST).plugin(&stage.config.name);
            let session =
                Session::new(self.storage.clone(), Some(stage.grants.clone()), stage.quota()).with_actor(actor);
            let request = runtime::DeriveRequest {
                source: (&source).into(),
                style: style.to_owned(),
                target: (&target).into(),
                settings: stage.settings.clone(),
                params,
            };
            self.derivations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let derived = self
                .runtime
                .on_derive(&stage.component, session, stage.limits(), request)
                .await;
            let outcome = derived.as_ref().map_or_else(|e| e.code(), |_| "ok");
            self.storage.metrics().plugin(&stage.config.name, "on-derive", outcome);
            derived?;
            Ok((target.clone(), host.stat(&target).await?))
        })
        .await
    }

    /// How many styles this Silo has derived on request.
    pub fn derivations(&self) -> u64 {
        self.derivations.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Describe the component `bytes` (named `name` in errors): its sha256,
/// imports and exports, the memory it needs, and whether Silo can run it
/// as an upload plugin (`silo plugin check`).
pub fn inspect_plugin(name: &str, bytes: &[u8]) -> Result<Inspection, LoadError> {
    Runtime::new(None, 64)?.inspect(name, bytes)
}

/// Open the volumes and the metadata cache of a config, without the
/// plugin runtime (cache maintenance, tools).
pub async fn open_storage(config: &Config) -> Result<Arc<Storage>, SiloError> {
    open_storage_with(config, &Stores::new()).await
}

/// Object stores an embedder gives for volumes, by volume name.
pub(crate) type Stores = std::collections::BTreeMap<String, Arc<dyn store::ObjectStore>>;

async fn open_storage_with(config: &Config, stores: &Stores) -> Result<Arc<Storage>, SiloError> {
    if let Some(name) = stores.keys().find(|name| !config.volumes.contains_key(*name)) {
        return Err(ConfigError::Invalid {
            origin: config.origin.clone(),
            message: format!("an object store was given for volume '{name}', which the configuration does not declare"),
        }
        .into());
    }
    let metrics = Arc::new(metrics::Metrics::default());
    let budget = budget::WriteBudget::new((config.limits.write_buffer_mib << 20) as usize)
        .with_wait(std::time::Duration::from_secs(config.limits.write_wait_secs));
    let mut volumes = Vec::new();
    for (name, v) in &config.volumes {
        let invalid = |message: String| ConfigError::Invalid {
            origin: config.origin.clone(),
            message: format!("volume '{name}': {message}"),
        };
        let store: Arc<dyn store::ObjectStore> = match (v.backend, &v.path) {
            _ if stores.contains_key(name) => stores[name].clone(),
            (config::Backend::Local, Some(path)) => Arc::new(store::LocalStore::open(path)?),
            (config::Backend::Memory, _) => Arc::new(store::MemoryStore::new()),
            (config::Backend::S3, _) => {
                let settings = v.s3_settings().map_err(invalid)?;
                Arc::new(store::S3Store::connect(&settings).await?.with_budget(budget.clone()))
            }
            (config::Backend::Local, None) => return Err(invalid("a local volume needs `path`".into()).into()),
        };
        let read_cache = match v.read_cache_settings().map_err(invalid)? {
            Some(settings) => {
                let dir = config.data_dir.join("read-cache").join(name);
                let cache = readcache::ReadCache::open(&dir, settings, name, metrics.clone())
                    .map_err(|source| SiloError::Io { path: dir, source })?;
                Some(Arc::new(cache))
            }
            None => None,
        };
        volumes.push(vfs::Volume {
            name: name.clone(),
            visibility: v.visibility,
            cache_mode: v.cache,
            store,
            public_url: v.public_url.clone(),
            read_cache,
        });
    }
    let cache = match config.metadata.backend {
        config::MetadataBackend::Sqlite => cache::MetadataCache::with_front(
            Arc::new(cache::sqlite::SqliteEngine::open(&config.data_dir.join("meta.sqlite"))?),
            config.metadata.front(),
        ),
        config::MetadataBackend::Postgres => {
            let url = config.metadata.database_url().map_err(|message| ConfigError::Invalid {
                origin: config.origin.clone(),
                message,
            })?;
            let settings = cache::postgres::PostgresSettings {
                url,
                pool_size: config.metadata.pool_size.unwrap_or(config::DEFAULT_POOL_SIZE),
            };
            cache::MetadataCache::connect_postgres(&settings, config.metadata.front()).await?
        }
    };
    Ok(Arc::new(
        Storage::new(volumes, cache)
            .with_policy(config.content_policy.clone())
            .with_budget(budget)
            .with_metrics(metrics)
            .with_memory_cache(config.limits.memory_cache_mib << 20)
            .with_audit(config.audit_settings()),
    ))
}

/// The bytes of a plugin's component: bundled, or a file inside the plugin
/// directory (never anywhere else).
fn component_bytes(config: &Config, plugin: &config::PluginConfig) -> Result<Vec<u8>, SiloError> {
    if let Some(name) = plugin.component.strip_prefix("builtin:") {
        #[cfg(feature = "bundled-plugins")]
        if let Some(bytes) = bundled::component(name) {
            return Ok(bytes.to_vec());
        }
        return Err(SiloError::Plugin {
            plugin: plugin.name.clone(),
            message: format!("there is no built-in component '{name}' in this build"),
        });
    }
    let relative = Path::new(&plugin.component);
    if relative.is_absolute()
        || relative
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(SiloError::Plugin {
            plugin: plugin.name.clone(),
            message: format!(
                "component '{}' must be a plain path inside plugin_dir ({})",
                plugin.component,
                config.plugin_dir.display()
            ),
        });
    }
    let path = config.plugin_dir.join(relative);
    let bytes = std::fs::read(&path).map_err(|source| SiloError::Io {
        path: path.clone(),
        source,
    })?;
    if plugin.sha256.is_none() {
        use sha2::Digest;
        return Err(SiloError::Plugin {
            plugin: plugin.name.clone(),
            message: format!(
                "components must be pinned: add sha256 = \"{}\" after checking {}",
                hex::encode(sha2::Sha256::digest(&bytes)),
                path.display()
            ),
        });
    }
    Ok(bytes)
}

/// A staged upload, with no condition or sender yet.
fn pending_upload(
    location: Location,
    meta: store::ObjectMeta,
    staged: vfs::Staged,
    sha256: String,
) -> vfs::PendingUpload {
    vfs::PendingUpload {
        location,
        meta,
        staged: Arc::new(staged),
        condition: None,
        actor: None,
        sha256: Some(sha256),
        etag: None,
        assembly: Default::default(),
        place: None,
    }
}
