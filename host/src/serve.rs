//! `silo serve`: the HTTP sidecar, for CMSs in any language.
//!
//! Files live under `/v1/files/{volume}/{path}` (PUT uploads through the
//! pipeline, GET and HEAD read, DELETE removes), listings under
//! `/v1/list/{volume}/{prefix}`, and `/healthz` answers when Silo is up.
//! Writes need `Authorization: Bearer <token>`; public volumes are readable
//! without it, private ones only with it or a signed URL. `/metrics`
//! (Prometheus text) and `/v1/admin/...` need the separate admin token.
//! Every read says `nosniff`, and active types (HTML, SVG, JavaScript) are
//! served as attachments.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::Silo;
use crate::cache::Entry;
use crate::error::StorageError;
use crate::pipeline::Status;
use crate::store::{ByteRange, Condition};
use crate::vfs::{Access, MAX_URL_SECONDS, Visibility};

/// Who may do what.
#[derive(Clone)]
pub struct Tokens {
    /// Uploads, deletes, and reads of private volumes.
    pub write: String,
    /// Key of the signatures of time-limited URLs for private files.
    pub signing_key: Vec<u8>,
    /// Metrics and cache maintenance (`/metrics`, `/v1/admin/...`); `None`
    /// turns those routes off.
    pub admin: Option<String>,
    /// Principals whose bearer tokens open what their grants allow.
    pub principals: Option<Arc<crate::principals::PrincipalsHandle>>,
}

type Hmac = hmac::Hmac<sha2::Sha256>;

fn signer(key: &[u8], volume: &str, path: &str, expires: u64) -> Hmac {
    use hmac::Mac;
    let mut mac = Hmac::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{volume}/{path}\n{expires}").as_bytes());
    mac
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Deserialize, Default)]
struct Signed {
    expires: Option<u64>,
    signature: Option<String>,
}

impl Signed {
    /// Whether this is a valid, unexpired signature for the file.
    fn valid(&self, key: &[u8], volume: &str, path: &str) -> bool {
        use hmac::Mac;
        let (Some(expires), Some(signature)) = (self.expires, &self.signature) else {
            return false;
        };
        let Ok(signature) = hex::decode(signature) else {
            return false;
        };
        expires >= now_secs() && signer(key, volume, path, expires).verify_slice(&signature).is_ok()
    }
}

#[derive(Clone)]
struct App {
    silo: Arc<Silo>,
    tokens: Arc<Tokens>,
}

/// The sidecar's routes, for serving with `axum::serve` or nesting in an
/// embedder's own router.
pub fn router(silo: Arc<Silo>, tokens: Tokens) -> Router {
    let app = App {
        silo,
        tokens: Arc::new(tokens),
    };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/v1/files/{volume}/{*path}", get(read).put(upload).delete(remove))
        .route("/v1/styles/{style}/{volume}/{*path}", get(style))
        .route("/v1/images/{volume}/{*path}", get(image))
        .route("/v1/sign/{volume}/{*path}", get(sign))
        .route("/v1/list/{volume}", get(list_root))
        .route("/v1/list/{volume}/{*prefix}", get(list))
        .route("/v1/admin/cache/{volume}/refresh", post(refresh))
        .route("/v1/admin/cache/{volume}/verify", get(verify))
        .route("/v1/admin/stats", get(stats))
        .route("/v1/admin/audit", get(audit))
        .fallback(no_route)
        .layer(axum::middleware::from_fn_with_state(app.clone(), track))
        // Uploads are streamed into staging, which holds them to the
        // volume's `max_upload_mib`.
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

/// How a server's shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every request in flight finished.
    Finished,
    /// The drain timeout cut off requests still in flight.
    TimedOut,
}

/// Serve `router` on `listener` until `shutdown` completes: then take no
/// new connections and give the requests in flight up to `drain` to
/// finish. Responses go out without Nagle's delay (a small file's headers
/// and body are separate writes).
///
/// At most `max_connections` are open at once: past it a new connection
/// is answered 503 and closed, so a flood of idle connections costs the
/// node a bounded number of descriptors and buffers.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: std::time::Duration,
) -> std::io::Result<Drained> {
    let listener = Capped::new(listener, max_connections, SIDECAR_BUSY);
    let service = hyper_util::service::TowerToHyperService::new(router);
    serve_connections(listener, service, None, shutdown, drain).await
}

