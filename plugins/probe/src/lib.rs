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
//! - `flood`: write small files until refused (write quotas);
//! - `read-all`: stream the file in settings `volume`/`path` to its end and
//!   reject with `read=<bytes>`;
//! - `generate`: stream `size` bytes into settings `volume`/`path`, then
//!   accept;
//! - `remove`: delete settings `volume`/`path`, then accept;
//! - `http`: send a GET to settings `url` (host and path) through raw
//!   wasi:http and reject with `sent=<outcome>`;
//! - `ambient`: read the environment and arguments, open a TCP connection
//!   and send a UDP datagram to settings `tcp` and `udp` (loopback ports),
//!   raw and through `std::net`, and resolve `localhost`; reject with what
//!   each gave;
//! - `http-fields`: park a header of `size` bytes in new `fields`
//!   resources until refused; reject with `fields=<n> <error>`;
//! - `write-as`: write settings `bytes` (`elf`, `macho`, `php`, `html`, `text`) to
//!   settings `volume`/`path` declared as `content_type`, and reject with
//!   the outcome;
//! - `escape`: try to stat and write each `|`-separated path of settings
//!   `paths` in settings `volume`, and reject with the outcomes;
//! - `recurse`: recurse without end (stack exhaustion);
//! - `huge-write`: write `size` bytes in one call;
//! - `big-reason`: reject with a reason of `size` bytes;
//! - `conditional`: try conditional writes to `cond/<path>` and reject
//!   with what each returned;
//! - `url`: ask for a URL of settings `volume`/`path` valid for settings
//!   `expires` seconds, and reject with `url=<url>` or `error <code>`.
//!
//! Attacks on the host's bounds, written against the raw WIT:
//! - `writers`: open `n` writers under `writers/` at once (logging how many
//!   opened), put `size` bytes into each, then (unless `hold`) finish them
//!   all and accept, reporting the files that finished. With `hold`, keep
//!   them open until stopped (host memory). With `seed`, a random schedule
//!   interleaves writes, early finishes and discards instead;
//! - `readers`: open `n` streams of the upload and hold them; reject with
//!   `opened=<a> first-error=<code>`. With `hold`, read a byte from each
//!   and keep them all open until stopped;
//! - `log-flood`: log `n` messages of 4 KiB and as much to stdout, then
//!   reject with `logged`;
//! - `big-options`: write `big.txt` with a content type and cache control
//!   of `size` bytes, and reject with the outcome;
//! - `big-error`: fail with an `unavailable` message of `size` bytes;
//! - `idle`: sleep `ms`, then reject with `idle` (a baseline: an instance
//!   holding nothing);
//! - `slow`: write `slow/<path>`, sleep `ms`, then accept (or, with
//!   `reject`, reject);
//! - `residue`: look for what an earlier instance left in linear memory:
//!   read a static buffer and `pages` pages grown with raw `memory.grow`,
//!   then fill both with a mark; reject with `dirty=<nonzero bytes found>`.

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
                Ok(accept(target, writer.finish()?))
            }
            "stat" => {
                let target = setting_location(&upload);
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
            "read-all" => {
                let source = setting_location(&upload);
                let mut reader = files::open_read(&source)?;
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    let n = reader.read(&mut buf).map_err(|e| Error::Unavailable(e.to_string()))?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                Ok(Outcome::Reject(format!("read={total}")))
            }
            "generate" => {
                let target = setting_location(&upload);
                let size: u64 = upload.setting("size").and_then(|v| v.parse().ok()).unwrap_or(0);
                let block: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
                let mut writer = files::create(&target, WriteOptions::new().content_type("application/octet-stream"))?;
                let mut left = size;
                while left > 0 {
                    let n = left.min(block.len() as u64) as usize;
                    writer
                        .write_all(&block[..n])
                        .map_err(|e| Error::Unavailable(e.to_string()))?;
                    left -= n as u64;
                }
                Ok(accept(target, writer.finish()?))
            }
            "http" => Ok(Outcome::Reject(http_probe(&upload))),
            "ambient" => Ok(Outcome::Reject(ambient(&upload))),
            "http-fields" => Ok(Outcome::Reject(http_fields(number(&upload, "size") as usize))),
            "remove" => {
                files::delete(&setting_location(&upload))?;
                Ok(Outcome::Accept(Vec::new()))
            }
            "write-as" => {
                let target = setting_location(&upload);
                let bytes: Vec<u8> = match upload.setting("bytes").unwrap_or("text") {
                    "elf" => b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0".to_vec(),
                    "macho" => b"\xcf\xfa\xed\xfe\x07\0\0\x01\x03\0\0\0\x02\0\0\0".to_vec(),
                    "php" => b"<?php system($_GET['c']); ?>".to_vec(),
                    "html" => b"<html><script>alert(document.cookie)</script></html>".to_vec(),
                    _ => b"just text".to_vec(),
                };
                let mut options = WriteOptions::new();
                if let Some(t) = upload.setting("content_type") {
                    options = options.content_type(t);
                }
                Ok(Outcome::Reject(match files::write_with(&target, &bytes, options) {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => format!("error {e:?}"),
                }))
            }
            "escape" => {
                let volume = upload.setting("volume").unwrap_or_default().to_owned();
                let mut outcomes = Vec::new();
                for path in upload.setting("paths").unwrap_or_default().split('|') {
                    let at = Location::new(volume.clone(), path);
                    let stat = files::stat(&at).map_or_else(|e| code(&e), |_| "ok");
                    let write = files::write(&at, b"x").map_or_else(|e| code(&e), |_| "ok");
                    outcomes.push(format!("{stat}/{write}"));
                }
                Ok(Outcome::Reject(outcomes.join(" ")))
            }
            "recurse" => {
                #[allow(unconditional_recursion)]
                fn deeper(n: u64, pad: &mut [u8; 64]) -> u64 {
                    pad[(n % 64) as usize] = n as u8;
                    std::hint::black_box(deeper(std::hint::black_box(n + 1), pad)) + pad[0] as u64
                }
                let mut pad = [0u8; 64];
                Ok(Outcome::Reject(format!("depth {}", deeper(0, &mut pad))))
            }
            "big-reason" => {
                let size: usize = upload.setting("size").and_then(|v| v.parse().ok()).unwrap_or(0);
                Ok(Outcome::Reject("é".repeat(size / 2)))
            }
            "huge-write" => {
                let size: usize = upload.setting("size").and_then(|v| v.parse().ok()).unwrap_or(0);
                let target = Location::new(upload.file.volume.clone(), "huge.bin");
                Ok(Outcome::Reject(match files::write(&target, &vec![7u8; size]) {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => format!("error {e:?}"),
                }))
            }
            "conditional" => {
                let target = Location::new(upload.file.volume.clone(), format!("cond/{}", upload.file.path));
                let outcome = |r: Result<silo_sdk::ObjectInfo, Error>| match r {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => format!("{e:?}"),
                };
                let first = files::write_with(&target, b"one", WriteOptions::new().create_only())?;
                let again = files::write_with(&target, b"two", WriteOptions::new().create_only());
                let stale = files::write_with(&target, b"three", WriteOptions::new().if_etag_matches("stale"));
                let streamed = files::create(&target, WriteOptions::new().create_only()).and_then(|mut w| {
                    w.write_all(b"four").map_err(|e| Error::Unavailable(e.to_string()))?;
                    w.finish()
                });
                let fresh = files::write_with(&target, b"five", WriteOptions::new().if_etag_matches(first.etag));
                Ok(Outcome::Reject(format!(
                    "again={} stale={} streamed={} fresh={} now={}",
                    outcome(again),
                    outcome(stale),
                    outcome(streamed),
                    outcome(fresh),
                    String::from_utf8_lossy(&files::read(&target)?)
                )))
            }
            "url" => {
                let expires = upload.setting("expires").and_then(|v| v.parse().ok()).unwrap_or(60);
                Ok(Outcome::Reject(match files::url(&setting_location(&upload), expires) {
                    Ok(url) => format!("url={url}"),
                    Err(e) => format!("error {}", code(&e)),
                }))
            }
            "writers" => writers(&upload),
            "readers" => {
                let n: usize = number(&upload, "n") as usize;
                let mut held = Vec::new();
                let mut first_error = "none";
                for _ in 0..n {
                    match raw_files::open_read(&upload.file) {
                        Ok(stream) => held.push(stream),
                        Err(e) => {
                            first_error = code(&e);
                            break;
                        }
                    }
                }
                if upload.setting("hold").is_some() {
                    // Pin what was opened: a byte read from each starts its
                    // transfer, then hold them all until stopped.
                    for stream in &held {
                        let _ = stream.blocking_read(1);
                    }
                    loop {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
                Ok(Outcome::Reject(format!(
                    "opened={} first-error={first_error}",
                    held.len()
                )))
            }
            "log-flood" => {
                let message = "x".repeat(4096);
                for _ in 0..number(&upload, "n") {
                    silo_sdk::log::info(&message);
                    println!("{message}");
                }
                Ok(Outcome::Reject("logged".into()))
            }
            "big-options" => {
                let size = number(&upload, "size") as usize;
                let target = Location::new(upload.file.volume.clone(), "big.txt");
                let options = WriteOptions::new()
                    .content_type(format!("text/{}", "x".repeat(size)))
                    .cache_control(format!("max-age={}", "9".repeat(size)));
                Ok(Outcome::Reject(match files::write_with(&target, b"hello", options) {
                    Ok(_) => "ok".to_owned(),
                    Err(e) => format!("error {}", code(&e)),
                }))
            }
            "big-error" => Err(Error::Unavailable("e".repeat(number(&upload, "size") as usize))),
            "idle" => {
                std::thread::sleep(std::time::Duration::from_millis(number(&upload, "ms")));
                Ok(Outcome::Reject("idle".into()))
            }
            "slow" => {
                let target = Location::new(upload.file.volume.clone(), format!("slow/{}", upload.file.path));
                let info = files::write(&target, b"derived")?;
                std::thread::sleep(std::time::Duration::from_millis(number(&upload, "ms")));
                if upload.setting("reject").is_some() {
                    return Ok(Outcome::Reject("slow and refused".into()));
                }
                Ok(accept(target, info))
            }
            "residue" => Ok(Outcome::Reject(residue(number(&upload, "pages") as usize))),
            other => Err(Error::Unavailable(format!("unknown mode '{other}'"))),
        }
    }
}

