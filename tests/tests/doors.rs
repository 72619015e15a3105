//! One semantics through both doors: every test body here runs through
//! the HTTP sidecar and through the S3 endpoint of the same `Silo`, with
//! the same principals, and expects the same answer. Signed S3 requests
//! are presigned by aws-sdk-s3 (a presigned URL signs only the host, so a
//! test adds any header it likes); the answers are read as raw HTTP.
//! Where the two protocols must differ (an anonymous refusal is 401 on
//! the sidecar and 403 on S3; S3 deletes what is not there with 204),
//! the test says so.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::Method;
use silo_tests::TestSilo;
use silo_tests::http::{Client, Reply, Sidecar};
use silo_tests::s3api::Endpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    Sidecar,
    S3,
}

/// A principal with a sidecar token and an S3 key pair.
#[derive(Debug, Clone, Copy)]
struct Who {
    name: &'static str,
    token: &'static str,
    key: &'static str,
    secret: &'static str,
    /// TOML grants.
    grants: &'static str,
}

const CMS: Who = Who {
    name: "cms",
    token: "cms-token-0123456789",
    key: "CMSKEY",
    secret: "cms-secret-0123456789",
    grants: r#"[{ volume = "public", access = ["read", "write", "delete"] }, { volume = "private", access = ["read", "write", "delete"] }]"#,
};
const READER: Who = Who {
    name: "reader",
    token: "reader-token-0123456789",
    key: "READERKEY",
    secret: "reader-secret-0123456789",
    grants: r#"[{ volume = "public", access = ["read"] }, { volume = "private", access = ["read"] }]"#,
};
const WRITER: Who = Who {
    name: "writer",
    token: "writer-token-0123456789",
    key: "WRITERKEY",
    secret: "writer-secret-0123456789",
    grants: r#"[{ volume = "public", access = ["write"] }, { volume = "private", access = ["write"] }]"#,
};
const DELETER: Who = Who {
    name: "deleter",
    token: "deleter-token-0123456789",
    key: "DELETERKEY",
    secret: "deleter-secret-0123456789",
    grants: r#"[{ volume = "private", access = ["delete"] }]"#,
};
const STRANGER: Who = Who {
    name: "stranger",
    token: "stranger-token-0123456789",
    key: "STRANGERKEY",
    secret: "stranger-secret-0123456789",
    grants: "[]",
};

/// One Silo (local volumes `public` and `private`) behind both doors.
struct World {
    dir: tempfile::TempDir,
    silo: Arc<silo_host::Silo>,
    sidecar: Sidecar,
    s3: Endpoint,
    http: Client,
}

impl World {
    async fn new(pipeline: &str) -> World {
        let t = TestSilo::new(pipeline, &[]).await.unwrap();
        let credentials: String = [CMS, READER, WRITER, DELETER, STRANGER]
            .iter()
            .map(|w| {
                format!(
                    "[[principal]]\nname = \"{}\"\ntoken = \"{}\"\ns3_access_key = \"{}\"\ns3_secret_key = \"{}\"\ngrants = {}\n\n",
                    w.name, w.token, w.key, w.secret, w.grants
                )
            })
            .collect();
        let TestSilo { dir, silo } = t;
        let silo = Arc::new(silo);
        let s3 = Endpoint::start(silo.clone(), &credentials, Duration::from_secs(30)).await;
        let tokens = silo_host::serve::Tokens {
            write: silo_tests::http::TOKEN.into(),
            signing_key: b"test-signing-key-0123456789".to_vec(),
            admin: None,
            principals: Some(s3.principals.clone()),
        };
        let sidecar = Sidecar::start_with(silo.clone(), tokens).await;
        World {
            dir,
            silo,
            sidecar,
            s3,
            http: Client::default(),
        }
    }

    /// Send `method` on `volume`/`path` through `door` as `who` (None:
    /// anonymous), with extra `headers`.
    #[allow(clippy::too_many_arguments)] // each is one part of a request
    async fn send(
        &self,
        door: Door,
        who: Option<Who>,
        method: Method,
        volume: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut all: Vec<(&str, String)> = headers.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let url = match (door, who) {
            (Door::Sidecar, who) => {
                if let Some(w) = who {
                    all.push(("authorization", format!("Bearer {}", w.token)));
                }
                self.sidecar.url(&format!("/v1/files/{volume}/{path}"))
            }
            (Door::S3, None) => format!("{}/{volume}/{path}", self.s3.url()),
            (Door::S3, Some(w)) => self.presigned(w, &method, volume, path).await,
        };
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.http
            .send(method, &url, &all, Bytes::copy_from_slice(body))
            .await
            .unwrap()
    }