/// Largest read buffer of one connection. hyper grows a connection's
/// buffer up to about 400 KiB under a large body and keeps it while the
/// connection idles; capped here, 256 busy or idle keep-alive connections
/// hold at most 16 MiB of it.
const MAX_CONNECTION_BUFFER: usize = 64 * 1024;

/// Serve `service` on each connection `listener` accepts (HTTP/1.1, with
/// responses sent without Nagle's delay) until `shutdown` completes; then
/// take no new connections and give those under way up to `drain`.
/// `header_timeout`: a client slower than this with its headers is cut off.
pub(crate) async fn serve_connections<S, B>(
    mut listener: Capped,
    service: S,
    header_timeout: Option<Duration>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<Drained>
where
    S: hyper::service::Service<hyper::Request<hyper::body::Incoming>, Response = hyper::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use axum::serve::Listener;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .max_buf_size(MAX_CONNECTION_BUFFER);
        if let Some(timeout) = header_timeout {
            builder.header_read_timeout(timeout);
        }
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    // New connections are refused from here on, not left in the backlog.
    drop(listener);
    match tokio::time::timeout(drain, graceful.shutdown()).await {
        Ok(()) => Ok(Drained::Finished),
        Err(_) => Ok(Drained::TimedOut),
    }
}

/// What a sidecar connection past the cap is answered.
const SIDECAR_BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-type: application/json\r\n\
content-length: 80\r\nconnection: close\r\n\r\n\
{\"error\": {\"code\": \"busy\", \"message\": \"too many open connections; retry later\"}}";

/// A listener that keeps at most a given number of connections open.
/// Each accepted connection holds a place until it closes; one accepted
/// past the cap gets `busy` (a whole, short HTTP answer) and is closed.
pub(crate) struct Capped {
    listener: tokio::net::TcpListener,
    places: Arc<tokio::sync::Semaphore>,
    busy: &'static [u8],
}

/// A connection holding its place.
pub(crate) struct Placed {
    stream: tokio::net::TcpStream,
    _place: tokio::sync::OwnedSemaphorePermit,
}

impl Capped {
    pub(crate) fn new(listener: tokio::net::TcpListener, max: usize, busy: &'static [u8]) -> Self {
        Capped {
            listener,
            places: Arc::new(tokio::sync::Semaphore::new(
                max.clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
            busy,
        }
    }
}

impl axum::serve::Listener for Capped {
    type Io = Placed;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Placed, std::net::SocketAddr) {
        loop {
            let (stream, addr) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                // Out of descriptors and the like: wait, then go on.
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match self.places.clone().try_acquire_owned() {
                Ok(place) => return (Placed { stream, _place: place }, addr),
                Err(_) => {
                    let busy = self.busy;
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let mut stream = stream;
                        // A client that reads nothing does not hold the task.
                        let _ = tokio::time::timeout(Duration::from_secs(1), async {
                            stream.write_all(busy).await?;
                            stream.shutdown().await
                        })
                        .await;
                    });
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

impl tokio::io::AsyncRead for Placed {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Placed {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Count every request by its route pattern (never the path), those that
/// match none as `unmatched`.
async fn track(
    State(app): State<App>,
    route: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    // Label values come from a fixed set: a client cannot mint series.
    let method = ["GET", "HEAD", "PUT", "POST", "DELETE"]
        .into_iter()
        .find(|m| *m == request.method().as_str())
        .unwrap_or("other");
    let response = next.run(request).await;
    app.silo.storage().metrics().request(
        method,
        route.as_ref().map_or("unmatched", |r| r.as_str()),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// A query string, parsed; one that does not parse is a JSON error like
/// every other (axum's own answer is plain text).
struct Query<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad-request",
                message: rejection.body_text(),
            }),
        }
    }
}

/// The HTTP API as an OpenAPI 3.1 document (kept true by the tests).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// 200 while the node should take requests; 503, saying why, while it
/// drains or cannot reach its metadata engine or a backend (a load
/// balancer's readiness check; `/healthz` is the liveness one).
async fn ready(State(app): State<App>) -> Result<&'static str, ApiError> {
    match app.silo.unready().await {
        None => Ok("ready\n"),
        Some(why) => Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unavailable",
            message: format!("not ready: {why}"),
        }),
    }
}

async fn no_route() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "no-route",
        message: "no such route; the routes are listed in the README".into(),
    }
}