use silo_sdk::bindings::silo::plugin::files as raw_files;
use silo_sdk::bindings::wasi::io::streams::OutputStream;

/// Zero in the memory image, like every static without an initialiser.
static mut SCRATCH: [u8; 256 * 1024] = [0; 256 * 1024];

/// Bytes that are not zero in `SCRATCH` and in `pages` new pages, which a
/// fresh instance must start with zeroed; then mark them all.
fn residue(pages: usize) -> String {
    let scratch = &raw mut SCRATCH;
    let mut dirty = 0usize;
    let mut visit = |at: *mut u8| {
        // SAFETY: `at` is inside SCRATCH or inside pages this function grew
        // and nothing else uses; volatile, so the reads are not elided.
        unsafe {
            if at.read_volatile() != 0 {
                dirty += 1;
            }
            at.write_volatile(0xa5);
        }
    };
    for i in 0..256 * 1024 {
        visit(scratch.cast::<u8>().wrapping_add(i));
    }
    let Some(first) = grow(pages) else {
        return "memory.grow refused".into();
    };
    for i in 0..pages * 65536 {
        visit((first * 65536 + i) as *mut u8);
    }
    format!("dirty={dirty}")
}

/// The first of `pages` new pages of linear memory, grown behind the
/// allocator's back.
#[cfg(target_arch = "wasm32")]
fn grow(pages: usize) -> Option<usize> {
    Some(core::arch::wasm32::memory_grow(0, pages)).filter(|&first| first != usize::MAX)
}

