//! Test harness: real plugins (built from plugins/ by build.rs), real
//! SQLite files, real directories. Each test gets its own temporary Silo.

use std::path::{Path, PathBuf};

pub mod callgrind;
pub mod cluster;
pub mod guests;
pub mod http;
pub mod pg;
pub mod rss;
pub mod s3;
pub mod s3api;
pub mod seaweed;
pub mod watched;

use sha2::Digest;
use silo_host::{Config, Silo};

/// The `probe` test plugin (see plugins/probe).
pub const PROBE: &[u8] = include_bytes!(env!("SILO_TEST_PLUGIN_PROBE"));
/// The `fs-thumbnails` plugin: plain `std::fs` (see plugins/fs-thumbnails).
pub const FS_THUMBNAILS: &[u8] = include_bytes!(env!("SILO_TEST_PLUGIN_FS_THUMBNAILS"));

/// A pipeline of the built-in upload-guard alone, judging every type, for
/// volume `public`.
pub const GUARD_PIPELINE: &str = r#"
[[plugins]]
name = "upload-guard"
component = "builtin:upload-guard"
events = ["*/*"]
settings = { max_bytes = 67108864 }
limits = { memory_mib = 32, time_ms = 5000 }
grants = [{ volume = "public", access = ["read"] }]
"#;

/// Compiled components shared by all tests of a run, so each plugin is
/// compiled once rather than once per test.
pub fn shared_compile_cache() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-compiled");
    std::fs::create_dir_all(&dir).expect("create the shared compile cache");
    dir
}

/// The mode a plain new file of this process gets: 0666 less the umask
/// (read from /proc, as std offers no umask call).
pub fn plain_file_mode() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .expect("Umask in /proc/self/status");
    0o666 & !umask
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A Silo in a temporary directory with local volumes `public` and
/// `private` and the given pipeline (TOML `[[plugins]]` tables).
pub struct TestSilo {
    pub dir: tempfile::TempDir,
    pub silo: Silo,
}

impl TestSilo {
    /// `plugin_files`: components written into the plugin directory,
    /// referenced from `pipeline` by file name (pins are filled in as
    /// `{sha256:<file>}`).
    pub async fn new(pipeline: &str, plugin_files: &[(&str, &[u8])]) -> anyhow::Result<TestSilo> {
        let volumes = "[volumes.public]\nbackend = \"local\"\npath = \"volumes/public\"\nvisibility = \"public\"\n\
                       public_url = \"https://cdn.example.test/files\"\n\n\
                       [volumes.private]\nbackend = \"local\"\npath = \"volumes/private\"\n";
        Self::with_volumes(pipeline, plugin_files, volumes).await
    }

    /// As [`TestSilo::new`], with `public` and `private` in one new bucket
    /// of the shared S3 server, under two prefixes. Returns the bucket.
    pub async fn on_s3(
        pipeline: &str,
        plugin_files: &[(&str, &[u8])],
        hint: &str,
    ) -> anyhow::Result<(TestSilo, String)> {
        let bucket = s3::bucket(hint).await;
        let volumes = format!(
            "{}{}",
            s3::volume_toml(
                "public",
                &bucket,
                "public",
                "visibility = \"public\"\npart_size_mib = 5"
            ),
            s3::volume_toml("private", &bucket, "private", "part_size_mib = 5"),
        );
        Ok((Self::with_volumes(pipeline, plugin_files, &volumes).await?, bucket))
    }

    /// A Silo with the given `[volumes.*]` tables (relative paths are inside
    /// the test's directory).
    pub async fn with_volumes(
        pipeline: &str,
        plugin_files: &[(&str, &[u8])],
        volumes: &str,
    ) -> anyhow::Result<TestSilo> {
        let dir = tempfile::tempdir()?;
        let plugin_dir = dir.path().join("plugins");
        std::fs::create_dir_all(&plugin_dir)?;
        let mut pipeline = pipeline.to_owned();
        for (file, bytes) in plugin_files {
            std::fs::write(plugin_dir.join(file), bytes)?;
            pipeline = pipeline.replace(&format!("{{sha256:{file}}}"), &sha256_hex(bytes));
        }
        let text = format!(
            r#"
data_dir = "state"
plugin_dir = "plugins"
compile_cache = "{cache}"

{volumes}

{pipeline}
"#,
            cache = shared_compile_cache().display()
        );
        let config_path = dir.path().join("silo.toml");
        std::fs::write(&config_path, text)?;
        let silo = Silo::open(Config::load(&config_path)?).await?;
        Ok(TestSilo { dir, silo })
    }

    /// The directory behind a volume.
    pub fn volume_dir(&self, volume: &str) -> PathBuf {
        self.dir.path().join("volumes").join(volume)
    }

    /// Write `bytes` to a scratch file and upload it to `target`.
    pub async fn upload(
        &self,
        target: &str,
        bytes: &[u8],
        content_type: Option<&str>,
    ) -> anyhow::Result<silo_host::UploadReport> {
        let source = tempfile::NamedTempFile::new_in(self.dir.path())?;
        std::fs::write(source.path(), bytes)?;
        Ok(self.silo.upload_file(target, source.path(), content_type).await?)
    }

    /// Every file under a volume's directory (relative paths, sorted),
    /// ignoring the store's own temporary directory.
    pub fn files_on_disk(&self, volume: &str) -> Vec<(String, u64)> {
        let root = self.volume_dir(volume);
        // A wrong path must not read as an empty volume.
        assert!(root.is_dir(), "volume directory {} is missing", root.display());
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.sort();
        out
    }
}

