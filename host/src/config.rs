//! Configuration: one TOML file, or the built-in default.
//!
//! Relative paths in a file are relative to the file's directory. Validation
//! happens here, before anything is opened: unknown keys, unknown volumes in
//! grants, malformed pins and a volume overlapping the plugin directory (code
//! and data never share a place) are refused with a message naming them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::vfs::{Access, Visibility};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    #[error("invalid config {path}: {message}")]
    /// The file is not valid TOML for Silo.
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line.
        message: String,
    },
    #[error("invalid config{}: {message}", origin.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    /// A value is refused.
    Invalid {
        /// The file, if it came from one.
        origin: Option<PathBuf>,
        /// Which value, and why.
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
/// Silo's configuration (`silo.toml`), validated.
pub struct Config {
    /// Metadata cache, staging area and compiled-plugin cache.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Compiled-plugin cache (default: `<data_dir>/compiled`).
    pub compile_cache: Option<PathBuf>,
    /// The only directory plugin components are loaded from.
    #[serde(default = "default_plugin_dir")]
    pub plugin_dir: PathBuf,
    /// This node's name (default: the host name): in audit records, and
    /// for finishing the writes a stopped process left half-recorded. Each
    /// `silo serve` of a site needs its own.
    pub node: Option<String>,
    /// The volumes, by name.
    pub volumes: BTreeMap<String, VolumeConfig>,
    /// The upload pipeline, in order.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// Write-xor-execute: names and content no volume may hold.
    #[serde(default)]
    pub content_policy: crate::policy::ContentPolicy,
    /// `silo serve`: address and where its secrets are read from.
    #[serde(default)]
    pub serve: ServeConfig,
    /// The S3 endpoint of `silo serve`; off when absent.
    pub s3_api: Option<S3ApiConfig>,
    /// Host-wide bounds shared by every invocation.
    #[serde(default)]
    pub limits: HostLimits,
    /// Where the metadata cache lives: a SQLite file (one node) or a shared
    /// PostgreSQL database (several nodes).
    #[serde(default)]
    pub metadata: MetadataConfig,
    /// The audit trail of every change (see `silo_host::audit`).
    #[serde(default)]
    pub audit: AuditConfig,
    /// Where the config came from (`None`: the built-in default).
    #[serde(skip)]
    pub origin: Option<PathBuf>,
}

/// The sidecar's settings. Secrets are never written in the config: it
/// names files holding them (as systemd credentials and container secrets
/// provide), and `SILO_TOKEN`, `SILO_ADMIN_TOKEN` and `SILO_SIGNING_KEY`
/// override those.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Address to listen on (default 127.0.0.1:8080); `--listen` overrides.
    pub listen: Option<std::net::SocketAddr>,
    /// File holding the write token.
    pub token_file: Option<PathBuf>,
    /// File holding the admin token (unset: admin routes are off).
    pub admin_token_file: Option<PathBuf>,
    /// File holding the key signed URLs are made with (default: the token).
    pub signing_key_file: Option<PathBuf>,
    /// File listing the principals: S3 key pairs and sidecar tokens, each
    /// with its grants (see `silo_host::principals`); reloaded on SIGHUP.
    pub credentials_file: Option<PathBuf>,
    /// On SIGTERM, how long requests in flight (uploads under way) may take
    /// to finish before the process exits anyway (default 30).
    pub drain_timeout_secs: Option<u64>,
}

/// `[s3_api]`: the S3 endpoint `silo serve` runs beside the sidecar.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3ApiConfig {
    /// Address to listen on.
    pub listen: std::net::SocketAddr,
    /// Virtual-host addressing (`bucket.<base_domain>`); path style always works.
    pub base_domain: Option<String>,
    /// The region clients sign for and GetBucketLocation answers.
    #[serde(default = "default_region")]
    pub region: String,
    /// A client idle for this long, sending headers or a body, is cut off.
    #[serde(default = "default_idle_secs")]
    pub idle_timeout_secs: u64,
    /// Multipart uploads not completed within this are removed.
    #[serde(default = "default_multipart_hours")]
    pub multipart_lifetime_hours: u64,
}

fn default_multipart_hours() -> u64 {
    24
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_idle_secs() -> u64 {
    30
}

/// The metadata cache's engine and front cache. The PostgreSQL URL holds a
/// password, so it never sits in the config: `SILO_DATABASE_URL`, else the
/// file `url_file` names.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataConfig {
    #[serde(default)]
    /// Where the metadata cache lives.
    pub backend: MetadataBackend,
    /// File holding the PostgreSQL URL (postgres only).
    pub url_file: Option<PathBuf>,
    /// Connections to PostgreSQL (1 to 256; default 16).
    pub pool_size: Option<usize>,
    /// Hot rows kept in this node's memory (0 to 10,000,000; default
    /// 100,000; 0 turns the front cache off).
    pub front_cache_entries: Option<usize>,
    /// How long a hot row is served before the engine is asked again, ms
    /// (1 to 60,000; default 1,000): the bound on a change unseen when an
    /// announcement is lost.
    pub front_cache_ttl_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
/// The metadata cache's engine.
pub enum MetadataBackend {
    /// `<data_dir>/meta.sqlite`.
    #[default]
    Sqlite,
    /// A PostgreSQL database several nodes share.
    Postgres,
}

/// `[audit]`: the trail of every change, kept in the metadata engine.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Record changes (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Days records are kept (1 to 36,500; default 90).
    #[serde(default = "default_keep_days")]
    pub keep_days: u32,
}

