//! fs-thumbnails: an image plugin written against plain `std::fs`, with no
//! Silo SDK. Silo serves each granted volume as the directory `/<volume>`
//! (wasi:filesystem), so `std::fs` and the `image` crate's own file API
//! work unchanged. Its `mode` setting:
//! - `thumbnail` (the default): read the upload with `std::fs::read`,
//!   decode it with `image::open`, save a thumbnail (at most 100x100) with
//!   `save` to `styles/fs/<path>`, list that directory with `read_dir`,
//!   and accept, claiming the thumbnail;
//! - `ops`: run the `|`-separated operations of the `ops` setting and
//!   reject with each one's outcome (`op=ok(...)` or `op=err(Kind)`);
//! - `read-fs` / `read-files`: read settings `path` (default: the upload)
//!   to its end through `std::fs` or through `files::open-read`, 64 KiB at
//!   a time, and reject with `read=<bytes>` (the benchmark's pair);
//! - `stat-fs` / `stat-files`: stat `<dir>/<i>.txt` for each i below `n`
//!   (without `dir`: the upload, `n` times) through `std::fs::metadata` or
//!   `files::stat`, and reject with `stats=<n>`.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};

wit_bindgen::generate!({
    world: "upload-plugin",
    path: "../../wit",
    generate_all,
});

use exports::silo::plugin::handler::{DeriveRequest, DerivedFile, Guest, Outcome, Upload};
use silo::plugin::files;
use silo::plugin::types::{Error, Location, ObjectInfo};

struct FsThumbnails;

fn setting<'a>(upload: &'a Upload, key: &str) -> Option<&'a str> {
    upload.settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{what}: {e}"))
}

fn thumbnail(upload: &Upload) -> Result<Outcome, Error> {
    let Location { volume, path } = &upload.file;
    let source = format!("/{volume}/{path}");
    let bytes = fs::read(&source).map_err(|e| failed(&source, e))?;
    if bytes.len() as u64 != upload.info.size {
        return Err(failed(
            &source,
            format!("read {} of {} bytes", bytes.len(), upload.info.size),
        ));
    }
    let image = image::open(&source).map_err(|e| failed(&source, e))?;
    let thumb = image.thumbnail(100, 100);
    let target_path = format!("styles/fs/{path}");
    let target = format!("/{volume}/{target_path}");
    let dir = target.rsplit_once('/').map_or("/", |(d, _)| d).to_owned();
    fs::create_dir_all(&dir).map_err(|e| failed(&dir, e))?;
    thumb.save(&target).map_err(|e| failed(&target, e))?;
    let mut names: Vec<String> = fs::read_dir(&dir)
        .map_err(|e| failed(&dir, e))?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| failed(&dir, e))?;
    names.sort();
    println!("{dir} holds {}", names.join(", "));
    let size = fs::metadata(&target).map_err(|e| failed(&target, e))?.len();
    Ok(Outcome::Accept(vec![DerivedFile {
        file: Location {
            volume: volume.clone(),
            path: target_path,
        },
        // The host reports what it stored; these describe the claim.
        info: ObjectInfo {
            size,
            etag: String::new(),
            content_type: String::new(),
            modified_ms: 0,
        },
        style: Some("fs-thumbnail".into()),
        width: Some(thumb.width()),
        height: Some(thumb.height()),
    }]))
}

fn outcome(result: std::io::Result<String>) -> String {
    match result {
        Ok(s) => format!("ok({s})"),
        // Kinds std does not name for WASI show the errno instead.
        Err(e) if format!("{:?}", e.kind()) == "Uncategorized" => {
            format!("err(errno {})", e.raw_os_error().unwrap_or(-1))
        }
        // Two rules answer PermissionDenied; the errno tells them apart:
        // outside the grants (EACCES) and out of the volume or against the
        // content policy (EPERM). wasi-libc numbers them 2 and 63.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => match e.raw_os_error() {
            Some(2) => "err(PermissionDenied EACCES)".to_owned(),
            Some(63) => "err(PermissionDenied EPERM)".to_owned(),
            other => format!("err(PermissionDenied errno {other:?})"),
        },
        Err(e) => format!("err({:?})", e.kind()),
    }
}

