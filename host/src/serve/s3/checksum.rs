//! The digests a client sends with a body (`Content-MD5`, `x-amz-checksum-*`
//! in headers or trailers), computed as the body passes and checked once it
//! has arrived; and the body's idle timeout.

use super::*;

/// The S3 error of a body whose digests did not match, kept for the
/// answer while the core reports only that they did not.
#[derive(Clone, Default)]
pub(super) struct Mismatch(pub(super) Arc<std::sync::Mutex<Option<S3Error>>>);

impl Mismatch {
    pub(super) fn take(&self, message: String) -> S3Error {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_else(|| s3_error!(BadDigest, "{message}"))
    }
}

/// The check the core runs once a body is stored: that it is what the
/// client's digests say.
pub(super) fn verifier(
    declared: Declared,
    hashing: Arc<std::sync::Mutex<Hashing>>,
    trailing: Option<s3s::TrailingHeaders>,
) -> (crate::put::Verify, Mismatch) {
    let mismatch = Mismatch::default();
    let kept = mismatch.clone();
    let verify = move || {
        let computed = std::mem::take(&mut *hashing.lock().unwrap_or_else(|p| p.into_inner()));
        declared.verify(computed, trailing.as_ref()).map_err(|e| {
            let message = e.message().unwrap_or("the body is not what its digests say").to_owned();
            *kept.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            message
        })
    };
    (Box::new(verify), mismatch)
}

/// A body cut off when idle, hashed as it passes for the digests the
/// client declared.
pub(super) fn hashed(
    body: StreamingBlob,
    idle: Duration,
    declared: &Declared,
) -> (
    impl Stream<Item = std::io::Result<Bytes>> + Unpin + Send + 'static,
    Arc<std::sync::Mutex<Hashing>>,
) {
    let hashing = Arc::new(std::sync::Mutex::new(declared.hasher()));
    let body = body_chunks(body, idle).map({
        let hashing = hashing.clone();
        move |chunk| {
            if let Ok(bytes) = &chunk {
                hashing.lock().unwrap_or_else(|p| p.into_inner()).update(bytes);
            }
            chunk
        }
    });
    (body, hashing)
}

/// The digests a client sent with a body (`Content-MD5`, `x-amz-checksum-*`
/// in the headers or announced in `x-amz-trailer`), checked once the whole
/// body has arrived.
pub(super) struct Declared {
    md5: Option<String>,
    /// (algorithm, the value sent in the headers, or `None` for the trailer)
    checksums: Vec<(&'static str, Option<String>)>,
}

/// What the body turned out to be.
#[derive(Default)]
pub(super) struct Hashing {
    md5: Option<md5::Md5>,
    checksums: s3s::checksum::ChecksumHasher,
}

impl Hashing {
    pub(super) fn update(&mut self, bytes: &[u8]) {
        use md5::Digest;
        if let Some(md5) = &mut self.md5 {
            md5.update(bytes);
        }
        self.checksums.update(bytes);
    }
}

impl Declared {
    /// The digests of a request: in its headers, or (a presigned URL
    /// signs them there) in its query.
    pub(super) fn of(headers: &http::HeaderMap, uri: &http::Uri) -> S3Result<Declared> {
        let text = |name: &str| -> S3Result<Option<String>> {
            headers
                .get(name)
                .map(|v| v.to_str().map(|s| s.trim().to_owned()))
                .transpose()
                .map_err(|_| s3_error!(InvalidArgument, "{name} is not text"))
        };
        let query = |name: &str| -> S3Result<Option<String>> {
            let Some(query) = uri.query() else { return Ok(None) };
            for pair in query.split('&') {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                if key.eq_ignore_ascii_case(name) {
                    let value = percent_encoding::percent_decode_str(value)
                        .decode_utf8()
                        .map_err(|_| s3_error!(InvalidArgument, "{name} is not text"))?;
                    return Ok(Some(value.trim().to_owned()));
                }
            }
            Ok(None)
        };
        let trailer = text("x-amz-trailer")?.unwrap_or_default().to_ascii_lowercase();
        let mut checksums = Vec::new();
        for algorithm in CHECKSUMS {
            let name = format!("x-amz-checksum-{algorithm}");
            if let Some(value) = text(&name)?.or(query(&name)?) {
                checksums.push((algorithm, Some(value)));
            } else if trailer.split(',').any(|t| t.trim() == name) {
                checksums.push((algorithm, None));
            }
        }
        Ok(Declared {
            md5: text("content-md5")?,
            checksums,
        })
    }