async fn metrics(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.may_admin(&headers)?;
    let text = app.silo.storage().metrics().render();
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// Rebuild a volume's metadata cache from its backend.
async fn refresh(State(app): State<App>, Path(volume): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.may_admin(&headers)?;
    let storage = app.silo.storage();
    known_volume(storage, &volume)?;
    let report = crate::maintenance::refresh(storage, &volume, &|_| {}).await?;
    Ok(axum::Json(report).into_response())
}

/// Compare a volume's metadata cache with its backend; changes nothing.
async fn verify(State(app): State<App>, Path(volume): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.may_admin(&headers)?;
    let storage = app.silo.storage();
    known_volume(storage, &volume)?;
    let drift = crate::maintenance::verify(storage, &volume, &|_| {}).await?;
    let clean = drift.is_clean();
    Ok(axum::Json(serde_json::json!({ "clean": clean, "drift": drift })).into_response())
}

/// Files and bytes per volume, from the metadata cache and the read caches.
async fn stats(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.may_admin(&headers)?;
    let storage = app.silo.storage();
    let cached = storage.cache().stats().await?;
    let volumes: Vec<_> = storage
        .volumes()
        .map(|v| {
            let s = cached.iter().find(|s| s.volume == v.name);
            serde_json::json!({
                "volume": v.name,
                "backend": v.store.describe(),
                "files": s.map_or(0, |s| s.files),
                "bytes": s.map_or(0, |s| s.bytes),
                "directories": s.map_or(0, |s| s.directories),
                "read_cache": v.read_cache.as_ref().map(|c| serde_json::json!({
                    "files": c.files(),
                    "bytes": c.bytes(),
                    "max_bytes": c.settings().max_bytes,
                })),
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "volumes": volumes })).into_response())
}

#[derive(Deserialize)]
struct AuditQuery {
    volume: Option<String>,
    prefix: Option<String>,
    principal: Option<String>,
    request_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// The `next` of the page before.
    after: Option<i64>,
    limit: Option<usize>,
}

/// A page of the audit trail, oldest first.
async fn audit(
    State(app): State<App>,
    Query(query): Query<AuditQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.may_admin(&headers)?;
    let time = |name: &str, text: Option<String>| {
        text.map(|t| crate::audit::parse_time(&t))
            .transpose()
            .map_err(|e| ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad-request",
                message: format!("{name}: {e}"),
            })
    };
    let filter = crate::audit::Filter {
        volume: query.volume,
        prefix: query.prefix,
        principal: query.principal,
        request_id: query.request_id,
        since_ms: time("since", query.since)?,
        until_ms: time("until", query.until)?,
    };
    let limit = query.limit.unwrap_or(1000).clamp(1, 1000);
    let records = app
        .silo
        .storage()
        .cache()
        .engine()
        .audit_query(&filter, query.after.filter(|a| *a > 0), limit)
        .await?;
    let next = (records.len() == limit).then(|| records.last().map(|r| r.id)).flatten();
    Ok(axum::Json(serde_json::json!({ "records": records, "next": next })).into_response())
}

fn known_volume(storage: &crate::Storage, volume: &str) -> Result<(), ApiError> {
    storage.volume(volume).map(|_| ()).map_err(|_| ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not-found",
        message: format!("there is no volume named '{volume}'"),
    })
}

/// An error as JSON: `{"error": {"code": ..., "message": ...}}`.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.code == "busy" {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        let status = match &e {
            StorageError::NotFound => StatusCode::NOT_FOUND,
            StorageError::AlreadyExists => StatusCode::CONFLICT,
            StorageError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            StorageError::AccessDenied | StorageError::Forbidden(_) => StatusCode::FORBIDDEN,
            StorageError::InvalidPath(_) => StatusCode::BAD_REQUEST,
            StorageError::TooLarge | StorageError::QuotaExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            StorageError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            StorageError::Unavailable(_) | StorageError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError {
            status,
            code: e.code(),
            message: e.to_string(),
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        message: "this needs `Authorization: Bearer <token>` with the sidecar's token".into(),
    }
}

