//! probe: a plugin for Silo's own tests and benchmarks. Its `mode` setting
//! picks a behaviour:
//! - `noop`: accept at once (invocation overhead);
//! - `count`: reject with `calls=<n>`, where n counts calls in this
//!   instance (always 1 if no state survives between invocations);
//! - `stat-loop`: stat the file in settings `volume`/`path` (default: the
//!   upload) `n` times, then accept;
//! - `stream-copy`: stream the upload into `copies/<path>`, then accept;
//! - `stat`: stat the location in settings `volume`/`path` and reject with
//!   the outcome (grant checks);
//! - `spin`: loop forever (time limit);
//! - `hog`: allocate memory until refused (memory limit);
//! - `flood`: write small files until refused (write quotas).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use silo_sdk::{DerivedFile, Error, Location, Outcome, Plugin, Upload, WriteOptions, files};

static CALLS: AtomicU64 = AtomicU64::new(0);

struct Probe;

impl Plugin for Probe {
    fn on_upload(upload: Upload) -> Result<Outcome, Error> {
        match upload.setting("mode").unwrap_or("noop") {
            "noop" => Ok(Outcome::Accept(Vec::new())),
            "count" => {
                let n = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(Outcome::Reject(format!("calls={n}")))
            }
            "stat-loop" => {
                let n: u64 = upload.setting("n").and_then(|v| v.parse().ok()).unwrap_or(1);
                let target = match (upload.setting("volume"), upload.setting("path")) {
                    (Some(volume), Some(path)) => Location::new(volume, path),
                    _ => upload.file.clone(),
                };
                for _ in 0..n {
                    files::stat(&target)?;
                }
                Ok(Outcome::Accept(Vec::new()))
            }
            "stream-copy" => {
                let target = Location::new(upload.file.volume.clone(), format!("copies/{}", upload.file.path));
                let mut reader = files::open_read(&upload.file)?;
                let mut writer = files::create(
                    &target,
                    WriteOptions::new().content_type(upload.info.content_type.clone()),
                )?;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = reader.read(&mut buf).map_err(|e| Error::Unavailable(e.to_string()))?;
                    if n == 0 {
                        break;
                    }
                    writer
                        .write_all(&buf[..n])
                        .map_err(|e| Error::Unavailable(e.to_string()))?;
                }
                let info = writer.finish()?;
                Ok(Outcome::Accept(vec![DerivedFile {
                    file: target,
                    info,
                    style: None,
                    width: None,
                    height: None,
                }]))
            }
            "stat" => {
                let target = Location::new(
                    upload.setting("volume").unwrap_or_default(),
                    upload.setting("path").unwrap_or_default(),
                );
                Ok(Outcome::Reject(match files::stat(&target) {
                    Ok(info) => format!("ok size={}", info.size),
                    Err(e) => format!("error {e:?}"),
                }))
            }
            "spin" => {
                let mut x = 0u64;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "flood" => {
                for i in 0.. {
                    files::write(&Location::new(upload.file.volume.clone(), format!("flood/{i}")), b"x")?;
                }
                unreachable!()
            }
            other => Err(Error::Unavailable(format!("unknown mode '{other}'"))),
        }
    }
}

silo_sdk::export_plugin!(Probe);
