//! `silo plugin new | build | test`: a plugin project from nothing to a
//! tested component, outside the Silo repository. The Rust SDK and the
//! plugin world come with the binary: `new` writes them into the project.
//! `test` runs the project's cases through Silo's own pipeline, with the
//! grants, limits and settings of its `silo-plugin.toml`, on memory
//! volumes (real storage, not a mock of the WIT).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Deserialize;
use silo_host::config::PluginConfig;
use silo_host::listing::ListRequest;
use silo_host::{Caller, Config, Silo, Status};

/// The wit-bindgen the SDK is built with (the workspace's).
const WIT_BINDGEN: &str = "0.63.0";

/// The Rust SDK and the plugin world, as the binary carries them.
const SDK_FILES: &[(&str, &str)] = &[
    ("sdk/src/lib.rs", include_str!("../../guest-sdk/src/lib.rs")),
    ("wit/silo.wit", include_str!("../../wit/silo.wit")),
    (
        "wit/deps/clocks/clocks.wit",
        include_str!("../../wit/deps/clocks/clocks.wit"),
    ),
    (
        "wit/deps/filesystem/filesystem.wit",
        include_str!("../../wit/deps/filesystem/filesystem.wit"),
    ),
    ("wit/deps/io/io.wit", include_str!("../../wit/deps/io/io.wit")),
];

/// What a new plugin does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Judges uploads: refuses what breaks a rule, accepts the rest.
    Validator,
    /// Writes a file derived from each upload beside it.
    Deriver,
}