    /// A presigned S3 URL for one request on an object.
    async fn presigned(&self, who: Who, method: &Method, volume: &str, path: &str) -> String {
        let client = self.s3.client(who.key, who.secret);
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
        let request = match *method {
            Method::GET => client
                .get_object()
                .bucket(volume)
                .key(path)
                .presigned(config)
                .await
                .ok(),
            Method::HEAD => client
                .head_object()
                .bucket(volume)
                .key(path)
                .presigned(config)
                .await
                .ok(),
            Method::PUT => client
                .put_object()
                .bucket(volume)
                .key(path)
                .presigned(config)
                .await
                .ok(),
            Method::DELETE => client
                .delete_object()
                .bucket(volume)
                .key(path)
                .presigned(config)
                .await
                .ok(),
            ref other => panic!("no presigned {other}"),
        };
        request.expect("presigning").uri().to_owned()
    }

    async fn get(&self, door: Door, who: Option<Who>, volume: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(door, who, Method::GET, volume, path, headers, b"").await
    }

    /// Store `body` through `door` as `who`; the status.
    async fn put(
        &self,
        door: Door,
        who: Option<Who>,
        volume: &str,
        path: &str,
        body: &[u8],
        content_type: &str,
    ) -> u16 {
        let reply = self
            .send(
                door,
                who,
                Method::PUT,
                volume,
                path,
                &[("content-type", content_type)],
                body,
            )
            .await;
        reply.status.as_u16()
    }

    /// Every key under `prefix` through `door` as `who`, in pages of
    /// `page`: the keys, and how many pages it took. `Err(status)` if
    /// refused.
    async fn keys(
        &self,
        door: Door,
        who: Option<Who>,
        volume: &str,
        prefix: &str,
        page: usize,
    ) -> Result<(Vec<String>, usize), u16> {
        let (mut keys, mut pages) = (Vec::new(), 0);
        match (door, who) {
            (Door::Sidecar, who) => {
                let mut cursor: Option<String> = None;
                loop {
                    let mut url = self
                        .sidecar
                        .url(&format!("/v1/list/{volume}/{prefix}?recursive=true&limit={page}"));
                    if let Some(c) = &cursor {
                        url.push_str(&format!("&cursor={}", urlencode(c)));
                    }
                    let auth = who.map(|w| format!("Bearer {}", w.token));
                    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
                    let reply = self.http.get(&url, &headers).await.unwrap();
                    if reply.status != 200 {
                        return Err(reply.status.as_u16());
                    }
                    let json = reply.json();
                    pages += 1;
                    for entry in json["entries"].as_array().unwrap() {
                        keys.push(entry["path"].as_str().unwrap().to_owned());
                    }
                    match json["next_cursor"].as_str() {
                        Some(c) => cursor = Some(c.to_owned()),
                        None => return Ok((keys, pages)),
                    }
                }
            }
            (Door::S3, None) => {
                let reply = self
                    .http
                    .get(&format!("{}/{volume}?list-type=2&prefix={prefix}", self.s3.url()), &[])
                    .await
                    .unwrap();
                Err(reply.status.as_u16())
            }
            (Door::S3, Some(w)) => {
                let client = self.s3.client(w.key, w.secret);
                let mut token: Option<String> = None;
                loop {
                    let listed = client
                        .list_objects_v2()
                        .bucket(volume)
                        .prefix(prefix)
                        .max_keys(page as i32)
                        .set_continuation_token(token.clone())
                        .send()
                        .await
                        .map_err(|e| e.raw_response().map_or(0, |r| r.status().as_u16()))?;
                    pages += 1;
                    keys.extend(listed.contents().iter().filter_map(|o| o.key()).map(str::to_owned));
                    match listed.next_continuation_token() {
                        Some(t) if listed.is_truncated() == Some(true) => token = Some(t.to_owned()),
                        _ => return Ok((keys, pages)),
                    }
                }
            }
        }
    }

