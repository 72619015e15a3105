//! The plugin runtime: one wasmtime engine, components compiled once (and
//! cached on disk by sha256 and engine version), a fresh store and instance
//! for every invocation, and limits that end an invocation without harming
//! the host.
//!
//! WASI 0.2 is linked deny-by-default: no environment, no arguments and no
//! network; wasi:filesystem is Silo's own (`fs`), serving the granted
//! volumes and nothing of the host's files; guest stdout and stderr go to
//! the host's log.

mod bindings;
mod fs;
pub mod streams;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use bindings::{DeriveRequest, DerivedFile, Outcome, Upload};

use crate::error::StorageError;
use crate::vfs::Session;

/// How often the epoch advances; the granularity of time limits.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Instances the pooling allocator keeps slots for: the most invocations
/// that run at once. Further invocations wait for a slot (their time limit
/// starts once they have one).
pub const MAX_CONCURRENT_INSTANCES: u32 = 128;
/// Streams (`open-read`) one invocation may hold open at once; one more
/// fails with `quota-exceeded` until one is dropped. Each holds a file
/// descriptor or an S3 connection.
pub const MAX_OPEN_READERS: usize = 16;
/// Writers (`open-write`) one invocation may hold open at once; as above.
pub const MAX_OPEN_WRITERS: usize = 16;
/// Longest message of an error a plugin returns; the rest is cut.
pub const MAX_PLUGIN_MESSAGE: usize = 1024;
/// Resource handles one invocation may hold (streams, writers, pollables).
const MAX_HANDLES: usize = 1000;
pub use streams::MAX_LOG_BYTES;

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{name}: not a WebAssembly file")]
    /// Not WebAssembly at all.
    NotWasm {
        /// The component's name.
        name: String,
    },
    #[error(
        "{name}: this is a core WebAssembly module, not a component; build the plugin for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    /// A core module, not a component.
    CoreModule {
        /// The component's name.
        name: String,
    },
    #[error("{name}: sha256 mismatch: the config pins {expected} but the file is {actual}")]
    /// Not the file the config pins.
    Sha256Mismatch {
        /// The component's name.
        name: String,
        /// The pinned sha256.
        expected: String,
        /// The file's.
        actual: String,
    },
    #[error("{name}: invalid component: {message}")]
    /// Not a valid component.
    Invalid {
        /// The component's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    #[error("{name}: imports {message}")]
    /// It imports something Silo does not give plugins.
    UnknownImport {
        /// The component's name.
        name: String,
        /// Which import.
        message: String,
    },
    #[error(
        "{name}: needs at least {needs_mib} MiB of memory to start (its initial linear memory), more than its limits.memory_mib = {limit_mib}; raise limits.memory_mib to {needs_mib} or more"
    )]
    /// Its initial memory is more than its limit.
    MemoryTooSmall {
        /// The component's name.
        name: String,
        /// What it needs to start.
        needs_mib: u64,
        /// Its `limits.memory_mib`.
        limit_mib: u64,
    },
    #[error("{name}: not an upload plugin (it must export silo:plugin/handler@0.1.0): {message}")]
    /// It does not export Silo's handler.
    WrongWorld {
        /// The component's name.
        name: String,
        /// What is missing.
        message: String,
    },
    #[error("cannot start the plugin runtime: {0}")]
    /// The wasmtime engine could not be set up.
    Engine(String),
}

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("plugin '{plugin}' exceeded its time limit of {limit_ms} ms")]
    /// It ran past its time limit.
    TimeLimit {
        /// The plugin's name.
        plugin: String,
        /// Its limit.
        limit_ms: u64,
    },
    #[error("plugin '{plugin}' exceeded its memory limit of {limit_mib} MiB")]
    /// It asked for more memory than its limit.
    MemoryLimit {
        /// The plugin's name.
        plugin: String,
        /// Its limit.
        limit_mib: u64,
    },
    #[error("plugin '{plugin}' crashed: {message}")]
    /// It trapped.
    Trap {
        /// The plugin's name.
        plugin: String,
        /// The trap.
        message: String,
    },
    #[error("plugin '{plugin}' returned an error: {error}")]
    /// It returned an error.
    Failed {
        /// The plugin's name.
        plugin: String,
        /// Its error.
        error: StorageError,
    },
}