/// Every file under `root` (relative paths and sizes, sorted), ignoring
/// a local store's own temporary directory (which must be empty).
pub fn files_under(root: &Path) -> Vec<(String, u64)> {
    assert!(root.is_dir(), "{} is missing", root.display());
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel == ".silo-tmp" {
            assert_eq!(
                std::fs::read_dir(&path).unwrap().count(),
                0,
                "temporary files were left behind"
            );
            continue;
        }
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            walk(root, &path, out);
        } else {
            out.push((rel, meta.len()));
        }
    }
}

/// A JPEG of `width` x `height` (a gradient, so it compresses like a photo).
pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, image::ImageFormat::Jpeg)
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, image::ImageFormat::Png)
}

pub fn webp(width: u32, height: u32) -> Vec<u8> {
    encode(width, height, image::ImageFormat::WebP)
}

fn encode(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .expect("encode test image");
    out.into_inner()
}

/// A private volume over `store`, with no public URL or read cache, for
/// tests of the storage core without a config file.
pub fn bare_volume(
    name: &str,
    cache_mode: silo_host::vfs::CacheMode,
    store: std::sync::Arc<dyn silo_host::store::ObjectStore>,
) -> silo_host::vfs::Volume {
    silo_host::vfs::Volume {
        name: name.into(),
        visibility: silo_host::vfs::Visibility::Private,
        cache_mode,
        store,
        public_url: None,
        read_cache: None,
    }
}

/// Store `bytes` at `volume`/`path` through the storage core, declared as
/// `content_type` (no pipeline: an original put in place).
pub async fn store(silo: &Silo, volume: &str, path: &str, bytes: impl Into<bytes::Bytes>, content_type: &str) {
    let storage = silo.storage();
    let loc = storage.location(volume, path).unwrap();
    let options = silo_host::store::PutOptions {
        content_type: content_type.into(),
        ..Default::default()
    };
    storage.host_session().write(&loc, bytes.into(), options).await.unwrap();
}

/// A pipeline stage of the `probe` plugin (written into the plugin
/// directory as `probe.wasm`) named `name`, judging only uploads declared
/// as `content_type`, so that one pipeline can hold a stage per case.
/// `settings` and `grants` are the bodies of the TOML inline table and array.
pub fn probe_stage(name: &str, content_type: &str, settings: &str, grants: &str) -> String {
    format!(
        r#"
[[plugins]]
name = "{name}"
component = "probe.wasm"
sha256 = "{{sha256:probe.wasm}}"
events = ["{content_type}"]
settings = {{ {settings} }}
grants = [{grants}]
"#
    )
}

/// The built-in example plugins as pipeline stages, as in the default config.
pub const EXAMPLE_PIPELINE: &str = r#"
[[plugins]]
name = "upload-guard"
component = "builtin:upload-guard"
settings = { max_bytes = 1000000 }
grants = [{ volume = "public", access = ["read"] }, { volume = "private", access = ["read"] }]

[[plugins]]
name = "image-styles"
component = "builtin:image-styles"
events = ["image/jpeg", "image/png", "image/webp"]
limits = { memory_mib = 256 }
grants = [
    { volume = "public", access = ["read"] },
    { volume = "public", prefix = "styles", access = ["read", "write", "delete"] },
]
"#;

/// How many entries `session` lists in directory `dir` of `volume`, page
/// by page.
pub async fn count_dir(session: &silo_host::vfs::Session, volume: &str, dir: &str) -> usize {
    let (mut count, mut cursor) = (0, None::<String>);
    loop {
        let page = session
            .list(volume, dir, false, cursor.as_deref(), 1000)
            .await
            .expect("a directory page");
        count += page.entries.len();
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return count,
        }
    }
}

/// Grants to read all of `volume` and nothing else.
pub fn read_grant(volume: &str) -> std::sync::Arc<[silo_host::vfs::Grant]> {
    vec![silo_host::vfs::Grant {
        volume: volume.into(),
        prefix: String::new(),
        access: vec![silo_host::vfs::Access::Read],
    }]
    .into()
}

/// Everything logged at `level` and above on this thread (and the tasks a
/// current-thread runtime polls on it) while the guard lives.
pub fn capture_logs(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .finish();
    (logs, scoped_subscriber(subscriber))
}

/// `subscriber` as this thread's default while the guard lives, seeing
/// every event it is interested in even while sibling tests reach the same
/// callsites without one.
pub fn scoped_subscriber(
    subscriber: impl tracing::Subscriber + Send + Sync + 'static,
) -> tracing::subscriber::DefaultGuard {
    // tracing caches each callsite's interest process-wide. With one
    // dispatcher registered, a callsite first reached by a thread without a
    // subscriber (a sibling test) is computed against that thread's default
    // and cached as "never", so the capture would miss it (tokio-rs/tracing
    // #3611). A second, lasting dispatcher makes every registration ask all
    // live dispatchers, this one among them.
    static ANCHOR: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    ANCHOR.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let guard = tracing::subscriber::set_default(subscriber);
    // Callsites a sibling cached before this began ask again.
    tracing::callsite::rebuild_interest_cache();
    guard
}

/// A log writer that keeps everything written to it.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Forget what was logged so far.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Run `program` with `args` in `dir` and `env`: whether it succeeded,
/// and its stdout and stderr.
pub async fn run_tool(
    program: &str,
    args: Vec<String>,
    dir: &std::path::Path,
    env: Vec<(String, String)>,
) -> (bool, String, String) {
    let (program, dir) = (program.to_owned(), dir.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&program)
            .args(&args)
            // rclone's AWS SDK cannot load a CA bundle into its transport
            // (and the endpoint is plain HTTP).
            .env_remove("AWS_CA_BUNDLE")
            .envs(env)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("run {program} (tests/run installs it): {e}"))
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