fn type_name(name: &str) -> String {
    name.split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The language of a new plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// The componentize-py Python plugins are built with (the one the tests
/// use).
const COMPONENTIZE_PY: &str = "0.25.1";

/// The Python SDK, as the binary carries it.
const PYTHON_SDK: &str = include_str!("../../guest-sdk/python/silo_sdk.py");

fn python_source(name: &str, kind: Kind) -> String {
    let ty = type_name(name);
    let text = match kind {
        Kind::Validator => PY_VALIDATOR,
        Kind::Deriver => PY_DERIVER,
    };
    text.replace("{name}", name).replace("{ty}", &ty)
}

const PY_VALIDATOR: &str = r#""""{name}: refuses empty files and files over the `max_bytes` setting;
accepts the rest."""

import silo_sdk
from silo_sdk import Plugin, accept, reject


class {ty}(Plugin):
    def on_upload(self, upload):
        limit = int(upload.setting("max_bytes", 1 << 20))
        if upload.info.size == 0:
            return reject("empty files are not accepted")
        if upload.info.size > limit:
            return reject(f"{upload.info.size} bytes is over the limit of {limit}")
        return accept()


Handler = silo_sdk.export({ty})
"#;

const PY_DERIVER: &str = r#""""{name}: writes a note beside each upload, `notes/<path>.txt`, giving
its size, type and lines, and reports it as a derived file."""

import silo_sdk
from silo_sdk import DerivedFile, Location, Plugin, WriteOptions, accept, files


class {ty}(Plugin):
    def on_upload(self, upload):
        with files.open_read(upload.file) as f:
            lines = sum(1 for _ in f)
        note = Location(upload.file.volume, f"notes/{upload.file.path}.txt")
        writer = files.create(note, WriteOptions(content_type="text/plain"))
        writer.write(f"{upload.info.size} bytes of {upload.info.content_type}, {lines} lines\n".encode())
        info = writer.finish()
        return accept([DerivedFile(note, info, None, None, None)])


Handler = silo_sdk.export({ty})
"#;

/// The jco JavaScript plugins are built with (the one the tests use), and
/// the preview2-shim it is pinned with there.
const JCO: &str = "1.35.0";
const PREVIEW2_SHIM: &str = "0.25.0";

/// The JavaScript SDK, as the binary carries it.
const JS_SDK: &str = include_str!("../../guest-sdk/js/silo_sdk.js");

fn js_source(name: &str, kind: Kind) -> String {
    let text = match kind {
        Kind::Validator => JS_VALIDATOR,
        Kind::Deriver => JS_DERIVER,
    };
    text.replace("{name}", name).replace("{ty}", &type_name(name))
}

const JS_VALIDATOR: &str = r#"// {name}: refuses empty files and files over the `max_bytes` setting;
// accepts the rest.
import { Plugin, accept, reject, exportPlugin } from './silo_sdk.js';

class {ty} extends Plugin {
  onUpload(upload) {
    const limit = BigInt(upload.setting('max_bytes', String(1 << 20)));
    if (upload.info.size == 0) {
      return reject('empty files are not accepted');
    }
    if (upload.info.size > limit) {
      return reject(`${upload.info.size} bytes is over the limit of ${limit}`);
    }
    return accept();
  }
}

export const handler = exportPlugin({ty});
"#;

const JS_DERIVER: &str = r#"// {name}: writes a note beside each upload, `notes/<path>.txt`, giving
// its size, type and lines, and reports it as a derived file.
import { Plugin, accept, derivedFile, exportPlugin, files, location } from './silo_sdk.js';

class {ty} extends Plugin {
  onUpload(upload) {
    const text = files.readText(upload.file);
    const lines = text.length === 0 ? 0 : text.split('\n').length;
    const note = location(upload.file.volume, `notes/${upload.file.path}.txt`);
    const body = `${upload.info.size} bytes of ${upload.info.contentType}, ${lines} lines\n`;
    const info = files.write(note, body, { contentType: 'text/plain' });
    return accept([derivedFile(note, info)]);
  }
}

export const handler = exportPlugin({ty});
"#;

/// jco at the pinned version: `SILO_JCO`, else one installed (once,
/// saying so, with npm) into Silo's cache directory.
fn jco() -> anyhow::Result<PathBuf> {
    if let Some(tool) = std::env::var_os("SILO_JCO") {
        return Ok(PathBuf::from(tool));
    }
    let cache = cache_dir()?.join(format!("jco-{JCO}"));
    let tool = cache.join("node_modules/.bin/jco");
    if tool.is_file() {
        return Ok(tool);
    }
    eprintln!("silo: installing jco {JCO} into {} (once)", cache.display());
    std::fs::create_dir_all(&cache)?;
    std::fs::write(
        cache.join("package.json"),
        format!(
            "{{\"private\": true, \"dependencies\": {{\"@bytecodealliance/jco\": \"{JCO}\"}}, \
             \"overrides\": {{\"@bytecodealliance/preview2-shim\": \"{PREVIEW2_SHIM}\"}}}}\n"
        ),
    )?;
    let status = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&cache)
        .status()
        .context("cannot run npm (Node.js 20 or newer), which installs jco")?;
    anyhow::ensure!(
        status.success(),
        "npm install of jco {JCO} failed in {}",
        cache.display()
    );
    Ok(tool)
}

/// The app and the SDK as one module, as componentize-js takes a plugin:
/// the SDK's declarations (no longer exported), then the app without its
/// imports from './silo_sdk.js'.
fn bundle_js(dir: &Path) -> anyhow::Result<String> {
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file)).with_context(|| format!("cannot read {}", dir.join(file).display()))
    };
    let (sdk, app) = (read("silo_sdk.js")?, read("app.js")?);
    let mut out = String::from("// silo plugin build: silo_sdk.js, then app.js, as one module.\n");
    for line in sdk.lines() {
        let line = ["export class ", "export function ", "export const "]
            .iter()
            .find_map(|p| line.strip_prefix("export ").filter(|_| line.starts_with(p)))
            .unwrap_or(line);
        out.push_str(line);
        out.push('\n');
    }
    for line in app.lines() {
        let from_sdk = line.trim_start().starts_with("import ")
            && (line.contains("'./silo_sdk.js'") || line.contains("\"./silo_sdk.js\""));
        if !from_sdk {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

fn build_js(dir: &Path, plugin: &PluginConfig) -> anyhow::Result<PathBuf> {
    let tool = jco()?;
    std::fs::create_dir_all(dir.join("target"))?;
    let bundle = dir.join("target/bundle.js");
    std::fs::write(&bundle, bundle_js(dir)?)?;
    let out = dir.join("target").join(&plugin.component);
    let status = std::process::Command::new(&tool)
        .arg("componentize")
        .arg(&bundle)
        .args(["--wit", "wit", "-n", "upload-plugin", "-o"])
        .arg(&out)
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot run {}", tool.display()))?;
    if !status.success() {
        bail!("jco componentize failed in {}", dir.display());
    }
    Ok(out)
}

/// Silo's cache directory (`$XDG_CACHE_HOME/silo`, else `~/.cache/silo`).
fn cache_dir() -> anyhow::Result<PathBuf> {
    Ok(std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context(
            "neither XDG_CACHE_HOME nor HOME is set: say where the toolchains are (SILO_COMPONENTIZE_PY, SILO_JCO)",
        )?
        .join("silo"))
}

fn validator_source(name: &str) -> String {
    format!(
        r#"//! {name}: refuses empty files and files over the `max_bytes` setting;
//! accepts the rest.

use silo_sdk::{{Error, Outcome, Plugin, Upload}};

struct {ty};

impl Plugin for {ty} {{
    fn on_upload(upload: Upload) -> Result<Outcome, Error> {{
        let max: u64 = upload.setting("max_bytes").and_then(|v| v.parse().ok()).unwrap_or(1 << 20);
        if upload.info.size == 0 {{
            return Ok(Outcome::Reject("empty files are not accepted".into()));
        }}
        if upload.info.size > max {{
            return Ok(Outcome::Reject(format!("{{}} bytes is over the limit of {{max}}", upload.info.size)));
        }}
        Ok(Outcome::Accept(Vec::new()))
    }}
}}

silo_sdk::export_plugin!({ty});
"#,
        ty = type_name(name)
    )
}

fn deriver_source(name: &str) -> String {
    format!(
        r#"//! {name}: writes a note beside each upload, `notes/<path>.txt`,
//! giving its size and type, and reports it as a derived file.

use silo_sdk::{{DerivedFile, Error, Location, Outcome, Plugin, Upload, files}};

struct {ty};

impl Plugin for {ty} {{
    fn on_upload(upload: Upload) -> Result<Outcome, Error> {{
        let note = Location::new(upload.file.volume.clone(), format!("notes/{{}}.txt", upload.file.path));
        let text = format!("{{}} bytes of {{}}\n", upload.info.size, upload.info.content_type);
        let info = files::write(&note, text.as_bytes())?;
        Ok(Outcome::Accept(vec![DerivedFile {{
            file: note,
            info,
            style: None,
            width: None,
            height: None,
        }}]))
    }}
}}

silo_sdk::export_plugin!({ty});
"#,
        ty = type_name(name)
    )
}

fn manifest(name: &str, kind: Kind) -> String {
    let file = name.replace('-', "_");
    let (settings, grants) = match kind {
        Kind::Validator => (
            "settings = { max_bytes = 1000 }\n",
            r#"grants = [{ volume = "uploads", access = ["read"] }]"#,
        ),
        Kind::Deriver => (
            "",
            r#"grants = [{ volume = "uploads", access = ["read"] }, { volume = "uploads", prefix = "notes", access = ["read", "write", "delete"] }]"#,
        ),
    };
    format!(
        "# The plugin as Silo runs it: the keys of a [[plugins]] stanza.\n\
         # `silo plugin build` prints the stanza to paste into silo.toml.\n\
         name = \"{name}\"\n\
         component = \"{file}.wasm\"\n\
         events = [\"*/*\"]\n\
         {settings}{grants}\n\
         limits = {{ memory_mib = 64, time_ms = 5000 }}\n"
    )
}

fn cases(kind: Kind) -> &'static str {
    match kind {
        Kind::Validator => {
            r#"# Each case uploads a file through Silo's pipeline with this plugin
# (memory volumes, the grants and limits of silo-plugin.toml) and checks
# the outcome: `expect` is "accept" or "reject"; `reason` must appear in a
# rejection's reason; `files` lists every file written beside the upload.

[[case]]
name = "a small text file is accepted"
to = "uploads/notes.txt"
content = "hello"
expect = "accept"
files = []

[[case]]
name = "an empty file is refused"
to = "uploads/empty.txt"
content = ""
expect = "reject"
reason = "empty"

[[case]]
name = "a file over max_bytes is refused"
to = "uploads/big.bin"
file = "fixtures/big.bin"
expect = "reject"
reason = "over the limit"
"#
        }
        Kind::Deriver => {
            r#"# Each case uploads a file through Silo's pipeline with this plugin
# (memory volumes, the grants and limits of silo-plugin.toml) and checks
# the outcome: `expect` is "accept" or "reject"; `files` lists every file
# written beside the upload.

[[case]]
name = "a note is written beside a text file"
to = "uploads/hello.txt"
content = "hello"
type = "text/plain"
expect = "accept"
files = ["uploads/notes/hello.txt.txt"]
"#
        }
    }
}

/// A Rust project's own files: its manifest, the SDK's, and its source.
fn rust_files(name: &str, kind: Kind) -> Vec<(String, String)> {
    vec![
        (
            "Cargo.toml".into(),
            format!(
                "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\nrust-version = \"{rust}\"\npublish = false\n\n\
                 [lib]\ncrate-type = [\"cdylib\"]\n\n\
                 [dependencies]\nsilo-sdk = {{ path = \"sdk\" }}\n\n\
                 [profile.release]\nopt-level = \"s\"\nlto = true\nstrip = true\n\n\
                 # A project of its own, also when created inside another workspace.\n[workspace]\n",
                rust = env!("CARGO_PKG_RUST_VERSION")
            ),
        ),
        (
            "sdk/Cargo.toml".into(),
            format!(
                "[package]\nname = \"silo-sdk\"\nversion = \"{}\"\nedition = \"2024\"\npublish = false\n\n\
                 [dependencies]\nwit-bindgen = {{ version = \"={WIT_BINDGEN}\", default-features = false, features = [\"macros\", \"realloc\", \"std\"] }}\n",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        (
            "src/lib.rs".into(),
            match kind {
                Kind::Validator => validator_source(name),
                Kind::Deriver => deriver_source(name),
            },
        ),
    ]
}

/// Write a new plugin project `name` in `dir/name`.
pub fn new(dir: &Path, name: &str, lang: Lang, kind: Kind) -> anyhow::Result<PathBuf> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || !name.as_bytes()[0].is_ascii_lowercase()
    {
        bail!("plugin name '{name}' must start with a letter and use only lower-case letters, digits and '-'");
    }
    let root = dir.join(name);
    if root.exists() {
        bail!("{} exists; choose another name or directory", root.display());
    }
    let mut files: Vec<(String, String)> = SDK_FILES
        .iter()
        .filter(|(path, _)| lang == Lang::Rust || path.starts_with("wit/"))
        .map(|(path, text)| (path.to_string(), text.to_string()))
        .collect();
    files.extend([
        ("silo-plugin.toml".into(), manifest(name, kind)),
        ("tests/cases.toml".into(), cases(kind).into()),
        (".gitignore".into(), "/target\n".into()),
    ]);
    match lang {
        Lang::Python => files.extend([
            ("app.py".into(), python_source(name, kind)),
            ("silo_sdk.py".into(), PYTHON_SDK.into()),
        ]),
        Lang::Js => files.extend([
            ("app.js".into(), js_source(name, kind)),
            ("silo_sdk.js".into(), JS_SDK.into()),
        ]),
        Lang::Rust => files.extend(rust_files(name, kind)),
    }
    for (path, text) in &files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in the project"))
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if kind == Kind::Validator {
        let big = root.join("tests/fixtures/big.bin");
        std::fs::create_dir_all(big.parent().expect("a file in the project"))?;
        std::fs::write(&big, vec![b'x'; 2000]).with_context(|| format!("cannot write {}", big.display()))?;
    }
    Ok(root)
}

/// A built plugin: its component, pin and config stanza.
pub struct Built {
    pub component: PathBuf,
    pub sha256: String,
    pub plugin: PluginConfig,
    pub stanza: String,
}

fn read_manifest(dir: &Path) -> anyhow::Result<(PluginConfig, String)> {
    let path = dir.join("silo-plugin.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let plugin: PluginConfig =
        toml::from_str(&text).with_context(|| format!("{} is not a plugin's settings", path.display()))?;
    Ok((plugin, text))
}

/// Build the project in `dir` for `wasm32-wasip2` (release), check the
/// component against the worlds Silo serves, and give its pin and stanza.
pub fn build(dir: &Path) -> anyhow::Result<Built> {
    let dir = &dir
        .canonicalize()
        .with_context(|| format!("no plugin project at {}", dir.display()))?;
    let (plugin, text) = read_manifest(dir)?;
    let component = if dir.join("app.py").is_file() {
        build_python(dir, &plugin)?
    } else if dir.join("app.js").is_file() {
        build_js(dir, &plugin)?
    } else {
        build_rust(dir)?
    };
    let bytes = std::fs::read(&component).with_context(|| format!("cannot read {}", component.display()))?;
    let name = component.display().to_string();
    let inspection = silo_host::inspect_plugin(&name, &bytes)?;
    if let Err(e) = &inspection.verdict {
        bail!("{name} cannot run in this Silo: {e}");
    }
    let sha256 = inspection.sha256.clone();
    let settings: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let stanza = format!(
        "[[plugins]]\n# silo plugin build: {}\n{settings}sha256 = \"{sha256}\"\n",
        dir.display()
    );
    Ok(Built {
        component,
        sha256,
        plugin,
        stanza,
    })
}

/// componentize-py at the pinned version: `SILO_COMPONENTIZE_PY`, else
/// the one on the PATH if it is that version, else one installed (once,
/// saying so) into Silo's cache directory.
fn componentize_py() -> anyhow::Result<PathBuf> {
    let version_of = |tool: &Path| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let wanted = format!("componentize-py {COMPONENTIZE_PY}");
    if let Some(tool) = std::env::var_os("SILO_COMPONENTIZE_PY") {
        return Ok(PathBuf::from(tool));
    }
    if version_of(Path::new("componentize-py")).as_deref() == Some(wanted.as_str()) {
        return Ok(PathBuf::from("componentize-py"));
    }
    let cache = cache_dir()?.join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let tool = cache.join("bin/componentize-py");
    if version_of(&tool).as_deref() == Some(wanted.as_str()) {
        return Ok(tool);
    }
    eprintln!(
        "silo: installing componentize-py {COMPONENTIZE_PY} into {} (once)",
        cache.display()
    );
    let run = |program: &Path, args: &[&str]| -> anyhow::Result<()> {
        let status = std::process::Command::new(program)
            .args(args)
            .status()
            .with_context(|| format!("cannot run {}", program.display()))?;
        anyhow::ensure!(status.success(), "{} {} failed", program.display(), args.join(" "));
        Ok(())
    };
    let venv = cache.to_string_lossy().into_owned();
    run(Path::new("python3"), &["-m", "venv", &venv])?;
    let pin = format!("componentize-py=={COMPONENTIZE_PY}");
    run(
        &cache.join("bin/pip"),
        &["install", "--quiet", "--disable-pip-version-check", &pin],
    )?;
    Ok(tool)
}

fn build_python(dir: &Path, plugin: &PluginConfig) -> anyhow::Result<PathBuf> {
    let tool = componentize_py()?;
    std::fs::create_dir_all(dir.join("target"))?;
    let out = dir.join("target").join(&plugin.component);
    let status = std::process::Command::new(&tool)
        .args([
            "-d",
            "wit",
            "-w",
            "upload-plugin",
            "componentize",
            "-p",
            ".",
            "app",
            "-o",
        ])
        .arg(&out)
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot run {}", tool.display()))?;
    if !status.success() {
        bail!("componentize-py failed in {}", dir.display());
    }
    Ok(out)
}

fn build_rust(dir: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(&cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .status()
        .with_context(|| format!("cannot run {cargo} (Rust's cargo, with the wasm32-wasip2 target)"))?;
    if !status.success() {
        bail!("cargo build failed in {}", dir.display());
    }
    let package: toml::Table = toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml"))?)?;
    let crate_name = package
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .context("Cargo.toml has no package name")?
        .replace('-', "_");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| dir.join("target"), PathBuf::from);
    Ok(target.join(format!("wasm32-wasip2/release/{crate_name}.wasm")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    #[serde(default)]
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// `volume/path` the file is uploaded to.
    to: String,
    content: Option<String>,
    file: Option<PathBuf>,
    #[serde(rename = "type")]
    content_type: Option<String>,
    expect: String,
    reason: Option<String>,
    files: Option<Vec<String>>,
}

/// Run every case of `dir/tests/cases.toml` against the built plugin:
/// one line per case, then `N passed, M failed`. Whether all passed.
pub async fn test(dir: &Path, built: &Built) -> anyhow::Result<bool> {
    let dir = &dir
        .canonicalize()
        .with_context(|| format!("no plugin project at {}", dir.display()))?;
    let path = dir.join("tests/cases.toml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let cases: Cases = toml::from_str(&text).with_context(|| format!("{} is not a list of cases", path.display()))?;
    if cases.case.is_empty() {
        bail!("{} has no [[case]]", path.display());
    }
    let (mut passed, mut failed) = (0, 0);
    for case in &cases.case {
        let started = Instant::now();
        let outcome = run_case(dir, built, case).await;
        let ms = started.elapsed().as_millis();
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("ok    {} ({ms} ms)", case.name);
            }
            Err(why) => {
                failed += 1;
                println!("FAIL  {} ({ms} ms): {why:#}", case.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(failed == 0)
}

async fn run_case(dir: &Path, built: &Built, case: &Case) -> anyhow::Result<()> {
    let bytes = match (&case.content, &case.file) {
        (Some(text), None) => text.clone().into_bytes(),
        (None, Some(file)) => {
            let file = dir.join("tests").join(file);
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?
        }
        _ => bail!("give the case either `content` or `file`"),
    };
    let (volume, _) = case
        .to
        .split_once('/')
        .with_context(|| format!("`to` = '{}' must be volume/path", case.to))?;
    let work = tempfile::tempdir()?;
    let plugin_dir = built.component.parent().context("the component's directory")?;
    let mut volumes: Vec<&str> = built
        .plugin
        .grants
        .iter()
        .map(|g| g.volume.get_ref().as_str())
        .collect();
    volumes.push(volume);
    volumes.sort();
    volumes.dedup();
    // Compiled once for every case (and kept for the next run).
    let mut config = format!(
        "data_dir = {:?}\nplugin_dir = {:?}\ncompile_cache = {:?}\n",
        work.path().join("state"),
        plugin_dir,
        dir.join("target/silo-compiled")
    );
    for v in &volumes {
        config.push_str(&format!("[volumes.{v}]\nbackend = \"memory\"\n"));
    }
    let stanza = built.stanza.replace(
        &format!("component = \"{}\"", built.plugin.component),
        &format!(
            "component = \"{}\"",
            built.component.file_name().and_then(|f| f.to_str()).unwrap_or_default()
        ),
    );
    config.push_str(&stanza);
    let config = Config::parse(&config, work.path(), None)?;
    let silo = Silo::open(config).await?;
    let mut pending = silo
        .stage_stream(&case.to, std::io::Cursor::new(bytes), case.content_type.as_deref())
        .await?;
    pending.actor = Some(silo_host::audit::Actor::request(silo_host::audit::CLI));
    let report = silo.judge(pending).await;
    let got = match report.status {
        Status::Accepted => "accept",
        Status::Rejected => "reject",
        _ => {
            let error = report.error.as_ref().map_or_else(String::new, |e| e.message.clone());
            bail!("the upload failed: {error}");
        }
    };
    if got != case.expect {
        bail!(
            "expected {}, got {got}{}",
            case.expect,
            report.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
        );
    }
    if let Some(wanted) = &case.reason {
        let reason = report.reason.as_deref().unwrap_or_default();
        if !reason.contains(wanted.as_str()) {
            bail!("the reason '{reason}' does not say '{wanted}'");
        }
    }
    if let Some(expected) = &case.files {
        let mut written = Vec::new();
        for v in &volumes {
            let request = ListRequest {
                prefix: String::new(),
                delimiter: None,
                after: String::new(),
                max: 1000,
            };
            let listing = silo.list(&Caller::Host("cli"), v, &request).await?;
            written.extend(
                listing
                    .contents
                    .into_iter()
                    .map(|(path, _)| format!("{v}/{path}"))
                    .filter(|p| *p != case.to),
            );
        }
        let mut expected = expected.clone();
        expected.sort();
        written.sort();
        if written != expected {
            bail!("files written: {written:?}, expected {expected:?}");
        }
    }
    Ok(())
}