/// The plugin runs only as WebAssembly; its host build (for `cargo test`)
/// has no linear memory to grow.
#[cfg(not(target_arch = "wasm32"))]
fn grow(_pages: usize) -> Option<usize> {
    None
}

/// A numeric setting (0 if absent).
fn number(upload: &Upload, key: &str) -> u64 {
    upload.setting(key).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Many writers at once. Without `seed`, each is filled before any is
/// finished. With `seed`, a pseudo-random schedule drawn from it picks,
/// step by step, a writer and what it does next: write a chunk, finish
/// (possibly before it is full), or be dropped unfinished (a discard).
/// Logs `opened=<n>`: how many writers the host let it open.
fn writers(upload: &Upload) -> Result<Outcome, Error> {
    let n = number(upload, "n") as usize;
    let size = number(upload, "size");
    let hold = upload.setting("hold").is_some();
    let options = raw_files::WriteOptions {
        content_type: Some("application/octet-stream".into()),
        cache_control: None,
        metadata: Vec::new(),
        condition: None,
    };
    let mut open = Vec::new();
    for i in 0..n {
        let at = Location::new(upload.file.volume.clone(), format!("writers/{i}"));
        match raw_files::open_write(&at, &options).and_then(|w| Ok((w.content()?, w, at))) {
            Ok(opened) => open.push(opened),
            Err(_) => break,
        }
    }
    silo_sdk::log::info(&format!("opened={}", open.len()));
    if let Some(seed) = upload.setting("seed").and_then(|s| s.parse::<u64>().ok()) {
        return Ok(Outcome::Accept(scheduled(open, size, seed)));
    }
    let block = vec![0x5au8; 64 * 1024];
    'writers: for (stream, _, _) in &open {
        let mut left = size;
        while left > 0 {
            match write_some(stream, &block, left) {
                Some(n) => left -= n,
                None => continue 'writers,
            }
        }
    }
    if hold {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let mut finished = Vec::new();
    for (stream, writer, at) in open {
        finished.extend(finish(stream, writer, at));
    }
    Ok(Outcome::Accept(finished))
}

type OpenWriter = (OutputStream, raw_files::Writer, Location);

/// Write up to `left` bytes (one permit's worth) of `block`; `None` once the
/// stream failed or closed.
fn write_some(stream: &OutputStream, block: &[u8], left: u64) -> Option<u64> {
    loop {
        match stream.check_write() {
            Ok(0) => stream.subscribe().block(),
            Ok(permit) => {
                let n = permit.min(left).min(block.len() as u64) as usize;
                return stream.write(&block[..n]).ok().map(|()| n as u64);
            }
            Err(_) => return None,
        }
    }
}

fn finish(stream: OutputStream, writer: raw_files::Writer, at: Location) -> Option<DerivedFile> {
    let _ = stream.blocking_flush();
    drop(stream);
    raw_files::Writer::finish(writer).ok().map(|info| DerivedFile {
        file: at,
        info,
        style: None,
        width: None,
        height: None,
    })
}

/// The writers driven by a schedule drawn from `seed` (xorshift64*).
fn scheduled(open: Vec<OpenWriter>, size: u64, seed: u64) -> Vec<DerivedFile> {
    let mut state = seed.max(1);
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let block = vec![0xa5u8; 64 * 1024];
    let mut live: Vec<(OpenWriter, u64)> = open.into_iter().map(|w| (w, size)).collect();
    let mut finished = Vec::new();
    while !live.is_empty() {
        let i = (next() % live.len() as u64) as usize;
        let roll = next() % 32;
        let left = live[i].1;
        if roll == 0 {
            // Dropped unfinished: the host discards it.
            drop(live.swap_remove(i));
        } else if roll == 1 || left == 0 {
            let ((stream, writer, at), _) = live.swap_remove(i);
            finished.extend(finish(stream, writer, at));
        } else {
            match write_some(&live[i].0.0, &block, left) {
                Some(n) => live[i].1 -= n,
                // Refused (a quota): finishing it must fail too.
                None => live[i].1 = 0,
            }
        }
    }
    finished
}

fn http_probe(upload: &Upload) -> String {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, OutgoingRequest, Scheme};
    let target = upload.setting("url").unwrap_or("127.0.0.1:9/");
    let (authority, path) = target.split_once('/').unwrap_or((target, ""));
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(&format!("/{path}")));
    let sent = match outgoing_handler::handle(request, None) {
        Err(code) => format!("{code:?}"),
        Ok(response) => {
            response.subscribe().block();
            match response.get() {
                Some(Ok(Ok(r))) => format!("status-{}", r.status()),
                Some(Ok(Err(code))) => format!("{code:?}"),
                other => format!("odd-{other:?}"),
            }
        }
    };
    format!("sent={sent}")
}