fn yes() -> bool {
    true
}

fn default_keep_days() -> u32 {
    crate::audit::DEFAULT_KEEP_DAYS
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            keep_days: crate::audit::DEFAULT_KEEP_DAYS,
        }
    }
}

impl Config {
    /// The audit trail's settings.
    pub fn audit_settings(&self) -> crate::audit::AuditSettings {
        crate::audit::AuditSettings {
            enabled: self.audit.enabled,
            node: self.node.clone().unwrap_or_else(crate::audit::node_name),
            keep_days: self.audit.keep_days,
        }
    }
}

/// Default of `[metadata] pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 16;

impl MetadataConfig {
    /// The front cache's settings.
    #[cfg_attr(feature = "internals", visibility::make(pub))]
    pub(crate) fn front(&self) -> crate::cache::FrontSettings {
        let mut front = crate::cache::FrontSettings::default();
        if let Some(n) = self.front_cache_entries {
            front.capacity = n;
        }
        if let Some(ms) = self.front_cache_ttl_ms {
            front.ttl = std::time::Duration::from_millis(ms);
        }
        front
    }

    /// The PostgreSQL URL: `SILO_DATABASE_URL`, else the contents of
    /// `url_file` (a trailing newline is not part of it).
    pub fn database_url(&self) -> Result<String, String> {
        if let Ok(url) = std::env::var("SILO_DATABASE_URL")
            && !url.trim().is_empty()
        {
            return Ok(url.trim().to_owned());
        }
        let Some(file) = &self.url_file else {
            return Err(
                "[metadata] backend = \"postgres\" needs SILO_DATABASE_URL or a url_file holding the URL".into(),
            );
        };
        let url = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read [metadata] url_file {}: {e}", file.display()))?;
        let url = url.trim_end_matches(['\n', '\r']).trim().to_owned();
        if url.is_empty() {
            return Err(format!("[metadata] url_file {} is empty", file.display()));
        }
        Ok(url)
    }
}

/// Bounds on what all plugins together can make the host hold.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostLimits {
    /// Memory streamed writes may buffer at once, across every invocation,
    /// MiB (default 256; at least the largest `part_size_mib` plus 1).
    /// Writers wait for room rather than allocate past it.
    #[serde(default = "default_write_buffer_mib")]
    pub write_buffer_mib: u64,
    /// Memory for small files read often (up to 256 KiB each), MiB
    /// (default 64; 0: off). See `crate::hotcache`.
    #[serde(default = "default_memory_cache_mib")]
    pub memory_cache_mib: u64,
    /// Longest a write waits for room in the write budget, or an upload
    /// for a place among `max_uploads`, seconds (default 30): past it the
    /// client is answered 503 `busy` (S3: `SlowDown`) and may retry.
    #[serde(default = "default_write_wait_secs")]
    pub write_wait_secs: u64,
    /// Uploads this node stages, judges and stores at once (default 256);
    /// more wait in turn. Each holds up to 256 KiB in memory while small.
    #[serde(default = "default_max_uploads")]
    pub max_uploads: u64,
    /// Open connections each door (the sidecar, the S3 endpoint) keeps
    /// (default 4096); past it a new one is answered 503 and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// `/readyz` answers 503 once writers have waited this long with none
    /// served, seconds (default 10); ready again when one is.
    #[serde(default = "default_stall_secs")]
    pub stall_secs: u64,
}

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits {
            write_buffer_mib: default_write_buffer_mib(),
            memory_cache_mib: default_memory_cache_mib(),
            write_wait_secs: default_write_wait_secs(),
            max_uploads: default_max_uploads(),
            max_connections: default_max_connections(),
            stall_secs: default_stall_secs(),
        }
    }
}

fn default_write_wait_secs() -> u64 {
    crate::budget::DEFAULT_WRITE_WAIT.as_secs()
}

fn default_max_uploads() -> u64 {
    256
}

fn default_max_connections() -> u64 {
    4096
}

fn default_stall_secs() -> u64 {
    10
}

fn default_memory_cache_mib() -> u64 {
    crate::hotcache::DEFAULT_MEMORY_CACHE_MIB
}

fn default_write_buffer_mib() -> u64 {
    crate::budget::DEFAULT_WRITE_BUFFER_MIB
}