impl InvokeError {
    /// The short code upload reports carry (`time-limit`, …).
    pub fn code(&self) -> &'static str {
        match self {
            InvokeError::TimeLimit { .. } => "time-limit",
            InvokeError::MemoryLimit { .. } => "memory-limit",
            InvokeError::Trap { .. } => "plugin-crashed",
            InvokeError::Failed { error, .. } => error.code(),
        }
    }
}

/// Limits for one invocation.
#[derive(Debug, Clone, Copy)]
pub struct InvokeLimits {
    pub memory_bytes: usize,
    pub time: Duration,
}

/// A loaded plugin component, ready to instantiate.
#[derive(Clone)]
pub struct PluginComponent {
    pub name: Arc<str>,
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    pub sha256: String,
    /// The largest initial linear memory of its modules: it cannot start
    /// with less.
    pub min_memory_bytes: u64,
    pre: bindings::UploadPluginPre<Invocation>,
}

/// What `silo plugin check` reports.
#[derive(Debug)]
pub struct Inspection {
    /// The file's sha256, hex.
    pub sha256: String,
    /// What it imports.
    pub imports: Vec<String>,
    /// What it exports.
    pub exports: Vec<String>,
    /// What it needs at least to start, in MiB (rounded up).
    pub min_memory_mib: u64,
    /// `Ok` if Silo can run it as an upload plugin.
    pub verdict: Result<(), LoadError>,
}

/// The state of one invocation's store.
pub(crate) struct Invocation {
    wasi: WasiCtx,
    http: wasmtime_wasi_http::WasiHttpCtx,
    http_hooks: ClosedHttp,
    table: ResourceTable,
    limiter: MemoryLimiter,
    session: Session,
    plugin: Arc<str>,
    readers: streams::OpenStreams,
    writers: streams::OpenStreams,
    log: streams::LogBudget,
    fs: fs::FsState,
}

impl WasiView for Invocation {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for Invocation {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// Header fields one `fields` resource may hold. Nothing is ever sent, so
/// this only bounds what a plugin can park in the host (with the handle
/// table, about 4 MiB an invocation).
const HTTP_FIELDS_BYTES: usize = 4 * 1024;
/// What one outgoing body may buffer in the host before it would be sent.
const HTTP_BODY_CHUNK: usize = 4 * 1024;

/// wasi:http with every outgoing request refused, as wasi:sockets has no
/// network: components built by toolchains that import it by default (jco)
/// link and run, and reach nothing.
struct ClosedHttp;

/// What wasmtime-wasi-http's `send_request` hook answers with.
type SentRequest = Box<
    dyn Future<Output = Result<(http::Response<wasmtime_wasi_http::WasiBody>, IoDone), wasmtime_wasi_http::Error>>
        + Send,
>;
type IoDone = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

impl wasmtime_wasi_http::WasiHttpHooks for ClosedHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: IoDone,
    ) -> SentRequest {
        Box::new(std::future::ready(Err(wasmtime_wasi_http::Error::HttpRequestDenied)))
    }

    fn p2_outgoing_body_buffer_chunks(&mut self) -> usize {
        1
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        HTTP_BODY_CHUNK
    }
}

fn min_memory_bytes(component: &Component) -> u64 {
    let pages = component
        .resources_required()
        .and_then(|r| r.max_initial_memory_size)
        .unwrap_or(0);
    pages.saturating_mul(64 * 1024)
}

/// What Silo links, by interface prefix.
const PROVIDED: &[&str] = &[
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
    "wasi:http/",
    "silo:plugin/",
];

/// wasmtime names the import that failed in its outermost message
/// ("component imports instance `X`, but ..."): say what it means.
fn explain_link_error(e: &wasmtime::Error) -> String {
    let top = e.to_string();
    let causes: Vec<String> = e.chain().skip(1).map(|c| c.to_string()).collect();
    match top.split('`').nth(1) {
        Some(import) if PROVIDED.iter().any(|p| import.starts_with(p)) => format!(
            "`{import}` in a form Silo does not provide ({}); build it against WASI 0.2 and Silo's wit/",
            causes.join(": ")
        ),
        Some(import) => format!(
            "`{import}`, which Silo does not provide (it provides WASI 0.2: cli, clocks, filesystem, io, random, \
             and sockets and http with no network; and silo:plugin)"
        ),
        None => format!("{e:#}"),
    }
}