    pub(super) fn hasher(&self) -> Hashing {
        let wants = |a: &str| self.checksums.iter().any(|(b, _)| *b == a);
        let mut checksums = s3s::checksum::ChecksumHasher::default();
        if wants("crc32") {
            checksums.crc32 = Some(Default::default());
        }
        if wants("crc32c") {
            checksums.crc32c = Some(Default::default());
        }
        if wants("crc64nvme") {
            checksums.crc64nvme = Some(Default::default());
        }
        if wants("sha1") {
            checksums.sha1 = Some(Default::default());
        }
        if wants("sha256") {
            checksums.sha256 = Some(Default::default());
        }
        Hashing {
            md5: self.md5.is_some().then(<md5::Md5 as md5::Digest>::new),
            checksums,
        }
    }

    /// `BadDigest` unless every digest sent is the body's; the checksum
    /// to keep with the object (the first sent, as S3 keeps one).
    pub(super) fn verify(
        &self,
        computed: Hashing,
        trailing: Option<&s3s::TrailingHeaders>,
    ) -> S3Result<Option<Checksum>> {
        use base64::Engine;
        use md5::Digest;
        if let (Some(sent), Some(md5)) = (&self.md5, computed.md5) {
            let actual = base64::engine::general_purpose::STANDARD.encode(md5.finalize());
            if *sent != actual {
                return Err(s3_error!(
                    BadDigest,
                    "the Content-MD5 sent ({sent}) is not the body's ({actual})"
                ));
            }
        }
        let sums = computed.checksums.finalize();
        let trailer = trailing.and_then(s3s::TrailingHeaders::take);
        let mut kept = None;
        for (algorithm, sent) in &self.checksums {
            let actual = match *algorithm {
                "crc32" => &sums.checksum_crc32,
                "crc32c" => &sums.checksum_crc32c,
                "crc64nvme" => &sums.checksum_crc64nvme,
                "sha1" => &sums.checksum_sha1,
                _ => &sums.checksum_sha256,
            }
            .clone()
            .unwrap_or_default();
            let sent = match sent {
                Some(value) => value.clone(),
                None => trailer
                    .as_ref()
                    .and_then(|t| t.get(format!("x-amz-checksum-{algorithm}")))
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim().to_owned())
                    .ok_or_else(|| {
                        s3_error!(
                            InvalidRequest,
                            "x-amz-trailer announced x-amz-checksum-{algorithm}, and no trailer gave it"
                        )
                    })?,
            };
            if sent != actual {
                return Err(s3_error!(
                    BadDigest,
                    "the {} checksum sent ({sent}) is not the body's ({actual})",
                    algorithm.to_ascii_uppercase()
                ));
            }
            kept.get_or_insert(Checksum {
                algorithm: algorithm.to_ascii_uppercase(),
                value: sent,
                kind: "FULL_OBJECT".into(),
            });
        }
        Ok(kept)
    }
}

/// A request body as the chunks it arrives in, cut off when the client
/// goes quiet for longer than `idle`.
pub(super) fn body_chunks<E: std::fmt::Display>(
    body: impl Stream<Item = Result<Bytes, E>> + Unpin + Send + 'static,
    idle: Duration,
) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin + Send + 'static {
    Box::pin(futures_util::stream::unfold(Some(body), move |body| async move {
        let mut body = body?;
        match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
            Ok(Some(Err(e))) => Some((Err(std::io::Error::other(e.to_string())), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the client sent nothing for {} s", idle.as_secs()),
                )),
                None,
            )),
        }
    }))
}