/// Largest `write_buffer_mib`.
pub const MAX_WRITE_BUFFER_MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
/// Where a volume's objects live.
pub enum Backend {
    /// A directory on this machine.
    Local,
    /// Held in memory, gone on exit (tests, demos).
    Memory,
    /// An S3 bucket (AWS or any S3-compatible server).
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
/// One volume's settings.
pub struct VolumeConfig {
    /// Where its objects live.
    pub backend: Backend,
    /// Directory of a `local` volume.
    pub path: Option<PathBuf>,
    /// Bucket of an `s3` volume.
    pub bucket: Option<String>,
    /// Key prefix of an `s3` volume inside its bucket, so that one bucket
    /// can hold several volumes.
    pub prefix: Option<String>,
    /// An S3-compatible server (`https://s3.example.net`); unset for AWS.
    pub endpoint_url: Option<String>,
    /// Unset: from the AWS chain (`AWS_REGION`, profile), else `us-east-1`.
    pub region: Option<String>,
    /// Put the bucket in the path, not the host name. Default: true when
    /// `endpoint_url` is set (most S3-compatible servers need it).
    pub path_style: Option<bool>,
    /// Part size of multipart uploads, MiB (5 to 64; default 8). Parts are
    /// buffered in memory, from `[limits] write_buffer_mib`.
    pub part_size_mib: Option<u64>,
    /// Longest one attempt of an S3 request may take, and longest a
    /// response may stall, seconds (1 to 3600; default 30).
    pub request_timeout_secs: Option<u64>,
    /// Attempts per S3 request, the first included (1 to 10; default 3).
    /// Retries back off exponentially, as the AWS SDKs do.
    pub max_attempts: Option<u32>,
    /// Size of a local disk cache of files read from this s3 volume, MiB
    /// (unset: no cache). Least recently used files go first.
    pub read_cache_mib: Option<u64>,
    /// Files in the read cache not read for this long are dropped, seconds
    /// (default 86400).
    pub read_cache_inactive_secs: Option<u64>,
    #[serde(default = "default_visibility")]
    /// Whether anyone may read its files.
    pub visibility: Visibility,
    /// Base URL the public files are served from.
    pub public_url: Option<String>,
    /// `canonical` (default) or `read-through`; see docs/SEMANTICS.md.
    #[serde(default)]
    pub cache: crate::vfs::CacheMode,
    /// Largest upload into this volume, MiB (1 to 5242880, S3's 5 TiB;
    /// default 1024). A longer body is cut off and refused, nothing kept.
    pub max_upload_mib: Option<u64>,
    /// Dynamic images (`/v1/images/...`): the sizes served and the cap on
    /// variants per original.
    #[serde(default)]
    pub images: crate::images::ImagesConfig,
    /// Cross-origin rules browsers are answered with (`[[volumes.<name>.cors]]`,
    /// S3's bucket CORS). Set here, they are fixed: clients cannot change
    /// them. Unset, a principal with the `admin` grant may (PutBucketCors).
    pub cors: Option<Vec<crate::cors::CorsRule>>,
}

/// Default of `max_upload_mib`.
pub const DEFAULT_MAX_UPLOAD_MIB: u64 = 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
/// One plugin of the upload pipeline.
pub struct PluginConfig {
    /// Its name, in reports and logs.
    pub name: String,
    /// A file in `plugin_dir`, or `builtin:<name>` for a bundled example.
    pub component: String,
    /// Hex sha256 of the component; required for files.
    pub sha256: Option<String>,
    /// Content types (`image/jpeg`, `image/*`, `*/*`) the plugin handles.
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    #[serde(default)]
    /// Settings handed to the plugin with each call, as text.
    pub settings: BTreeMap<String, toml::Value>,
    #[serde(default)]
    /// What one invocation may use.
    pub limits: Limits,
    #[serde(default)]
    /// Where it may read and write.
    pub grants: Vec<GrantConfig>,
    /// Styles the plugin derives on request (`on-derive`), stored at
    /// `styles/<style>/<path>` beside the source.
    #[serde(default)]
    pub styles: Vec<String>,
}

/// Per-invocation limits of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory, MiB.
    pub memory_mib: u64,
    /// Wall-clock time, milliseconds.
    pub time_ms: u64,
    /// Bytes written in all.
    pub bytes_written: u64,
    /// Objects written.
    pub objects_written: u64,
    /// Largest single object.
    pub max_object_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: 128,
            time_ms: 10_000,
            bytes_written: 256 << 20,
            objects_written: 64,
            max_object_bytes: 64 << 20,
        }
    }
}

/// Hard ceiling on `memory_mib`: one pooling-allocator slot.
pub const MAX_MEMORY_MIB: u64 = 4096;
/// Hard ceiling on `time_ms`.
pub const MAX_TIME_MS: u64 = 10 * 60 * 1000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
/// A plugin's right on part of a volume.
pub struct GrantConfig {
    /// Spanned, so that errors can name the line.
    pub volume: toml::Spanned<String>,
    #[serde(default)]
    /// Paths under this prefix (empty: the whole volume).
    pub prefix: String,
    /// What it may do there.
    pub access: Vec<Access>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("silo-data")
}
fn default_plugin_dir() -> PathBuf {
    PathBuf::from("plugins")
}
fn default_visibility() -> Visibility {
    Visibility::Private
}
fn default_events() -> Vec<String> {
    vec!["*/*".into()]
}

/// The built-in default, as TOML, so that it doubles as an example.
pub const DEFAULT_CONFIG: &str = r#"
data_dir = "silo-data/state"
plugin_dir = "silo-data/plugins"