/// Caps linear memory, all of an instance's memories together, and table
/// growth; remembers that it refused, so a resulting trap is reported as
/// the memory limit rather than a crash.
struct MemoryLimiter {
    max_bytes: usize,
    /// Bytes of every linear memory of the instance.
    used: usize,
    refused: Arc<AtomicBool>,
}

/// Most table elements an instance may grow to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.max_bytes {
            self.refused.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.refused.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }
}

/// The smallest pooling-allocator memory slot.
const MIN_SLOT_MIB: u64 = 64;
/// Bytes of a memory slot kept resident between instances (where the
/// kernel can tell which pages an instance dirtied): what a small plugin's
/// instance touches, and most of an interpreter's snapshot.
pub const KEEP_RESIDENT_BYTES: usize = 16 << 20;
/// Slots kept for reuse beyond those in use, each holding up to
/// [`KEEP_RESIDENT_BYTES`] resident.
const WARM_SLOTS: u32 = 16;

/// How instances get their memory, tables and stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// The pooling allocator, its slots reset in place where the kernel
    /// tells which pages were dirtied (what Silo uses).
    Pooling,
    /// The pooling allocator, its slots always reset with `madvise`.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))] // tests and benchmarks
    PoolingMadvise,
    /// Every instance allocated on demand.
    OnDemand,
}

/// Whether [`Allocation::Pooling`] resets slots in place here: the kernel
/// has PAGEMAP_SCAN (Linux 6.7+).
pub fn resets_slots_in_place() -> bool {
    wasmtime::PoolingAllocationConfig::is_pagemap_scan_available()
}