    /// The folders and files directly under `dir/` through `door`: folder
    /// names end in `/`.
    async fn children(&self, door: Door, who: Who, volume: &str, dir: &str) -> Vec<String> {
        let mut out = Vec::new();
        match door {
            Door::Sidecar => {
                let url = self.sidecar.url(&format!("/v1/list/{volume}/{dir}"));
                let reply = self.http.get_as(&url, who.token).await.unwrap();
                assert_eq!(reply.status, 200, "{}", reply.text());
                for entry in reply.json()["entries"].as_array().unwrap() {
                    let path = entry["path"].as_str().unwrap();
                    match entry["type"].as_str() {
                        Some("dir") => out.push(format!("{path}/")),
                        _ => out.push(path.to_owned()),
                    }
                }
            }
            Door::S3 => {
                let listed = self
                    .s3
                    .client(who.key, who.secret)
                    .list_objects_v2()
                    .bucket(volume)
                    .prefix(format!("{dir}/"))
                    .delimiter("/")
                    .send()
                    .await
                    .unwrap();
                out.extend(
                    listed
                        .common_prefixes()
                        .iter()
                        .filter_map(|p| p.prefix())
                        .map(str::to_owned),
                );
                out.extend(listed.contents().iter().filter_map(|o| o.key()).map(str::to_owned));
            }
        }
        out.sort();
        out
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// A ranged read: its headers, the status and the bytes it answers.
type RangeCase<'a> = (&'a [(&'a str, &'a str)], u16, std::ops::Range<usize>);

/// What the sidecar and S3 answer a refused request: the sidecar tells
/// "who are you" (401) from "not you" (403); S3 answers 403 to both.
fn refused(door: Door, who: Option<Who>) -> u16 {
    match (door, who) {
        (Door::Sidecar, None) => 401,
        _ => 403,
    }
}

async fn reads_honour_every_precondition_through_both_doors(door: Door) {
    let w = World::new("").await;
    let path = format!("{door:?}/pre.txt");
    assert_eq!(
        w.put(door, Some(CMS), "private", &path, b"precondition", "text/plain")
            .await
            / 100,
        2
    );
    let first = w.get(door, Some(READER), "private", &path, &[]).await;
    assert_eq!(first.status, 200, "{door:?}");
    let etag = first.header("etag").unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{door:?}: {etag}");
    let modified = httpdate::parse_http_date(first.header("last-modified").unwrap()).unwrap();
    let before = http_date(modified - Duration::from_secs(86_400));
    let at = http_date(modified);
    let weak = format!("W/{etag}");
    let cases: [(&[(&str, &str)], u16); 13] = [
        (&[("if-match", &etag)], 200),
        (&[("if-match", "*")], 200),
        (&[("if-match", "\"other\"")], 412),
        // If-Match compares strongly: a weak tag never matches.
        (&[("if-match", &weak)], 412),
        (&[("if-none-match", &etag)], 304),
        (&[("if-none-match", &weak)], 304),
        (&[("if-none-match", "\"other\", \"more\"")], 200),
        (&[("if-modified-since", &at)], 304),
        (&[("if-modified-since", &before)], 200),
        (&[("if-unmodified-since", &before)], 412),
        (&[("if-unmodified-since", &at)], 200),
        // If-Match decides before If-None-Match, and If-None-Match
        // overrules If-Modified-Since (RFC 9110 13.2.2).
        (&[("if-match", "\"other\""), ("if-none-match", &etag)], 412),
        (&[("if-none-match", "\"other\""), ("if-modified-since", &at)], 200),
    ];
    for (headers, status) in cases {
        for method in [Method::GET, Method::HEAD] {
            let reply = w
                .send(door, Some(READER), method.clone(), "private", &path, headers, b"")
                .await;
            assert_eq!(reply.status, status, "{door:?} {method} {headers:?}: {}", reply.text());
            if status == 304 {
                // What identifies the version goes with a 304.
                assert_eq!(reply.header("etag"), Some(etag.as_str()), "{door:?} {headers:?}");
                assert!(reply.body.is_empty());
            }
            if status == 200 && method == Method::GET {
                assert_eq!(&reply.body[..], b"precondition", "{door:?} {headers:?}");
            }
        }
    }
}

async fn ranges_are_served_alike_through_both_doors(door: Door) {
    let w = World::new("").await;
    let body: Vec<u8> = (0..100u8).collect();
    let path = format!("{door:?}/range.bin");
    assert_eq!(
        w.put(door, Some(CMS), "public", &path, &body, "application/octet-stream")
            .await
            / 100,
        2
    );
    let etag = w
        .get(door, None, "public", &path, &[])
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let cases: [RangeCase; 8] = [
        (&[("range", "bytes=0-9")], 206, 0..10),
        (&[("range", "bytes=90-")], 206, 90..100),
        (&[("range", "bytes=-10")], 206, 90..100),
        // Past the end: what the file has.
        (&[("range", "bytes=50-1000")], 206, 50..100),
        (&[("range", "bytes=-1000")], 206, 0..100),
        (&[("range", "bytes=100-")], 416, 0..0),
        // A resumed download of this version gets its range; of
        // another, the whole file.
        (&[("range", "bytes=0-9"), ("if-range", &etag)], 206, 0..10),
        (&[("range", "bytes=0-9"), ("if-range", "\"other\"")], 200, 0..100),
    ];
    for (headers, status, bytes) in cases {
        let reply = w.get(door, None, "public", &path, headers).await;
        assert_eq!(reply.status, status, "{door:?} {headers:?}: {}", reply.text());
        match status {
            206 => {
                assert_eq!(&reply.body[..], &body[bytes.clone()], "{door:?} {headers:?}");
                let range = format!("bytes {}-{}/100", bytes.start, bytes.end - 1);
                assert_eq!(reply.header("content-range"), Some(range.as_str()), "{door:?}");
            }
            200 => assert_eq!(reply.body, body, "{door:?}"),
            _ => {}
        }
        // HEAD says the same without a body.
        let head = w.send(door, None, Method::HEAD, "public", &path, headers, b"").await;
        assert_eq!(head.status, status, "{door:?} HEAD {headers:?}");
        if status == 206 {
            assert_eq!(
                head.header("content-length"),
                Some(bytes.len().to_string().as_str()),
                "{door:?}"
            );
        }
    }
}

async fn served_headers_are_decided_once_for_every_type_and_visibility(door: Door) {
    let w = World::new("").await;
    let files: [(&str, &str, &[u8], bool); 6] = [
        ("page.html", "text/html", b"<html><body>hi</body></html>", true),
        (
            "logo.svg",
            "image/svg+xml",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
            true,
        ),
        ("app.js", "application/javascript", b"alert(1)", true),
        ("feed.xml", "text/xml", b"<?xml version=\"1.0\"?><a/>", true),
        ("notes.txt", "text/plain", b"plain words", false),
        ("data.json", "application/json", b"{\"a\": 1}", false),
    ];
    for volume in ["public", "private"] {
        for (name, content_type, body, active) in files {
            let path = format!("{door:?}/{name}");
            assert_eq!(
                w.put(door, Some(CMS), volume, &path, body, content_type).await / 100,
                2,
                "{door:?} {path}"
            );
            for method in [Method::GET, Method::HEAD] {
                let reply = w
                    .send(door, Some(READER), method.clone(), volume, &path, &[], b"")
                    .await;
                let at = format!("{door:?} {method} {volume}/{path}");
                assert_eq!(reply.status, 200, "{at}");
                assert_eq!(reply.header("content-type"), Some(content_type), "{at}");
                assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{at}");
                assert_eq!(
                    reply.header("content-disposition"),
                    active.then_some("attachment"),
                    "{at}"
                );
                let cache = match volume {
                    "public" => "public, max-age=3600",
                    _ => "private, no-store",
                };
                assert_eq!(reply.header("cache-control"), Some(cache), "{at}");
                assert_eq!(reply.header("accept-ranges"), Some("bytes"), "{at}");
                assert_eq!(
                    reply.header("content-length"),
                    Some(body.len().to_string().as_str()),
                    "{at}"
                );
                assert!(
                    reply.header("last-modified").is_some() && reply.header("etag").is_some(),
                    "{at}"
                );
            }
        }
    }
}

async fn listings_page_and_roll_up_alike_over_1100_keys(door: Door) {
    let w = World::new("").await;
    let mut expected = Vec::new();
    for i in 0..1100 {
        let path = match i % 4 {
            0 => format!("many/top-{i:04}.txt"),
            n => format!("many/d{n}/k-{i:04}.txt"),
        };
        let report = w
            .silo
            .upload_stream(&format!("private/{path}"), &b"x"[..], Some("text/plain"))
            .await
            .unwrap();
        assert_eq!(report.status, silo_host::Status::Accepted);
        expected.push(path);
    }
    expected.sort();
    // Every key once, in order, in full pages and a last one.
    let (keys, pages) = w.keys(door, Some(READER), "private", "many/", 1000).await.unwrap();
    assert_eq!(keys, expected, "{door:?}");
    assert_eq!(pages, 2, "{door:?}");
    let (keys, pages) = w.keys(door, Some(READER), "private", "many/d2/", 7).await.unwrap();
    let under: Vec<_> = expected.iter().filter(|k| k.starts_with("many/d2/")).cloned().collect();
    assert_eq!((keys, pages), (under.clone(), under.len().div_ceil(7)), "{door:?}");
    // One level: the folders and the files directly under it.
    let children = w.children(door, READER, "private", "many").await;
    let mut direct: Vec<String> = ["many/d1/", "many/d2/", "many/d3/"].map(String::from).to_vec();
    direct.extend(expected.iter().filter(|k| k.starts_with("many/top-")).cloned());
    direct.sort();
    // The sidecar pages a directory too; its first 1000 are asked here.
    assert_eq!(children[..], direct[..children.len()], "{door:?}");
    assert!(children.len() >= 278, "{door:?}: {}", children.len());
}

/// Every operation by every kind of caller, through both doors: what the
/// grants allow works, the rest is refused, and a refused change leaves
/// the file as it was.
async fn grants_decide_every_operation_through_both_doors(door: Door) {
    let w = World::new("").await;
    for volume in ["public", "private"] {
        let path = format!("{door:?}/grants.txt");
        assert_eq!(
            w.put(door, Some(CMS), volume, &path, b"original", "text/plain").await / 100,
            2
        );
        for who in [
            Some(CMS),
            Some(READER),
            Some(WRITER),
            Some(DELETER),
            Some(STRANGER),
            None,
        ] {
            let name = who.map_or("anonymous", |w| w.name);
            let grants = who.map_or("", |w| w.grants);
            let has = |access: &str| {
                grants
                    .split("},")
                    .any(|g| g.contains(&format!("\"{volume}\"")) && g.contains(&format!("\"{access}\"")))
            };
            let at = format!("{door:?} {name} on {volume}");
            // Read: a grant, or a public volume (for everyone).
            let read = w.get(door, who, volume, &path, &[]).await;
            let may_read = has("read") || volume == "public";
            match may_read {
                true => assert_eq!((read.status.as_u16(), &read.body[..]), (200, &b"original"[..]), "{at}"),
                false => assert_eq!(read.status, refused(door, who), "{at}: read {}", read.text()),
            }
            // List: a read grant, whatever the visibility.
            let listed = w.keys(door, who, volume, &format!("{door:?}/"), 1000).await;
            match has("read") {
                true => assert_eq!(listed, Ok((vec![path.clone()], 1)), "{at}"),
                false => assert_eq!(listed, Err(refused(door, who)), "{at}: list"),
            }
            // Write.
            let status = w.put(door, who, volume, &path, b"overwritten", "text/plain").await;
            match has("write") {
                true => assert_eq!(status / 100, 2, "{at}: write"),
                false => assert_eq!(status, refused(door, who), "{at}: write"),
            }
            let now = w.get(door, Some(CMS), volume, &path, &[]).await;
            let expected: &[u8] = if has("write") { b"overwritten" } else { b"original" };
            assert_eq!(&now.body[..], expected, "{at}: after the write");
            // Delete.
            let deleted = w.send(door, who, Method::DELETE, volume, &path, &[], b"").await;
            match has("delete") {
                true => assert_eq!(deleted.status, 204, "{at}: delete {}", deleted.text()),
                false => assert_eq!(deleted.status, refused(door, who), "{at}: delete {}", deleted.text()),
            }
            let after = w.get(door, Some(CMS), volume, &path, &[]).await;
            assert_eq!(
                after.status,
                if has("delete") { 404 } else { 200 },
                "{at}: after the delete"
            );
            // Put it back as it was for the next caller.
            assert_eq!(
                w.put(door, Some(CMS), volume, &path, b"original", "text/plain").await / 100,
                2
            );
        }
    }
}

async fn deletes_and_missing_files_through_both_doors(door: Door) {
    let w = World::new("").await;
    let path = format!("{door:?}/gone.txt");
    assert_eq!(
        w.put(door, Some(CMS), "private", &path, b"soon gone", "text/plain")
            .await
            / 100,
        2
    );
    let deleted = w
        .send(door, Some(CMS), Method::DELETE, "private", &path, &[], b"")
        .await;
    assert_eq!(deleted.status, 204, "{door:?}");
    assert_eq!(
        w.get(door, Some(CMS), "private", &path, &[]).await.status,
        404,
        "{door:?}"
    );
    assert_eq!(
        w.send(door, Some(CMS), Method::HEAD, "private", &path, &[], b"")
            .await
            .status,
        404,
        "{door:?}"
    );
    // Deleting what is not there: the sidecar says so; S3 succeeds, as
    // AWS does.
    let again = w
        .send(door, Some(CMS), Method::DELETE, "private", &path, &[], b"")
        .await;
    let expected = match door {
        Door::Sidecar => 404,
        Door::S3 => 204,
    };
    assert_eq!(again.status, expected, "{door:?}");
    // A volume that does not exist, for a principal: not found (a
    // stranger without credentials learns nothing).
    let nowhere = w.get(door, Some(CMS), "nowhere", "a.txt", &[]).await;
    assert_eq!(nowhere.status, 404, "{door:?}: {}", nowhere.text());
    let anonymous = w.get(door, None, "nowhere", "a.txt", &[]).await;
    assert_eq!(anonymous.status, refused(door, None), "{door:?}");
}

async fn a_file_and_a_directory_of_one_name_are_a_clear_refusal_on_local_volumes(door: Door) {
    let w = World::new("").await;
    let base = format!("{door:?}/clash");
    let put = |path: String, body: &'static [u8]| {
        let w = &w;
        async move {
            w.send(
                door,
                Some(CMS),
                Method::PUT,
                "private",
                &path,
                &[("content-type", "text/plain")],
                body,
            )
            .await
        }
    };
    assert_eq!(put(format!("{base}/a"), b"a file").await.status.as_u16() / 100, 2);
    let under = put(format!("{base}/a/b"), b"under a file").await;
    assert_eq!(under.status, 400, "{door:?}: {}", under.text());
    // S3's XML escapes the quotes.
    let said = under.text().replace("&apos;", "'");
    assert!(said.contains(&format!("'{base}/a' is a file")), "{door:?}: {said}");
    assert_eq!(
        put(format!("{base}/d/e"), b"in a directory").await.status.as_u16() / 100,
        2
    );
    let over = put(format!("{base}/d"), b"over a directory").await;
    assert_eq!(over.status, 400, "{door:?}: {}", over.text());
    assert!(over.text().contains("is a directory"), "{door:?}: {}", over.text());
    // Nothing was lost.
    let kept = w.get(door, Some(CMS), "private", &format!("{base}/d/e"), &[]).await;
    assert_eq!(&kept.body[..], b"in a directory", "{door:?}");
}