[volumes.public]
backend = "local"
path = "silo-data/public"
visibility = "public"

[volumes.private]
backend = "local"
path = "silo-data/private"
visibility = "private"

[[plugins]]
name = "upload-guard"
component = "builtin:upload-guard"
events = ["*/*"]
settings = { max_bytes = 52428800 }
limits = { memory_mib = 32, time_ms = 2000 }
grants = [
    { volume = "public", access = ["read"] },
    { volume = "private", access = ["read"] },
]

[[plugins]]
name = "image-styles"
component = "builtin:image-styles"
events = ["image/jpeg", "image/png", "image/webp", "image/gif"]
styles = ["thumbnail", "medium", "image"]
limits = { memory_mib = 512, time_ms = 30000 }
grants = [
    { volume = "public", access = ["read"] },
    { volume = "public", prefix = "styles", access = ["read", "write", "delete"] },
    { volume = "public", prefix = "variants", access = ["read", "write", "delete"] },
    { volume = "private", access = ["read"] },
    { volume = "private", prefix = "styles", access = ["read", "write", "delete"] },
    { volume = "private", prefix = "variants", access = ["read", "write", "delete"] },
]
"#;

impl Config {
    /// Parse and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, base, Some(path.to_owned()))
    }

    /// The built-in default, with paths relative to `base`.
    pub fn builtin_default(base: &Path) -> Config {
        Self::parse(DEFAULT_CONFIG, base, None).expect("the built-in default config is valid")
    }

    /// Parse and validate TOML text; relative paths are taken from `base`.
    pub fn parse(text: &str, base: &Path, origin: Option<PathBuf>) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.clone().unwrap_or_else(|| "(built-in)".into()),
            message: e.to_string(),
        })?;
        config.origin = origin;
        let absolute = |p: &Path| if p.is_absolute() { p.to_owned() } else { base.join(p) };
        config.data_dir = absolute(&config.data_dir);
        config.plugin_dir = absolute(&config.plugin_dir);
        config.compile_cache = Some(absolute(
            &config
                .compile_cache
                .take()
                .unwrap_or_else(|| config.data_dir.join("compiled")),
        ));
        for volume in config.volumes.values_mut() {
            volume.path = volume.path.as_deref().map(absolute);
            volume.images.signing_key_file = volume.images.signing_key_file.as_deref().map(absolute);
        }
        for file in [
            &mut config.metadata.url_file,
            &mut config.serve.token_file,
            &mut config.serve.admin_token_file,
            &mut config.serve.signing_key_file,
            &mut config.serve.credentials_file,
        ] {
            *file = file.as_deref().map(absolute);
        }
        config.validate(text)?;
        Ok(config)
    }

    fn invalid(&self, message: String) -> ConfigError {
        ConfigError::Invalid {
            origin: self.origin.clone(),
            message,
        }
    }

    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let line = |span: std::ops::Range<usize>| text.get(..span.start).map_or(0, |t| t.matches('\n').count() + 1);
        if self.volumes.is_empty() {
            return Err(self.invalid("no volumes are configured; add a [volumes.<name>] table".into()));
        }
        let m = &self.metadata;
        if m.backend == MetadataBackend::Sqlite
            && let Some(key) = [("url_file", m.url_file.is_some()), ("pool_size", m.pool_size.is_some())]
                .iter()
                .find_map(|(k, set)| set.then_some(*k))
        {
            return Err(self.invalid(format!("[metadata] `{key}` is only for backend = \"postgres\"")));
        }
        if m.pool_size.is_some_and(|n| !(1..=256).contains(&n)) {
            return Err(self.invalid("[metadata] pool_size must be 1..=256".into()));
        }
        if m.front_cache_entries.is_some_and(|n| n > 10_000_000) {
            return Err(self.invalid("[metadata] front_cache_entries must be 0..=10000000".into()));
        }
        if m.front_cache_ttl_ms.is_some_and(|ms| !(1..=60_000).contains(&ms)) {
            return Err(self.invalid("[metadata] front_cache_ttl_ms must be 1..=60000".into()));
        }
        if !(1..=36_500).contains(&self.audit.keep_days) {
            return Err(self.invalid(format!(
                "[audit] keep_days must be 1..=36500, not {}",
                self.audit.keep_days
            )));
        }
        if let Some(node) = &self.node
            && (node.is_empty() || node.len() > 128 || node.chars().any(char::is_control))
        {
            return Err(self.invalid("`node` must be 1 to 128 printable characters".into()));
        }
        if !(1..=MAX_WRITE_BUFFER_MIB).contains(&self.limits.write_buffer_mib) {
            return Err(self.invalid(format!(
                "[limits] write_buffer_mib must be 1..={MAX_WRITE_BUFFER_MIB}, not {}",
                self.limits.write_buffer_mib
            )));
        }
        for (name, value, max) in [
            ("write_wait_secs", self.limits.write_wait_secs, 3600),
            ("max_uploads", self.limits.max_uploads, 1 << 20),
            ("max_connections", self.limits.max_connections, 1 << 20),
            ("stall_secs", self.limits.stall_secs, 3600),
        ] {
            if !(1..=max).contains(&value) {
                return Err(self.invalid(format!("[limits] {name} must be 1..={max}, not {value}")));
            }
        }
        if self.limits.memory_cache_mib > MAX_WRITE_BUFFER_MIB {
            return Err(self.invalid(format!(
                "[limits] memory_cache_mib must be 0..={MAX_WRITE_BUFFER_MIB}, not {}",
                self.limits.memory_cache_mib
            )));
        }
        if let Some(s3) = &self.s3_api {
            if !(1..=3600).contains(&s3.idle_timeout_secs) {
                return Err(self.invalid("[s3_api] idle_timeout_secs must be 1..=3600".into()));
            }
            if !(1..=24 * 30).contains(&s3.multipart_lifetime_hours) {
                return Err(self.invalid("[s3_api] multipart_lifetime_hours must be 1..=720".into()));
            }
            if s3.region.is_empty()
                || !s3
                    .region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(self.invalid(format!("[s3_api] region '{}' is not a region name", s3.region)));
            }
            if let Some(domain) = &s3.base_domain {
                let label_ok = |l: &str| {
                    !l.is_empty()
                        && l.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                };
                if !domain.split('.').all(label_ok) {
                    return Err(self.invalid(format!(
                        "[s3_api] base_domain '{domain}' must be a lower-case domain name without a port"
                    )));
                }
            }
        }
        let plugin_dir = resolve(&self.plugin_dir);
        let data_dir = resolve(&self.data_dir);
        let mut local_paths: Vec<(&str, PathBuf)> = Vec::new();
        type Place = (Option<String>, String);
        let mut buckets: Vec<(&str, Place, String)> = Vec::new();
        for (name, volume) in &self.volumes {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(self.invalid(format!(
                    "volume name '{name}' may only use lower-case letters, digits, '-' and '_'"
                )));
            }
            volume
                .max_upload_bytes()
                .map_err(|m| self.invalid(format!("volume '{name}': {m}")))?;
            if let Some(rules) = &volume.cors {
                crate::cors::check_rules(rules).map_err(|m| self.invalid(format!("volume '{name}': cors: {m}")))?;
            }
            match (volume.backend, &volume.path) {
                (Backend::Local, None) => {
                    return Err(self.invalid(format!("volume '{name}': a local volume needs `path`")));
                }
                (Backend::Local, Some(path)) => {
                    let path = resolve(path);
                    let compile_cache = resolve(self.compile_cache.as_deref().unwrap_or(&data_dir));
                    for (what, dir) in [
                        ("plugin_dir", &plugin_dir),
                        ("data_dir", &data_dir),
                        ("compile_cache", &compile_cache),
                    ] {
                        if overlaps(&path, dir) {
                            return Err(self.invalid(format!(
                                "volume '{name}' ({}) overlaps {what} ({}); uploaded files and code or state must never share a directory",
                                path.display(),
                                dir.display()
                            )));
                        }
                    }
                    if let Some((other, _)) = local_paths.iter().find(|(_, p)| overlaps(p, &path)) {
                        return Err(self.invalid(format!("volumes '{other}' and '{name}' overlap")));
                    }
                    local_paths.push((name, path));
                }
                (Backend::Memory | Backend::S3, Some(_)) => {
                    return Err(self.invalid(format!("volume '{name}': `path` is only for local volumes")));
                }
                (Backend::Memory, None) => {}
                (Backend::S3, None) => {
                    let settings = volume
                        .s3_settings()
                        .map_err(|m| self.invalid(format!("volume '{name}': {m}")))?;
                    let budget = self.limits.write_buffer_mib;
                    if settings.part_size >> 20 >= budget {
                        return Err(self.invalid(format!(
                            "volume '{name}': its {} MiB parts do not fit in [limits] write_buffer_mib = {budget}; raise it above {}",
                            settings.part_size >> 20,
                            settings.part_size >> 20
                        )));
                    }
                    let place = (settings.endpoint_url.clone(), settings.bucket.clone());
                    if let Some((other, _, _)) = buckets
                        .iter()
                        .find(|(_, p, prefix)| *p == place && prefixes_overlap(prefix, &settings.prefix))
                    {
                        return Err(self.invalid(format!(
                            "volumes '{other}' and '{name}' overlap in bucket '{}'; give each its own prefix",
                            settings.bucket
                        )));
                    }
                    buckets.push((name, place, settings.prefix));
                    volume
                        .read_cache_settings()
                        .map_err(|m| self.invalid(format!("volume '{name}': {m}")))?;
                }
            }
            if volume.backend != Backend::S3 {
                let s3_only = [
                    ("bucket", volume.bucket.is_some()),
                    ("prefix", volume.prefix.is_some()),
                    ("endpoint_url", volume.endpoint_url.is_some()),
                    ("region", volume.region.is_some()),
                    ("path_style", volume.path_style.is_some()),
                    ("part_size_mib", volume.part_size_mib.is_some()),
                    ("max_attempts", volume.max_attempts.is_some()),
                    ("request_timeout_secs", volume.request_timeout_secs.is_some()),
                    ("read_cache_mib", volume.read_cache_mib.is_some()),
                    ("read_cache_inactive_secs", volume.read_cache_inactive_secs.is_some()),
                ];
                if let Some((key, _)) = s3_only.iter().find(|(_, set)| *set) {
                    return Err(self.invalid(format!("volume '{name}': `{key}` is only for s3 volumes")));
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        for plugin in &self.plugins {
            let who = format!("plugin '{}'", plugin.name);
            if plugin.name.is_empty() || !names.insert(plugin.name.as_str()) {
                return Err(self.invalid(format!("plugin names must be unique and non-empty ({who})")));
            }
            if let Some(pin) = &plugin.sha256
                && (pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(self.invalid(format!("{who}: sha256 must be 64 hex digits, not '{pin}'")));
            }
            if plugin.events.is_empty() || plugin.events.iter().any(|e| !valid_event(e)) {
                return Err(self.invalid(format!(
                    "{who}: events must be content-type patterns like 'image/jpeg', 'image/*' or '*/*'"
                )));
            }
            let l = plugin.limits;
            if !(1..=MAX_MEMORY_MIB).contains(&l.memory_mib) {
                return Err(self.invalid(format!("{who}: limits.memory_mib must be 1..={MAX_MEMORY_MIB}")));
            }
            if !(1..=MAX_TIME_MS).contains(&l.time_ms) {
                return Err(self.invalid(format!("{who}: limits.time_ms must be 1..={MAX_TIME_MS}")));
            }
            for grant in &plugin.grants {
                if !self.volumes.contains_key(grant.volume.get_ref()) {
                    return Err(self.invalid(format!(
                        "line {}: {who}: a grant names volume '{}', which is not configured",
                        line(grant.volume.span()),
                        grant.volume.get_ref()
                    )));
                }
                crate::path::check_prefix(&grant.prefix)
                    .map_err(|e| self.invalid(format!("{who}: grant prefix '{}': {e}", grant.prefix)))?;
                if grant.access.is_empty() {
                    return Err(self.invalid(format!(
                        "{who}: a grant on '{}' gives no access",
                        grant.volume.get_ref()
                    )));
                }
                if grant.access.contains(&crate::vfs::Access::Admin) {
                    return Err(self.invalid(format!(
                        "{who}: a grant on '{}' gives `admin`, a principal's right: plugins never change a volume's settings",
                        grant.volume.get_ref()
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// Check an upload destination (`<volume>/<path>`) against this config
    /// without opening anything.
    pub fn check_target(&self, spec: &str) -> Result<(), crate::StorageError> {
        let (volume, path) = crate::path::split_target(spec)?;
        if !self.volumes.contains_key(volume) {
            return Err(crate::StorageError::InvalidPath(format!(
                "there is no volume named '{volume}'"
            )));
        }
        crate::path::VolumePath::parse(path).map(|_| ())
    }
}

impl VolumeConfig {
    /// The S3 settings of an `s3` volume, checked.
    pub fn s3_settings(&self) -> Result<crate::store::S3Settings, String> {
        let bucket = self.bucket.as_deref().ok_or("an s3 volume needs `bucket`")?;
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
            && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !valid_bucket {
            return Err(format!(
                "'{bucket}' is not a valid bucket name (3 to 63 lower-case letters, digits, '-' and '.')"
            ));
        }
        let mut settings = crate::store::S3Settings::new(bucket);
        let prefix = self.prefix.as_deref().unwrap_or("").trim_matches('/');
        if !prefix.is_empty() {
            crate::path::VolumePath::parse(prefix).map_err(|e| format!("prefix '{prefix}': {e}"))?;
        }
        settings.prefix = prefix.to_owned();
        if let Some(url) = &self.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!("endpoint_url '{url}' must start with http:// or https://"));
        }
        settings.endpoint_url.clone_from(&self.endpoint_url);
        settings.region.clone_from(&self.region);
        settings.path_style = self.path_style.unwrap_or(self.endpoint_url.is_some());
        if let Some(mib) = self.part_size_mib {
            let max = crate::store::s3::MAX_PART_SIZE >> 20;
            if !(5..=max).contains(&mib) {
                return Err(format!(
                    "part_size_mib must be 5..={max}, not {mib} (parts are buffered in memory)"
                ));
            }
            settings.part_size = mib << 20;
        }
        if let Some(secs) = self.request_timeout_secs {
            if !(1..=3600).contains(&secs) {
                return Err(format!("request_timeout_secs must be 1..=3600, not {secs}"));
            }
            settings.request_timeout = std::time::Duration::from_secs(secs);
        }
        if let Some(n) = self.max_attempts {
            if !(1..=10).contains(&n) {
                return Err(format!("max_attempts must be 1..=10, not {n}"));
            }
            settings.max_attempts = n;
        }
        Ok(settings)
    }

    /// The largest upload into this volume, bytes.
    pub fn max_upload_bytes(&self) -> Result<u64, String> {
        match self.max_upload_mib {
            None => Ok(DEFAULT_MAX_UPLOAD_MIB << 20),
            Some(mib) if (1..=5 << 20).contains(&mib) => Ok(mib << 20),
            Some(mib) => Err(format!("max_upload_mib must be 1..=5242880, not {mib}")),
        }
    }

    /// The disk read cache of an `s3` volume, if it has one.
    #[cfg_attr(feature = "internals", visibility::make(pub))]
    pub(crate) fn read_cache_settings(&self) -> Result<Option<crate::readcache::ReadCacheSettings>, String> {
        let inactive = match self.read_cache_inactive_secs {
            Some(s) if !(1..=365 * 86400).contains(&s) => {
                return Err(format!("read_cache_inactive_secs must be 1..=31536000, not {s}"));
            }
            Some(s) => s,
            None => 86400,
        };
        match self.read_cache_mib {
            None if self.read_cache_inactive_secs.is_some() => {
                Err("read_cache_inactive_secs needs read_cache_mib".into())
            }
            None => Ok(None),
            Some(mib) if !(1..=1 << 24).contains(&mib) => {
                Err(format!("read_cache_mib must be 1..=16777216, not {mib}"))
            }
            Some(mib) => Ok(Some(crate::readcache::ReadCacheSettings {
                max_bytes: mib << 20,
                inactive: std::time::Duration::from_secs(inactive),
            })),
        }
    }
}

/// Whether two key prefixes (no trailing '/') can hold the same key.
fn prefixes_overlap(a: &str, b: &str) -> bool {
    let contains =
        |outer: &str, inner: &str| outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}/"));
    contains(a, b) || contains(b, a)
}

impl PluginConfig {
    /// Settings as strings, the form plugins receive.
    pub fn settings_strings(&self) -> Vec<(String, String)> {
        self.settings
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    },
                )
            })
            .collect()
    }

    /// Whether the plugin handles uploads of this content type.
    pub fn handles(&self, content_type: &str) -> bool {
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let (top, _) = essence.split_once('/').unwrap_or((&essence, ""));
        self.events
            .iter()
            .any(|e| e == "*/*" || *e == essence || e.strip_suffix("/*").is_some_and(|t| t == top))
    }
}