/// The engine, the linker, and the compiled-component cache.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Invocation>,
    cache_dir: Option<PathBuf>,
    engine_tag: String,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Runtime {
    /// Start the engine. `cache_dir` keeps compiled components between runs
    /// (Silo's own state directory: nothing a plugin can write to).
    pub fn new(cache_dir: Option<&Path>, max_memory_mib: u64) -> Result<Runtime, LoadError> {
        Self::with_allocator(cache_dir, max_memory_mib, Allocation::Pooling)
    }

    /// Like [`Runtime::new`], with another way to allocate instances (the
    /// benchmark's baselines).
    pub fn with_allocator(
        cache_dir: Option<&Path>,
        max_memory_mib: u64,
        allocation: Allocation,
    ) -> Result<Runtime, LoadError> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_CONCURRENT_INSTANCES)
            .total_core_instances(MAX_CONCURRENT_INSTANCES * 8)
            .total_memories(MAX_CONCURRENT_INSTANCES * 2)
            .total_tables(MAX_CONCURRENT_INSTANCES * 8)
            .total_stacks(MAX_CONCURRENT_INSTANCES)
            .max_core_instances_per_component(32)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            // Never below 64 MiB, so that a component needing more than its
            // stage allows still compiles and is refused by name, with the
            // figure (Silo::open compares the two).
            .max_memory_size((max_memory_mib.max(MIN_SLOT_MIB) as usize) << 20);
        // Reset a slot after use by rewriting the pages the instance
        // dirtied, found with Linux's PAGEMAP_SCAN ioctl (6.7+), instead of
        // madvise: the next instance in the slot takes no page faults and
        // the host no TLB shootdowns. The slot is back to its image either
        // way. Without the ioctl wasmtime would rewrite the whole kept size
        // each time, so it is used only where the ioctl is.
        if allocation == Allocation::Pooling && resets_slots_in_place() {
            pool.pagemap_scan(wasmtime::Enabled::Yes)
                .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
                .table_keep_resident(KEEP_RESIDENT_BYTES / 16)
                .max_unused_warm_slots(WARM_SLOTS);
        }
        if allocation != Allocation::OnDemand {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = match Engine::new(&config) {
            Ok(engine) => engine,
            Err(e) => {
                // Some hosts cap virtual memory below what the pool reserves.
                tracing::warn!("pooling allocator unavailable ({e}); allocating instances on demand");
                config.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
                Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| LoadError::Engine(e.to_string()))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        bindings::add_to_linker(&mut linker).map_err(|e| LoadError::Engine(e.to_string()))?;
        fs::add_to_linker(&mut linker).map_err(|e| LoadError::Engine(e.to_string()))?;

        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let engine_tag = format!("{:016x}", h.finish());

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("silo-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch thread: {e}")))?;

        Ok(Runtime {
            engine,
            linker,
            cache_dir: cache_dir.map(Path::to_owned),
            engine_tag,
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_INSTANCES as usize)),
        })
    }

    /// Check and compile a component. `pin` is the sha256 the config
    /// expects; the component is refused if it differs.
    pub fn load(&self, name: &str, bytes: &[u8], pin: Option<&str>) -> Result<PluginComponent, LoadError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        if let Some(expected) = pin
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(LoadError::Sha256Mismatch {
                name: name.into(),
                expected: expected.into(),
                actual: sha256,
            });
        }
        let component = self.compile(name, bytes, &sha256)?;
        self.link(name, component, sha256)
    }

    /// Describe a component for `silo plugin check`: its sha256, imports
    /// and exports, and whether Silo can run it.
    pub fn inspect(&self, name: &str, bytes: &[u8]) -> Result<Inspection, LoadError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let component = self.compile(name, bytes, &sha256)?;
        let ty = component.component_type();
        let imports = ty.imports(&self.engine).map(|(n, _)| n.to_owned()).collect();
        let exports = ty.exports(&self.engine).map(|(n, _)| n.to_owned()).collect();
        let min_memory_mib = min_memory_bytes(&component).div_ceil(1 << 20);
        let verdict = self.link(name, component, sha256.clone()).map(|_| ());
        Ok(Inspection {
            sha256,
            imports,
            exports,
            min_memory_mib,
            verdict,
        })
    }

    fn link(&self, name: &str, component: Component, sha256: String) -> Result<PluginComponent, LoadError> {
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::UnknownImport {
                name: name.into(),
                message: explain_link_error(&e),
            })?;
        let pre = bindings::UploadPluginPre::new(pre).map_err(|e| LoadError::WrongWorld {
            name: name.into(),
            message: format!("{e:#}"),
        })?;
        Ok(PluginComponent {
            name: name.into(),
            sha256,
            min_memory_bytes: min_memory_bytes(&component),
            pre,
        })
    }

    fn compile(&self, name: &str, bytes: &[u8], sha256: &str) -> Result<Component, LoadError> {
        match bytes.get(..8) {
            Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => return Err(LoadError::CoreModule { name: name.into() }),
            Some([0, b'a', b's', b'm', _, _, 1, 0]) => {}
            _ => return Err(LoadError::NotWasm { name: name.into() }),
        }
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            name: name.into(),
            message: format!("{e:#}"),
        };
        let Some(dir) = &self.cache_dir else {
            return Component::new(&self.engine, bytes).map_err(invalid);
        };
        let cached = dir.join(format!("{sha256}-{}.cwasm", self.engine_tag));
        if cached.exists() {
            // SAFETY: the file was written by `serialize` below into Silo's
            // own state directory, keyed by the source's sha256 and this
            // engine's compatibility hash; wasmtime checks the header too.
            match unsafe { Component::deserialize_file(&self.engine, &cached) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!("ignoring unusable compiled cache {}: {e}", cached.display()),
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(invalid)?;
        if let Err(e) = write_atomically(dir, &cached, &component) {
            tracing::warn!("cannot cache the compiled plugin at {}: {e}", cached.display());
        }
        Ok(component)
    }

    fn store(
        &self,
        plugin: &PluginComponent,
        session: Session,
        limits: InvokeLimits,
    ) -> (Store<Invocation>, Arc<AtomicBool>) {
        let refused = Arc::new(AtomicBool::new(false));
        let log = streams::LogBudget::default();
        let mut wasi = WasiCtx::builder();
        wasi.stdout(streams::GuestLog::new(plugin.name.clone(), "stdout", log.clone()))
            .stderr(streams::GuestLog::new(plugin.name.clone(), "stderr", log.clone()));
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HANDLES);
        let mut http = wasmtime_wasi_http::WasiHttpCtx::new();
        http.set_field_size_limit(HTTP_FIELDS_BYTES);
        let state = Invocation {
            wasi: wasi.build(),
            http,
            http_hooks: ClosedHttp,
            table,
            limiter: MemoryLimiter {
                max_bytes: limits.memory_bytes,
                used: 0,
                refused: refused.clone(),
            },
            session,
            plugin: plugin.name.clone(),
            readers: streams::OpenStreams::new(MAX_OPEN_READERS),
            writers: streams::OpenStreams::new(MAX_OPEN_WRITERS),
            log,
            fs: fs::FsState::new(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Yield to the executor at every tick so the wall-clock timeout
        // around the call can fire even in a tight loop.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        (store, refused)
    }

    /// Run a plugin's `on-upload` in a fresh instance.
    pub async fn on_upload(
        &self,
        plugin: &PluginComponent,
        session: Session,
        limits: InvokeLimits,
        upload: Upload,
    ) -> Result<Outcome, InvokeError> {
        // The semaphore is never closed, so acquiring cannot fail.
        let _slot = self.slots.acquire().await.expect("the slot semaphore is never closed");
        let (mut store, refused) = self.store(plugin, session, limits);
        let call = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            instance.silo_plugin_handler().call_on_upload(&mut store, &upload).await
        };
        let result = tokio::time::timeout(limits.time, call).await;
        report_dropped_log(plugin, store.data());
        classify(plugin, limits, result, &refused)
    }

    /// Run a plugin's `on-derive` in a fresh instance.
    pub async fn on_derive(
        &self,
        plugin: &PluginComponent,
        session: Session,
        limits: InvokeLimits,
        request: DeriveRequest,
    ) -> Result<DerivedFile, InvokeError> {
        // The semaphore is never closed, so acquiring cannot fail.
        let _slot = self.slots.acquire().await.expect("the slot semaphore is never closed");
        let (mut store, refused) = self.store(plugin, session, limits);
        let call = async {
            let instance = plugin.pre.instantiate_async(&mut store).await?;
            instance
                .silo_plugin_handler()
                .call_on_derive(&mut store, &request)
                .await
        };
        let result = tokio::time::timeout(limits.time, call).await;
        report_dropped_log(plugin, store.data());
        classify(plugin, limits, result, &refused)
    }
}