/// The bearer token presented, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Constant-time comparison of the presented bearer token.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(presented) = bearer(headers) else {
        return false;
    };
    presented.len() == token.len()
        && presented
            .bytes()
            .zip(token.bytes())
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The name the write token's uploads are reported under.
pub const TOKEN_PRINCIPAL: &str = "token";

/// On a change, the id its request has in the audit trail; on a HEAD of a
/// file, the id of the request that wrote the version served.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-silo-request-id");

impl App {
    /// Who may do `access` on `volume` by the bearer token presented: the
    /// write token (every right, reported as `token`) or a principal's
    /// token within its grants; its name.
    fn may(&self, volume: &str, access: Access, headers: &HeaderMap) -> Result<String, ApiError> {
        if authorized(headers, &self.tokens.write) {
            return Ok(TOKEN_PRINCIPAL.into());
        }
        let principal = match (bearer(headers), &self.tokens.principals) {
            (Some(token), Some(principals)) => principals.current().by_token(token),
            _ => None,
        };
        match principal {
            Some(p) if p.may(volume, access) => Ok(p.name.clone()),
            Some(p) => Err(ApiError {
                status: StatusCode::FORBIDDEN,
                code: "forbidden",
                message: format!(
                    "principal '{}' may not {} in volume '{volume}'",
                    p.name,
                    match access {
                        Access::Read => "read",
                        Access::Write => "write",
                        Access::Delete => "delete",
                    }
                ),
            }),
            None => Err(unauthorized()),
        }
    }

    fn may_read(&self, volume: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        self.may_read_signed(volume, "", headers, &Signed::default())
    }

    fn may_read_signed(&self, volume: &str, path: &str, headers: &HeaderMap, signed: &Signed) -> Result<(), ApiError> {
        let public = self
            .silo
            .storage()
            .volume(volume)
            .is_ok_and(|v| v.visibility == Visibility::Public);
        if public || signed.valid(&self.tokens.signing_key, volume, path) {
            return Ok(());
        }
        self.may(volume, Access::Read, headers).map(drop)
    }

    fn may_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match &self.tokens.admin {
            Some(admin) if authorized(headers, admin) => Ok(()),
            Some(_) => Err(ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthorized",
                message: "admin routes need `Authorization: Bearer <admin token>`".into(),
            }),
            None => Err(ApiError {
                status: StatusCode::FORBIDDEN,
                code: "admin-disabled",
                message: "admin routes are off: start the sidecar with an admin token (SILO_ADMIN_TOKEN)".into(),
            }),
        }
    }
}

/// A single `bytes=` range against an object of `size` bytes: `Ok(None)` to
/// serve it whole (no header, or one this server does not honour).
fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<ByteRange>, ()> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (start, end) = spec.split_once('-').ok_or(())?;
    let (offset, last) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (start, "") => (start.parse().map_err(|_| ())?, size.saturating_sub(1)),
        (start, end) => {
            let (s, e): (u64, u64) = (start.parse().map_err(|_| ())?, end.parse().map_err(|_| ())?);
            if e < s {
                return Err(());
            }
            (s, e.min(size.saturating_sub(1)))
        }
    };
    if offset >= size {
        return Err(());
    }
    Ok(Some(ByteRange {
        offset,
        length: last - offset + 1,
    }))
}

/// A value Silo built itself (numbers, dates, quoted etags).
fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A stored value (content type, cache control) as a header, or `None` if
/// it cannot be one (set behind Silo's back): omitted, never replaced.
fn stored_header(name: &str, value: &str, loc: &crate::Location) -> Option<HeaderValue> {
    let parsed = HeaderValue::from_str(value).ok();
    if parsed.is_none() {
        tracing::warn!(file = %loc, "the stored {name} is not a valid header value; not sent");
    }
    parsed
}

async fn read(
    State(app): State<App>,
    Path((volume, path)): Path<(String, String)>,
    Query(signed): Query<Signed>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.may_read_signed(&volume, &path, &headers, &signed)?;
    let loc = app.silo.storage().location(&volume, &path)?;
    respond(&app, &volume, loc, &headers, method == axum::http::Method::HEAD).await
}

#[derive(Deserialize)]
struct SignQuery {
    expires_in: Option<u64>,
    /// `silo` (default): a URL of this sidecar; `s3`: an S3 presigned URL
    /// that bypasses it.
    via: Option<String>,
}