async fn etags_are_the_md5_of_the_bytes_through_both_doors(door: Door) {
    use md5::Digest;
    let w = World::new("").await;
    let path = format!("{door:?}/tagged.txt");
    let body = b"the same tag through every door";
    assert_eq!(
        w.put(door, Some(CMS), "private", &path, body, "text/plain").await / 100,
        2
    );
    let want = format!("\"{}\"", hex::encode(md5::Md5::digest(body)));
    let got = w.get(door, Some(CMS), "private", &path, &[]).await;
    assert_eq!(got.header("etag"), Some(want.as_str()), "{door:?}: GET");
    let head = w.send(door, Some(CMS), Method::HEAD, "private", &path, &[], b"").await;
    assert_eq!(head.header("etag"), Some(want.as_str()), "{door:?}: HEAD");
}

async fn the_content_policy_refuses_the_same_names_through_both_doors(door: Door) {
    let w = World::new("").await;
    // Plain text: the names alone are refused, including those a server
    // cuts short at `;` or `:`.
    for name in ["shell.php", "x.phtml", "run.cgi", "shell.php;.jpg", "shell.php::$DATA"] {
        let path = format!("{door:?}/{name}");
        let status = w
            .put(door, Some(CMS), "public", &path, b"plain words", "text/plain")
            .await;
        assert!(matches!(status, 403 | 422), "{door:?} {name}: {status}");
        assert_eq!(
            w.get(door, Some(CMS), "public", &path, &[]).await.status,
            404,
            "{door:?} {name}"
        );
    }
    let stored = silo_tests::files_under(&w.dir.path().join("volumes/public"));
    assert_eq!(stored, [], "{door:?}");
}