fn report_dropped_log(plugin: &PluginComponent, state: &Invocation) {
    let used = state.log.used();
    if used > MAX_LOG_BYTES {
        tracing::warn!(
            plugin = &*plugin.name,
            "dropped {} bytes of log output past the {MAX_LOG_BYTES}-byte limit of an invocation",
            used - MAX_LOG_BYTES
        );
    }
}

fn classify<T>(
    plugin: &PluginComponent,
    limits: InvokeLimits,
    result: Result<wasmtime::Result<Result<T, bindings::silo::plugin::types::Error>>, tokio::time::error::Elapsed>,
    refused: &AtomicBool,
) -> Result<T, InvokeError> {
    let name = plugin.name.to_string();
    match result {
        Err(_) => Err(InvokeError::TimeLimit {
            plugin: name,
            limit_ms: limits.time.as_millis() as u64,
        }),
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(error))) => Err(InvokeError::Failed {
            plugin: name,
            error: error.into(),
        }),
        Ok(Err(_)) if refused.load(Ordering::Relaxed) => Err(InvokeError::MemoryLimit {
            plugin: name,
            limit_mib: (limits.memory_bytes >> 20) as u64,
        }),
        Ok(Err(trap)) => Err(InvokeError::Trap {
            plugin: name,
            message: trap_message(&trap),
        }),
    }
}

/// The first line of a trap (or of the host error that ended the call:
/// the outer layers only say where) and the guest frame it happened in.
fn trap_message(error: &wasmtime::Error) -> String {
    let mut message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    if let Some(bt) = error.downcast_ref::<wasmtime::WasmBacktrace>()
        && let Some(name) = bt.frames().iter().find_map(|f| f.func_name())
    {
        message.push_str(&format!(" (in {name})"));
    }
    message
}

fn write_atomically(dir: &Path, dest: &Path, component: &Component) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(&bytes)?;
    temp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}