/// A time-limited URL for reading one file without the token.
async fn sign(
    State(app): State<App>,
    Path((volume, path)): Path<(String, String)>,
    Query(query): Query<SignQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // A signed URL shares one file: whoever may read it may share it.
    app.may(&volume, Access::Read, &headers)?;
    app.silo.storage().location(&volume, &path)?;
    let expires_in = query.expires_in.unwrap_or(3600);
    if !(1..=MAX_URL_SECONDS).contains(&expires_in) {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad-request",
            message: format!("expires_in must be 1..={MAX_URL_SECONDS} seconds"),
        });
    }
    let expires = now_secs() + expires_in;
    match query.via.as_deref() {
        None | Some("silo") => {}
        Some("s3") => {
            let storage = app.silo.storage();
            let loc = storage.location(&volume, &path)?;
            let meta = storage.host_session().stat(&loc).await?;
            let url = storage
                .presigned_url(&loc, &meta, Duration::from_secs(expires_in))
                .await?
                .ok_or_else(|| ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: "unsupported",
                    message: format!("volume '{volume}' is not on S3; leave out `via=s3` for a URL of this sidecar"),
                })?;
            return Ok(axum::Json(serde_json::json!({ "url": url, "expires": expires })).into_response());
        }
        Some(other) => {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad-request",
                message: format!("via must be `silo` or `s3`, not `{other}`"),
            });
        }
    }
    use hmac::Mac;
    let signature = hex::encode(
        signer(&app.tokens.signing_key, &volume, &path, expires)
            .finalize()
            .into_bytes(),
    );
    let url = format!(
        "/v1/files/{}/{}?expires={expires}&signature={signature}",
        crate::path::percent_encode(&volume),
        crate::path::percent_encode(&path)
    );
    Ok(axum::Json(serde_json::json!({ "url": url, "expires": expires })).into_response())
}

/// A style of an image, derived on the first request for it.
async fn style(
    State(app): State<App>,
    Path((style, volume, path)): Path<(String, String, String)>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.may_read(&volume, &headers)?;
    let head = method == axum::http::Method::HEAD;
    let loc = derive_style(&app, &style, &volume, &path).await?;
    match respond(&app, &volume, loc, &headers, head).await {
        // The style's row outlived its object (deleted behind Silo's
        // back); reading it dropped the row, so derive it again.
        Err(e) if e.code == "not-found" => {
            let loc = derive_style(&app, &style, &volume, &path).await?;
            respond(&app, &volume, loc, &headers, head).await
        }
        other => other,
    }
}

/// Derive a style as its own task: a client that leaves does not stop it
/// half-way (its files are kept or rolled back, and others waiting for the
/// same style are answered).
async fn derive_style(app: &App, style: &str, volume: &str, path: &str) -> Result<crate::Location, ApiError> {
    let silo = app.silo.clone();
    let (style, volume, path) = (style.to_owned(), volume.to_owned(), path.to_owned());
    let task = tokio::spawn(async move { silo.style(&volume, &path, &style).await });
    let derived = task
        .await
        .map_err(|e| internal(format!("deriving the style stopped: {e}")))?;
    let (loc, _) = derived.map_err(|e| style_error(e, false))?;
    Ok(loc)
}

/// A style or variant that could not be served. For a dynamic image the
/// plugin's verdict on the original is the client's answer: an image it
/// cannot decode (or that crashes or outlasts it) is 422, one too large
/// to decode within its limits 413.
fn style_error(e: crate::StyleError, image: bool) -> ApiError {
    use crate::runtime::InvokeError;
    let status = |status, e: &InvokeError| ApiError {
        status,
        code: e.code(),
        message: e.to_string(),
    };
    match e {
        crate::StyleError::Storage(e) => ApiError::from(e),
        e @ crate::StyleError::UnknownStyle { .. } => ApiError {
            status: StatusCode::NOT_FOUND,
            code: "unknown-style",
            message: e.to_string(),
        },
        crate::StyleError::BadArgument(e) => ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad-request",
            message: e.to_string(),
        },
        e @ crate::StyleError::TooManyVariants { .. } => ApiError {
            status: StatusCode::FORBIDDEN,
            code: "too-many-variants",
            message: e.to_string(),
        },
        crate::StyleError::Plugin(e) if image => match &e {
            InvokeError::MemoryLimit { .. }
            | InvokeError::Failed {
                error: StorageError::TooLarge,
                ..
            } => status(StatusCode::PAYLOAD_TOO_LARGE, &e),
            InvokeError::TimeLimit { .. }
            | InvokeError::Trap { .. }
            | InvokeError::Failed {
                error: StorageError::Forbidden(_) | StorageError::Unsupported(_),
                ..
            } => status(StatusCode::UNPROCESSABLE_ENTITY, &e),
            InvokeError::Failed { .. } => status(StatusCode::BAD_GATEWAY, &e),
        },
        crate::StyleError::Plugin(e) => status(StatusCode::BAD_GATEWAY, &e),
    }
}