/// One operation of the `ops` setting.
fn op(spec: &str) -> std::io::Result<String> {
    let (verb, arg) = spec.split_once(':').unwrap_or((spec, ""));
    let (path, value) = arg.split_once('=').unwrap_or((arg, ""));
    match verb {
        "read" => fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()),
        "size" => fs::read(path).map(|b| b.len().to_string()),
        "write" => fs::write(path, value).map(|()| String::new()),
        "append" => {
            let mut f = fs::OpenOptions::new().append(true).create(true).open(path)?;
            f.write_all(value.as_bytes()).map(|()| String::new())
        }
        "create-new" => {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(path)?;
            f.write_all(value.as_bytes()).map(|()| String::new())
        }
        // A write committed by sync_all, so that its refusal is seen.
        "sync" => {
            let mut f = fs::File::create(path)?;
            f.write_all(value.as_bytes())?;
            f.sync_all().map(|()| String::new())
        }
        "stat" => fs::metadata(path).map(|m| {
            if m.is_dir() {
                "dir".into()
            } else {
                format!("file {}", m.len())
            }
        }),
        "list" => {
            let mut names = Vec::new();
            for entry in fs::read_dir(path)? {
                let entry = entry?;
                let slash = if entry.file_type()?.is_dir() { "/" } else { "" };
                names.push(format!("{}{slash}", entry.file_name().to_string_lossy()));
            }
            names.sort();
            Ok(names.join(","))
        }
        "mkdir" => fs::create_dir_all(path).map(|()| String::new()),
        "rmdir" => fs::remove_dir(path).map(|()| String::new()),
        "rm" => fs::remove_file(path).map(|()| String::new()),
        "mv" => {
            let (from, to) = arg.split_once('>').unwrap_or((arg, ""));
            fs::rename(from, to).map(|()| String::new())
        }
        // Read `len` bytes at `offset`: `read-at:P=OFFSET+LEN`.
        "read-at" => {
            let (offset, len) = value.split_once('+').unwrap_or((value, "0"));
            let mut f = fs::File::open(path)?;
            f.seek(SeekFrom::Start(offset.parse().unwrap_or(0)))?;
            let mut buf = vec![0; len.parse().unwrap_or(0)];
            f.read_exact(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        // A write that skips ahead.
        "seek-write" => {
            let mut f = fs::File::create(path)?;
            f.write_all(b"a")?;
            f.seek(SeekFrom::Start(10))?;
            f.write_all(b"b")?;
            f.sync_all().map(|()| String::new())
        }
        // Write files `<dir>/<n>` until refused: `flood:DIR`.
        "flood" => {
            for n in 0..100_000 {
                if let Err(e) = fs::write(format!("{path}/{n}"), b"x") {
                    return Ok(format!("{n} then {:?}", e.kind()));
                }
            }
            Ok("never refused".into())
        }
        // Open files `<dir>/<n>` for writing and keep them open until
        // refused: `hold-open:DIR`.
        "hold-open" => {
            let mut open = Vec::new();
            loop {
                match fs::File::create(format!("{path}/{}", open.len())) {
                    Ok(f) => open.push(f),
                    Err(e) => return Ok(format!("{} then {:?}", open.len(), e.kind())),
                }
                if open.len() > 10_000 {
                    return Ok("never refused".into());
                }
            }
        }
        // Open `path` again and again, reading a byte of each and keeping
        // them all open, until refused: `hold-read:P`.
        "hold-read" => {
            let mut open = Vec::new();
            loop {
                let mut f = match fs::File::open(path) {
                    Ok(f) => f,
                    Err(e) => return Ok(format!("{} then open {:?}", open.len(), e.kind())),
                };
                if let Err(e) = f.read_exact(&mut [0]) {
                    return Ok(format!("{} then {:?}", open.len(), e.kind()));
                }
                open.push(f);
                if open.len() > 10_000 {
                    return Ok("never refused".into());
                }
            }
        }
        // Open listings of `path` and keep them until refused.
        "hold-listings" => {
            let mut open = Vec::new();
            loop {
                match fs::read_dir(path) {
                    Ok(d) => open.push(d),
                    Err(e) => return Ok(format!("{} then {:?}", open.len(), e.kind())),
                }
                if open.len() > 10_000 {
                    return Ok("never refused".into());
                }
            }
        }
        // Create directories `<path>/<n>` until refused.
        "mkdir-flood" => {
            for n in 0..100_000 {
                if let Err(e) = fs::create_dir(format!("{path}/{n}")) {
                    return Ok(format!("{n} then {:?}", e.kind()));
                }
            }
            Ok("never refused".into())
        }
        // Write `size` bytes of `x`, 64 KiB at a time: `fill:P=SIZE`.
        "fill" => {
            let mut f = fs::File::create(path)?;
            let chunk = vec![b'x'; 64 * 1024];
            let mut left: usize = value.parse().unwrap_or(0);
            while left > 0 {
                let n = left.min(chunk.len());
                f.write_all(&chunk[..n])?;
                left -= n;
            }
            f.sync_all().map(|()| String::new())
        }
        _ => Err(std::io::Error::other(format!("unknown op {verb}"))),
    }
}

fn read_fs(path: &str) -> Result<u64, Error> {
    let mut file = fs::File::open(path).map_err(|e| failed(path, e))?;
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) => return Err(failed(path, e)),
        }
    }
}