/// What a plugin finds of the host's environment, arguments and network.
fn ambient(upload: &Upload) -> String {
    use wasip2::sockets::network::{IpAddressFamily, IpSocketAddress, Ipv4SocketAddress};
    use wasip2::sockets::{instance_network, ip_name_lookup, tcp_create_socket, udp_create_socket};
    let port = |name: &str| number(upload, name) as u16;
    let loopback = |port: u16| {
        IpSocketAddress::Ipv4(Ipv4SocketAddress {
            port,
            address: (127, 0, 0, 1),
        })
    };
    let mut seen = vec![
        format!("env={}", wasip2::cli::environment::get_environment().len()),
        format!("args={}", wasip2::cli::environment::get_arguments().len()),
        format!("std-env={}", std::env::vars_os().count()),
    ];
    let network = instance_network::instance_network();
    let tcp = match tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4) {
        Err(code) => format!("create {}", code.name()),
        Ok(socket) => match socket.start_connect(&network, loopback(port("tcp"))) {
            Err(code) => code.name().to_owned(),
            Ok(()) => loop {
                match socket.finish_connect() {
                    Err(wasip2::sockets::network::ErrorCode::WouldBlock) => socket.subscribe().block(),
                    Err(code) => break code.name().to_owned(),
                    Ok(_) => break "connected".to_owned(),
                }
            },
        },
    };
    seen.push(format!("tcp={tcp}"));
    let udp = match udp_create_socket::create_udp_socket(IpAddressFamily::Ipv4) {
        Err(code) => format!("create {}", code.name()),
        Ok(socket) => {
            let bound = socket.start_bind(&network, loopback(0)).and_then(|()| {
                loop {
                    match socket.finish_bind() {
                        Err(wasip2::sockets::network::ErrorCode::WouldBlock) => socket.subscribe().block(),
                        other => break other,
                    }
                }
            });
            let streamed = socket.stream(Some(loopback(port("udp"))));
            format!(
                "bind {} stream {}",
                bound.map_or_else(|c| c.name().to_owned(), |()| "ok".into()),
                streamed.map_or_else(|c| c.name().to_owned(), |_| "ok".into())
            )
        }
    };
    seen.push(format!("udp={udp}"));
    let lookup = match ip_name_lookup::resolve_addresses(&network, "localhost") {
        Err(code) => code.name().to_owned(),
        Ok(stream) => loop {
            match stream.resolve_next_address() {
                Err(wasip2::sockets::network::ErrorCode::WouldBlock) => stream.subscribe().block(),
                Err(code) => break code.name().to_owned(),
                Ok(Some(address)) => break format!("resolved {address:?}"),
                Ok(None) => break "none".to_owned(),
            }
        },
    };
    seen.push(format!("lookup={lookup}"));
    let kind = |e: std::io::Error| format!("{:?}", e.kind());
    seen.push(format!(
        "std-tcp={}",
        std::net::TcpStream::connect(("127.0.0.1", port("tcp"))).map_or_else(kind, |_| "connected".into())
    ));
    seen.push(format!(
        "std-udp={}",
        std::net::UdpSocket::bind(("127.0.0.1", 0))
            .and_then(|s| s.send_to(b"leak", ("127.0.0.1", port("udp"))))
            .map_or_else(kind, |n| format!("sent {n}"))
    ));
    seen.push(format!(
        "std-lookup={}",
        std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 80))
            .map_or_else(kind, |a| format!("resolved {}", a.count()))
    ));
    seen.join(" ")
}