/// A dynamic image: the variant of an original that Tachyon's arguments
/// ask for (see `crate::images`), derived by a plugin on the first request.
async fn image(
    State(app): State<App>,
    Path((volume, path)): Path<(String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.may_read(&volume, &headers)?;
    // Where the volume signs its image URLs, only URLs the CMS made are
    // served (and derived).
    if let Some(key) = app.silo.image_key(&volume) {
        let raw = raw.unwrap_or_default();
        let unsigned: Vec<&str> = raw.split('&').filter(|p| !p.starts_with("s=") && *p != "s").collect();
        let given = query.iter().find(|(k, _)| k == "s").map(|(_, v)| v.as_str());
        if !given.is_some_and(|s| crate::images::signed(key, &path, &unsigned.join("&"), s)) {
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                code: "bad-signature",
                message: format!(
                    "volume '{volume}' serves only signed image URLs: `s` must be the HMAC-SHA256 of the path, `?` and the other arguments"
                ),
            });
        }
    }
    let args = crate::images::ImageArgs::parse(
        query
            .iter()
            .filter(|(k, _)| k != "s")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )
    .map_err(|e| style_error(e.into(), true))?;
    let accepts_webp = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("image/webp"));
    let loc = match app.silo.stored_image(&volume, &path, &args, accepts_webp).await {
        Ok(Some(loc)) => loc,
        Ok(None) => {
            let silo = app.silo.clone();
            let (volume, path, args) = (volume.clone(), path.clone(), args.clone());
            // Its own task: a client that leaves does not stop the plugin
            // half-way, and others waiting for the variant are answered.
            let task = tokio::spawn(async move { silo.image(&volume, &path, &args, accepts_webp).await });
            task.await
                .map_err(|e| internal(format!("deriving the image stopped: {e}")))?
                .map_err(|e| style_error(e, true))?
                .0
        }
        Err(e) => return Err(style_error(e, true)),
    };
    let mut response = respond(&app, &volume, loc, &headers, method == axum::http::Method::HEAD).await?;
    if args.varies_by_accept() {
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Accept"));
    }
    Ok(response)
}

fn internal(message: String) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "internal",
        message,
    }
}