fn read_files(file: &Location) -> Result<u64, Error> {
    let stream = files::open_read(file)?;
    let mut total = 0;
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => total += chunk.len() as u64,
            Err(wasi::io::streams::StreamError::Closed) => return Ok(total),
            Err(e) => return Err(failed("open-read", format!("{e:?}"))),
        }
    }
}

impl Guest for FsThumbnails {
    fn on_upload(upload: Upload) -> Result<Outcome, Error> {
        let Location { volume, path } = &upload.file;
        let n: u64 = setting(&upload, "n").and_then(|n| n.parse().ok()).unwrap_or(1);
        match setting(&upload, "mode").unwrap_or("thumbnail") {
            "thumbnail" => thumbnail(&upload),
            "ops" => {
                let ops = setting(&upload, "ops").unwrap_or("");
                let results: Vec<String> = ops
                    .split('|')
                    .filter(|s| !s.is_empty())
                    .map(|spec| format!("{spec}={}", outcome(op(spec))))
                    .collect();
                Ok(Outcome::Reject(results.join("|")))
            }
            "read-fs" | "read-files" | "stat-fs" | "stat-files" => {
                // The file read: settings `path`, else the upload. The files
                // stat: `<dir>/<i>.txt` for i below `n`, else the upload `n` times.
                let file = Location {
                    volume: volume.clone(),
                    path: setting(&upload, "path").unwrap_or(path).to_owned(),
                };
                let dir = setting(&upload, "dir");
                let nth = |i: u64| match dir {
                    Some(d) => format!("{d}/{i}.txt"),
                    None => file.path.clone(),
                };
                match setting(&upload, "mode") {
                    Some("read-fs") => Ok(Outcome::Reject(format!(
                        "read={}",
                        read_fs(&format!("/{volume}/{}", file.path))?
                    ))),
                    Some("read-files") => Ok(Outcome::Reject(format!("read={}", read_files(&file)?))),
                    Some("stat-fs") => {
                        for i in 0..n {
                            let p = format!("/{volume}/{}", nth(i));
                            fs::metadata(&p).map_err(|e| failed(&p, e))?;
                        }
                        Ok(Outcome::Reject(format!("stats={n}")))
                    }
                    _ => {
                        for i in 0..n {
                            files::stat(&Location {
                                volume: volume.clone(),
                                path: nth(i),
                            })?;
                        }
                        Ok(Outcome::Reject(format!("stats={n}")))
                    }
                }
            }
            other => Err(Error::Unavailable(format!("unknown mode {other}"))),
        }
    }

    fn on_derive(_: DeriveRequest) -> Result<DerivedFile, Error> {
        Err(Error::Unsupported)
    }
}

// Component exports exist only on wasm: a native build (`cargo build
// --workspace`, clippy) cannot link their names, and keeps the handlers.
#[cfg(target_family = "wasm")]
export!(FsThumbnails);
#[cfg(not(target_family = "wasm"))]
type Handlers = (
    fn(Upload) -> Result<Outcome, Error>,
    fn(DeriveRequest) -> Result<DerivedFile, Error>,
);
#[cfg(not(target_family = "wasm"))]
#[used]
static HANDLERS: Handlers = (<FsThumbnails as Guest>::on_upload, <FsThumbnails as Guest>::on_derive);