/// Conditional uploads keep two writers from overwriting each other, the
/// same way through both doors.
async fn conditional_uploads_through_both_doors(door: Door) {
    let w = World::new("").await;
    let path = format!("{door:?}/cond.txt");
    let put = |headers: Vec<(&'static str, String)>, body: &'static [u8]| {
        let (w, path) = (&w, path.clone());
        async move {
            let mut all: Vec<(&str, &str)> = vec![("content-type", "text/plain")];
            all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
            w.send(door, Some(CMS), Method::PUT, "private", &path, &all, body).await
        }
    };
    let created = put(vec![("if-none-match", "*".into())], b"first").await;
    assert_eq!(created.status.as_u16() / 100, 2, "{door:?}: {}", created.text());
    let again = put(vec![("if-none-match", "*".into())], b"second").await;
    assert_eq!(again.status, 412, "{door:?}: {}", again.text());
    let etag = w
        .get(door, Some(CMS), "private", &path, &[])
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let stale = put(vec![("if-match", "\"0123456789abcdef\"".into())], b"stale").await;
    assert_eq!(stale.status, 412, "{door:?}: {}", stale.text());
    let current = put(vec![("if-match", etag)], b"current").await;
    assert_eq!(current.status.as_u16() / 100, 2, "{door:?}: {}", current.text());
    let now = w.get(door, Some(CMS), "private", &path, &[]).await;
    assert_eq!(&now.body[..], b"current", "{door:?}");
    let etag = now.header("etag").unwrap().to_owned();
    // The other forms, as RFC 9110 reads them (never 501): If-None-Match
    // naming the file's version fails, naming another holds; If-Match: *
    // holds over a file and fails where there is none.
    let same = put(vec![("if-none-match", etag.clone())], b"same").await;
    assert_eq!(same.status, 412, "{door:?}: {}", same.text());
    let other = put(vec![("if-none-match", "\"0123456789abcdef\"".into())], b"other").await;
    assert_eq!(other.status.as_u16() / 100, 2, "{door:?}: {}", other.text());
    let any = put(vec![("if-match", "*".into())], b"any").await;
    assert_eq!(any.status.as_u16() / 100, 2, "{door:?}: {}", any.text());
    let now = w.get(door, Some(CMS), "private", &path, &[]).await;
    assert_eq!(&now.body[..], b"any", "{door:?}");
    let missing = w
        .send(
            door,
            Some(CMS),
            Method::PUT,
            "private",
            &format!("{door:?}/missing.txt"),
            &[("content-type", "text/plain"), ("if-match", "*")],
            b"nothing to replace",
        )
        .await;
    assert_eq!(missing.status, 412, "{door:?}: {}", missing.text());
    assert_eq!(
        w.get(door, Some(CMS), "private", &format!("{door:?}/missing.txt"), &[])
            .await
            .status,
        404,
        "{door:?}"
    );
}

/// Each body above, once through each door.
macro_rules! through_both_doors {
    ($($name:ident),* $(,)?) => {
        mod sidecar {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Door::Sidecar).await
            })*
        }
        mod s3 {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Door::S3).await
            })*
        }
    };
}

through_both_doors!(
    conditional_uploads_through_both_doors,
    ranges_are_served_alike_through_both_doors,
    served_headers_are_decided_once_for_every_type_and_visibility,
    reads_honour_every_precondition_through_both_doors,
    listings_page_and_roll_up_alike_over_1100_keys,
    grants_decide_every_operation_through_both_doors,
    deletes_and_missing_files_through_both_doors,
    the_content_policy_refuses_the_same_names_through_both_doors,
    etags_are_the_md5_of_the_bytes_through_both_doors,
    a_file_and_a_directory_of_one_name_are_a_clear_refusal_on_local_volumes,
);