/// Serve a file: conditional, ranged, with safe headers. A HEAD answers
/// from the metadata cache alone, without asking the store.
async fn respond(
    app: &App,
    volume: &str,
    loc: crate::Location,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, ApiError> {
    let storage = app.silo.storage();
    let host = storage.host_session();
    let meta = host.stat(&loc).await?;
    let etag = format!("\"{}\"", meta.etag);
    let mut out = HeaderMap::new();
    out.insert(header::ETAG, header_value(&etag));
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Which request wrote this version: asked of the audit trail on HEAD
    // only, so that reads cost no query more.
    if head && storage.audit().enabled {
        let engine = storage.cache().engine();
        if let Some(id) = engine.audit_writer(volume, loc.path.as_str(), &meta.etag).await? {
            out.insert(REQUEST_ID, header_value(&id));
        }
    }
    // HTTP dates have whole seconds; compare at that precision.
    let modified = UNIX_EPOCH + Duration::from_secs(meta.modified_ms / 1000);
    let last_modified = httpdate::fmt_http_date(modified);
    out.insert(header::LAST_MODIFIED, header_value(&last_modified));
    let visibility = storage.volume(volume)?.visibility;
    let cache_control = visibility.cache_control(meta.cache_control.as_deref());
    if let Some(value) = stored_header("cache-control", &cache_control, &loc) {
        out.insert(header::CACHE_CONTROL, value);
    }
    let header_str = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    // If-Modified-Since counts only without If-None-Match (RFC 9110 13.1.3).
    let not_modified = match header_str(header::IF_NONE_MATCH) {
        Some(v) => v
            .split(',')
            .any(|t| t.trim() == etag || t.trim() == "*" || t.trim() == format!("W/{etag}")),
        None => header_str(header::IF_MODIFIED_SINCE)
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| modified <= since),
    };
    if not_modified {
        return Ok((StatusCode::NOT_MODIFIED, out).into_response());
    }
    match stored_header("content-type", &meta.content_type, &loc) {
        Some(value) => {
            out.insert(header::CONTENT_TYPE, value);
            if let Some(disposition) = storage.policy().disposition(&meta.content_type) {
                out.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static(disposition));
            }
        }
        // A type that cannot be told is never rendered.
        None => {
            out.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
        }
    }
    // What the writer declared (through the S3 endpoint) is served as
    // given; the disposition only where Silo has not decided one.
    for (name, value) in meta.headers.each() {
        let name = HeaderName::from_static(name);
        if name == header::CONTENT_DISPOSITION && out.contains_key(&name) {
            continue;
        }
        if let Some(value) = stored_header(name.as_str(), value, &loc) {
            out.insert(name, value);
        }
    }
    // A resumed download names the version it has; another version is sent
    // whole, never spliced onto the old bytes.
    let same_version = match header_str(header::IF_RANGE) {
        None => true,
        Some(v) if v.starts_with('"') => v == etag,
        Some(v) if v.starts_with("W/") => false,
        Some(v) => httpdate::parse_http_date(v).is_ok_and(|date| date == modified),
    };
    let range = if same_version {
        parse_range(headers, meta.size)
    } else {
        Ok(None)
    };
    let range = match range {
        Ok(r) => r,
        Err(()) => {
            out.insert(header::CONTENT_RANGE, header_value(&format!("bytes */{}", meta.size)));
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, out).into_response());
        }
    };
    let status = match range {
        Some(r) => {
            out.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {}-{}/{}", r.offset, r.offset + r.length - 1, meta.size)),
            );
            out.insert(header::CONTENT_LENGTH, header_value(&r.length.to_string()));
            StatusCode::PARTIAL_CONTENT
        }
        None => {
            out.insert(header::CONTENT_LENGTH, header_value(&meta.size.to_string()));
            StatusCode::OK
        }
    };
    if head {
        return Ok((status, out).into_response());
    }
    let body = match host.read_body(&loc, range).await?.1 {
        crate::vfs::ReadBody::Bytes(bytes) => Body::from(bytes),
        crate::vfs::ReadBody::Stream(stream) => {
            Body::from_stream(crate::vfs::answer_chunks(stream, range.map_or(meta.size, |r| r.length)))
        }
    };
    Ok((status, out, body).into_response())
}