fn valid_event(e: &str) -> bool {
    matches!(e.split_once('/'), Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains('/'))
}

/// Make a path absolute and lexically clean (no `.`/`..`), without touching
/// the filesystem (the directories may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let path = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Where `path` really is: [`normalize`]d, then its longest existing
/// ancestor resolved through symbolic links, so that a link cannot make a
/// volume and a state or code directory one place under two names.
fn resolve(path: &Path) -> PathBuf {
    let path = normalize(path);
    let mut rest = Vec::new();
    let mut existing = path.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(existing) {
            return rest.iter().rev().fold(real, |at, name| at.join(name));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return path,
        }
    }
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_volumes_share_a_bucket_under_disjoint_prefixes() {
        let c = parse(
            "[volumes.public]\nbackend = \"s3\"\nbucket = \"site\"\nprefix = \"/public/\"\nendpoint_url = \"http://127.0.0.1:8333\"\n\
             [volumes.private]\nbackend = \"s3\"\nbucket = \"site\"\nprefix = \"private\"\nendpoint_url = \"http://127.0.0.1:8333\"\npart_size_mib = 16",
        )
        .unwrap();
        let public = c.volumes["public"].s3_settings().unwrap();
        assert_eq!(public.prefix, "public");
        assert!(public.path_style, "an endpoint_url implies path-style");
        assert_eq!(public.part_size, 8 << 20);
        assert_eq!(c.volumes["private"].s3_settings().unwrap().part_size, 16 << 20);
        assert!(prefixes_overlap("", "x"));
        assert!(!prefixes_overlap("pub", "public"));
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/srv/silo"), Some("/srv/silo/silo.toml".into()))
    }

    /// Each state or code directory against a volume inside it, named
    /// directly and through a symbolic link; and two volumes made one by a
    /// link.
    #[test]
    fn volumes_may_not_overlap_state_or_code_even_through_links() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        for d in ["state", "elsewhere/cache", "plugins", "real-up"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::os::unix::fs::symlink(base.join("state"), base.join("up-link")).unwrap();
        std::os::unix::fs::symlink(base.join("elsewhere/cache"), base.join("cache-link")).unwrap();
        std::os::unix::fs::symlink(base.join("plugins"), base.join("plugins-link")).unwrap();
        std::os::unix::fs::symlink(base.join("real-up"), base.join("other-up")).unwrap();
        let head = "data_dir = \"state\"\nplugin_dir = \"plugins\"\ncompile_cache = \"elsewhere/cache\"\n";
        let volume = |name: &str, path: &str| format!("[volumes.{name}]\nbackend = \"local\"\npath = \"{path}\"\n");
        for (volumes, why) in [
            (volume("a", "state/up"), "overlaps data_dir"),
            (volume("a", "elsewhere/cache/up"), "overlaps compile_cache"),
            (volume("a", "elsewhere"), "overlaps compile_cache"),
            (volume("a", "up-link/public"), "overlaps data_dir"),
            (volume("a", "cache-link/x/y"), "overlaps compile_cache"),
            (volume("a", "plugins-link"), "overlaps plugin_dir"),
            (
                volume("a", "real-up/public") + &volume("b", "other-up"),
                "volumes 'a' and 'b' overlap",
            ),
        ] {
            let text = format!("{head}{volumes}");
            let err = Config::parse(&text, base, None).expect_err(&text).to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
        // The same layout without the overlaps is accepted.
        let text = format!(
            "{head}{}{}",
            volume("a", "real-up/public"),
            volume("b", "real-up/private")
        );
        Config::parse(&text, base, None).unwrap();
    }

    #[test]
    fn builtin_default_is_valid() {
        let c = Config::builtin_default(Path::new("/tmp/x"));
        assert_eq!(c.volumes.len(), 2);
        assert_eq!(c.plugins.len(), 2);
        assert_eq!(
            c.volumes["public"].path.as_deref(),
            Some(Path::new("/tmp/x/silo-data/public"))
        );
        assert!(c.plugins[1].handles("image/JPEG"));
        assert!(!c.plugins[1].handles("text/plain"));
        assert!(c.plugins[0].handles("application/pdf; charset=x"));
    }

    #[test]
    fn refuses_bad_configs_with_a_reason() {
        for (text, why) in [
            ("volumes = {}", "no volumes"),
            ("[volumes.a]\nbackend = \"local\"", "needs `path`"),
            ("[volumes.a]\nbackend = \"ftp\"", "unknown variant"),
            ("[volumes.a]\nbackend = \"memory\"\ncolour = 1", "unknown field"),
            (
                "plugin_dir = \"p\"\n[volumes.a]\nbackend = \"local\"\npath = \"p/up\"",
                "overlaps plugin_dir",
            ),
            (
                "[volumes.a]\nbackend = \"local\"\npath = \"x\"\n[volumes.b]\nbackend = \"local\"\npath = \"x/y\"",
                "overlap",
            ),
            ("[volumes.A]\nbackend = \"memory\"", "lower-case"),
            (
                "[volumes.a]\nbackend = \"memory\"\nmax_upload_mib = 0",
                "volume 'a': max_upload_mib must be 1..=5242880, not 0",
            ),
            (
                "[volumes.a]\nbackend = \"memory\"\n[[plugins]]\nname = \"p\"\ncomponent = \"p.wasm\"\ngrants = [{ volume = \"b\", access = [\"read\"] }]",
                "line 6: plugin 'p': a grant names volume 'b', which is not configured",
            ),
            (
                "[volumes.a]\nbackend = \"memory\"\n[[plugins]]\nname = \"p\"\ncomponent = \"p.wasm\"\nsha256 = \"xyz\"",
                "64 hex digits",
            ),
            (
                "[volumes.a]\nbackend = \"memory\"\n[[plugins]]\nname = \"p\"\ncomponent = \"p.wasm\"\nlimits = { memory_mib = 0 }",
                "memory_mib",
            ),
            (
                "[volumes.a]\nbackend = \"memory\"\n[[plugins]]\nname = \"p\"\ncomponent = \"p.wasm\"\ngrants = [{ volume = \"a\", access = [\"read\", \"admin\"] }]",
                "plugin 'p': a grant on 'a' gives `admin`, a principal's right",
            ),
            (
                "[volumes.a]\nbackend = \"memory\"\n[[volumes.a.cors]]\nallowed_origins = [\"*\"]\nallowed_methods = [\"PATCH\"]",
                "volume 'a': cors: rule 1: unsupported method 'PATCH'",
            ),
            (
                "[volumes.a]\nbackend = \"memory\"\n[[volumes.a.cors]]\nallowed_origins = [\"*\"]\nallowed_methods = [\"GET\"]\nallowed_header = [\"*\"]",
                "allowed_header",
            ),
            ("[volumes.a\nbackend = 1", "line 1"),
            ("[volumes.a]\nbackend = \"s3\"", "needs `bucket`"),
            (
                "[volumes.a]\nbackend = \"s3\"\nbucket = \"Up_Loads\"",
                "not a valid bucket name",
            ),
            (
                "[volumes.a]\nbackend = \"s3\"\nbucket = \"up\"",
                "not a valid bucket name",
            ),
            (
                "[volumes.a]\nbackend = \"s3\"\nbucket = \"ups\"\npath = \"x\"",
                "only for local",
            ),
            (
                "[volumes.a]\nbackend = \"local\"\npath = \"x\"\nbucket = \"ups\"",
                "`bucket` is only for s3",
            ),
            (
                "[volumes.a]\nbackend = \"s3\"\nbucket = \"ups\"\nprefix = \"a/../b\"",
                "prefix 'a/../b'",
            ),
            (
                "[volumes.a]\nbackend = \"s3\"\nbucket = \"ups\"\npart_size_mib = 4",
                "part_size_mib",
            ),
            (
                "[volumes.a]\nbackend = \"s3\"\nbucket = \"ups\"\nendpoint_url = \"localhost:9000\"",
                "http://",
            ),
            (
                "[volumes.a]\nbackend = \"s3\"\nbucket = \"ups\"\nprefix = \"site\"\n[volumes.b]\nbackend = \"s3\"\nbucket = \"ups\"\nprefix = \"site/private\"",
                "overlap in bucket 'ups'",
            ),
        ] {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }
}