fn http_fields(size: usize) -> String {
    use wasip2::http::types::Fields;
    let value = vec![b'x'; size];
    let mut held = Vec::new();
    let parked = loop {
        let fields = Fields::new();
        match fields.append("x-big", &value) {
            Ok(()) => held.push(fields),
            Err(e) => break format!("{e:?}"),
        }
        if held.len() >= 5000 {
            break "no-limit".to_owned();
        }
    };
    format!("fields={} {parked}", held.len())
}

/// The location in settings `volume`/`path`.
fn setting_location(upload: &Upload) -> Location {
    Location::new(
        upload.setting("volume").unwrap_or_default(),
        upload.setting("path").unwrap_or_default(),
    )
}

/// Accept, reporting one written file.
fn accept(file: Location, info: silo_sdk::ObjectInfo) -> Outcome {
    Outcome::Accept(vec![DerivedFile {
        file,
        info,
        style: None,
        width: None,
        height: None,
    }])
}

fn code(e: &Error) -> &'static str {
    match e {
        Error::NotFound => "not-found",
        Error::AlreadyExists => "already-exists",
        Error::PreconditionFailed => "precondition-failed",
        Error::AccessDenied => "access-denied",
        Error::InvalidPath(_) => "invalid-path",
        Error::TooLarge => "too-large",
        Error::QuotaExceeded => "quota-exceeded",
        Error::Unsupported => "unsupported",
        Error::Unavailable(_) => "unavailable",
        Error::Forbidden(_) => "forbidden",
    }
}

silo_sdk::export_plugin!(Probe);