async fn upload(
    State(app): State<App>,
    Path((volume, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = app.may(&volume, Access::Write, &headers)?;
    let target = format!("{volume}/{path}");
    app.silo.storage().location(&volume, &path)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && *v != "application/x-www-form-urlencoded");
    // Refused before a byte is read when the client says its size; else
    // staging cuts the body off at the limit.
    let limit = app.silo.upload_limit(&volume);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(&volume, limit));
    }
    let condition = upload_condition(&headers)?;
    use futures_util::TryStreamExt;
    let body = body.into_data_stream().map_err(std::io::Error::other);
    let report = async {
        let mut pending = app.silo.stage_chunks(&target, body, content_type).await?;
        pending.condition = condition;
        pending.actor = Some(crate::audit::Actor::request(principal));
        // Once staged, the upload runs to its end (stored, or rolled back)
        // as its own task, even if the client goes away.
        let silo = app.silo.clone();
        tokio::spawn(async move { silo.judge(pending).await })
            .await
            .map_err(|e| crate::SiloError::Storage(StorageError::unavailable(format!("the upload stopped: {e}"))))
    }
    .await
    .map_err(|e| match e {
        crate::SiloError::Storage(e) => ApiError::from(e),
        crate::SiloError::TooLarge { limit, .. } => too_large(&volume, limit),
        crate::SiloError::Source(e) => ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad-request",
            message: format!("reading the request body: {e}"),
        },
        other => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: other.to_string(),
        },
    })?;
    let conflict = |code: &str| matches!(code, "already-exists" | "precondition-failed");
    let status = match report.status {
        Status::Accepted => StatusCode::CREATED,
        Status::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
        Status::Error if report.error.as_ref().is_some_and(|e| conflict(&e.code)) => StatusCode::PRECONDITION_FAILED,
        Status::Error
            if report
                .error
                .as_ref()
                .is_some_and(|e| matches!(e.code.as_str(), "unavailable" | "busy")) =>
        {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Status::Error => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let request_id = report.request_id.as_deref().map(header_value);
    let mut response = (status, axum::Json(report)).into_response();
    if let Some(id) = request_id {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    Ok(response)
}

/// `If-None-Match: *` (create only) or `If-Match: "<etag>"` (replace only
/// that version) of an upload; other forms are refused, not ignored.
fn upload_condition(headers: &HeaderMap) -> Result<Option<Condition>, ApiError> {
    let bad = |message: &str| ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "bad-request",
        message: message.to_owned(),
    };
    let value = |name| {
        headers
            .get(name)
            .map(|v: &HeaderValue| {
                v.to_str()
                    .map(str::trim)
                    .map_err(|_| bad("a condition header is not text"))
            })
            .transpose()
    };
    match (value(header::IF_NONE_MATCH)?, value(header::IF_MATCH)?) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(bad("send If-None-Match or If-Match, not both")),
        (Some("*"), None) => Ok(Some(Condition::CreateOnly)),
        (Some(_), None) => Err(bad(
            "an upload takes If-None-Match: * only (create the file if it is not there)",
        )),
        (None, Some(tag)) => {
            let etag = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
            match etag {
                Some(etag) if !etag.is_empty() && !etag.contains('"') => Ok(Some(Condition::IfMatch(etag.to_owned()))),
                _ => Err(bad(
                    "If-Match takes one quoted etag, as the file's ETag header gives it",
                )),
            }
        }
    }
}

fn too_large(volume: &str, limit: u64) -> ApiError {
    ApiError {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: "too-large",
        message: format!("volume '{volume}' takes uploads of up to {limit} bytes (its max_upload_mib)"),
    }
}

async fn remove(
    State(app): State<App>,
    Path((volume, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let principal = app.may(&volume, Access::Delete, &headers)?;
    let storage = app.silo.storage();
    let loc = storage.location(&volume, &path)?;
    let actor = crate::audit::Actor::request(principal);
    let session = storage.host_session().with_actor(actor.clone());
    app.silo.delete(&session, &loc).await?;
    Ok((StatusCode::NO_CONTENT, [(REQUEST_ID, header_value(&actor.request_id))]).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    cursor: Option<String>,
    limit: Option<usize>,
    #[serde(default)]
    recursive: bool,
}

#[derive(Serialize)]
struct ListEntry {
    path: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    modified_ms: Option<u64>,
}

async fn list_root(
    state: State<App>,
    Path(volume): Path<String>,
    query: Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    list(state, Path((volume, String::new())), query, headers).await
}

async fn list(
    State(app): State<App>,
    Path((volume, prefix)): Path<(String, String)>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.may_read(&volume, &headers)?;
    let storage = app.silo.storage();
    storage
        .volume(&volume)
        .map_err(|_| StorageError::InvalidPath(format!("there is no volume named '{volume}'")))?;
    let prefix = prefix.trim_end_matches('/');
    let page = storage
        .host_session()
        .list(
            &volume,
            prefix,
            query.recursive,
            query.cursor.as_deref(),
            query.limit.unwrap_or(1000).clamp(1, 1000),
        )
        .await?;
    let entries: Vec<ListEntry> = page
        .entries
        .into_iter()
        .map(|e| match e {
            Entry::File { path, meta } => ListEntry {
                path,
                kind: "file",
                size: Some(meta.size),
                etag: Some(meta.etag),
                content_type: Some(meta.content_type),
                modified_ms: Some(meta.modified_ms),
            },
            Entry::Dir { path } => ListEntry {
                path,
                kind: "dir",
                size: None,
                etag: None,
                content_type: None,
                modified_ms: None,
            },
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "entries": entries, "next_cursor": page.next_cursor })).into_response())
}
