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

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::auth::{Admin, Bearers};
use crate::access::{Caller, Denied, Op, RequestError};
use crate::cache::Entry;
use crate::error::StorageError;
use crate::serving::{Chunks, REQUEST_ID, ReadRequest, Served};
use crate::vfs::MAX_URL_SECONDS;
use crate::{Outcome, PutError, PutRequest, Silo, StyleError, WriteConditions};

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

/// The query of a URL Silo signed.
#[derive(Deserialize, Default)]
struct Signed {
    expires: Option<u64>,
    signature: Option<String>,
}

#[derive(Clone)]
struct App {
    silo: Arc<Silo>,
    bearers: Arc<Bearers>,
}

/// The sidecar's routes, for serving with `axum::serve` or nesting in an
/// embedder's own router.
pub fn router(silo: Arc<Silo>, tokens: Tokens) -> Router {
    let volumes = silo.config().volumes.keys().cloned();
    let bearers = Bearers::new(
        tokens.write,
        tokens.signing_key,
        tokens.admin,
        tokens.principals,
        volumes,
    );
    let app = App {
        silo,
        bearers: Arc::new(bearers),
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
    app.silo.metrics().request(
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
    let text = app.silo.metrics().render();
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
    let report = app.silo.refresh(&volume).await?;
    Ok(axum::Json(report).into_response())
}

/// Compare a volume's metadata cache with its backend; changes nothing.
async fn verify(State(app): State<App>, Path(volume): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.may_admin(&headers)?;
    let drift = app.silo.verify(&volume).await?;
    let clean = drift.is_clean();
    Ok(axum::Json(serde_json::json!({ "clean": clean, "drift": drift })).into_response())
}

/// Files and bytes per volume, from the metadata cache and the read caches.
async fn stats(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.may_admin(&headers)?;
    let volumes = app.silo.volume_reports().await?;
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
    let limit = query.limit.unwrap_or(1000).clamp(1, crate::admin::MAX_AUDIT_PAGE);
    let records = app.silo.audit_page(&filter, query.after, limit).await?;
    let next = (records.len() == limit).then(|| records.last().map(|r| r.id)).flatten();
    Ok(axum::Json(serde_json::json!({ "records": records, "next": next })).into_response())
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

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Denied(e) => e.into(),
            RequestError::Storage(e) => e.into(),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(e: Denied) -> Self {
        match e {
            Denied::Unauthenticated => unauthorized(),
            e @ Denied::NotGranted { .. } => ApiError {
                status: StatusCode::FORBIDDEN,
                code: "forbidden",
                message: e.to_string(),
            },
            e @ Denied::NoSuchVolume(_) => ApiError {
                status: StatusCode::NOT_FOUND,
                code: "not-found",
                message: e.to_string(),
            },
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

impl App {
    fn may_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match self.bearers.admin(headers) {
            Admin::Allowed => Ok(()),
            Admin::Unauthorized => Err(ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthorized",
                message: "admin routes need `Authorization: Bearer <admin token>`".into(),
            }),
            Admin::Disabled => Err(ApiError {
                status: StatusCode::FORBIDDEN,
                code: "admin-disabled",
                message: "admin routes are off: start the sidecar with an admin token (SILO_ADMIN_TOKEN)".into(),
            }),
        }
    }
}

/// A read's answer, written out as the core decided it.
fn served(served: Served) -> Response {
    let status = served.status.code();
    let headers = served.headers.to_header_map();
    match served.into_chunks() {
        None => (status, headers).into_response(),
        Some(Chunks::Whole(bytes)) => (status, headers, Body::from(bytes)).into_response(),
        Some(Chunks::Streamed(stream)) => (status, headers, Body::from_stream(stream)).into_response(),
    }
}

async fn read(
    State(app): State<App>,
    Path((volume, path)): Path<(String, String)>,
    Query(signed): Query<Signed>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = app
        .bearers
        .caller_signed(&headers, &volume, &path, signed.expires, signed.signature.as_deref());
    let head = method == axum::http::Method::HEAD;
    // A HEAD says which request wrote the version it describes.
    let request = ReadRequest {
        writer: head,
        ..ReadRequest::from_headers(&headers, head)
    };
    Ok(served(app.silo.read(&caller, &volume, &path, &request).await?))
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
    let caller = app.bearers.caller(&headers);
    if matches!(caller, Caller::Anonymous) {
        return Err(unauthorized());
    }
    let expires_in = query.expires_in.unwrap_or(3600);
    if !(1..=MAX_URL_SECONDS).contains(&expires_in) {
        app.silo.authorize(&caller, &volume, &path, Op::Read)?;
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad-request",
            message: format!("expires_in must be 1..={MAX_URL_SECONDS} seconds"),
        });
    }
    let lifetime = std::time::Duration::from_secs(expires_in);
    match query.via.as_deref() {
        None | Some("silo") => {
            let (url, expires) = app.silo.sign(&caller, &app.bearers.signer, &volume, &path, lifetime)?;
            Ok(axum::Json(serde_json::json!({ "url": url, "expires": expires })).into_response())
        }
        Some("s3") => {
            let expires = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                + expires_in;
            let url = app
                .silo
                .presign(&caller, &volume, &path, lifetime)
                .await?
                .ok_or_else(|| ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: "unsupported",
                    message: format!("volume '{volume}' is not on S3; leave out `via=s3` for a URL of this sidecar"),
                })?;
            Ok(axum::Json(serde_json::json!({ "url": url, "expires": expires })).into_response())
        }
        Some(other) => {
            app.silo.authorize(&caller, &volume, &path, Op::Read)?;
            Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad-request",
                message: format!("via must be `silo` or `s3`, not `{other}`"),
            })
        }
    }
}

/// A style of an image, derived on the first request for it.
async fn style(
    State(app): State<App>,
    Path((style, volume, path)): Path<(String, String, String)>,
    method: axum::http::Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = app.bearers.caller(&headers);
    let request = ReadRequest::from_headers(&headers, method == axum::http::Method::HEAD);
    let answer = app.silo.read_style(&caller, &style, &volume, &path, &request).await;
    Ok(served(answer.map_err(|e| style_error(e, false))?))
}

/// A style or variant that could not be served. For a dynamic image the
/// plugin's verdict on the original is the client's answer: an image it
/// cannot decode (or that crashes or outlasts it) is 422, one too large
/// to decode within its limits 413.
fn style_error(e: StyleError, image: bool) -> ApiError {
    use crate::runtime::InvokeError;
    let status = |status, e: &InvokeError| ApiError {
        status,
        code: e.code(),
        message: e.to_string(),
    };
    match e {
        StyleError::Storage(e) => ApiError::from(e),
        StyleError::Denied(e) => ApiError::from(e),
        e @ StyleError::UnknownStyle { .. } => ApiError {
            status: StatusCode::NOT_FOUND,
            code: "unknown-style",
            message: e.to_string(),
        },
        StyleError::BadArgument(e) => ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad-request",
            message: e.to_string(),
        },
        e @ StyleError::TooManyVariants { .. } => ApiError {
            status: StatusCode::FORBIDDEN,
            code: "too-many-variants",
            message: e.to_string(),
        },
        StyleError::Plugin(e) if image => match &e {
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
        StyleError::Plugin(e) => status(StatusCode::BAD_GATEWAY, &e),
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
    let caller = app.bearers.caller(&headers);
    app.silo.authorize(&caller, &volume, &path, Op::Read)?;
    // Where the volume signs its image URLs, only URLs the CMS made are
    // served (and derived).
    let raw = raw.unwrap_or_default();
    let unsigned: Vec<&str> = raw.split('&').filter(|p| !p.starts_with("s=") && *p != "s").collect();
    let given = query.iter().find(|(k, _)| k == "s").map(|(_, v)| v.as_str());
    if !app.silo.image_url_holds(&volume, &path, &unsigned.join("&"), given) {
        return Err(ApiError {
            status: StatusCode::FORBIDDEN,
            code: "bad-signature",
            message: format!(
                "volume '{volume}' serves only signed image URLs: `s` must be the HMAC-SHA256 of the path, `?` and the other arguments"
            ),
        });
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
    let request = ReadRequest::from_headers(&headers, method == axum::http::Method::HEAD);
    let answer = app
        .silo
        .read_image(&caller, &volume, &path, &args, accepts_webp, &request)
        .await;
    Ok(served(answer.map_err(|e| style_error(e, true))?))
}

async fn upload(
    State(app): State<App>,
    Path((volume, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && *v != "application/x-www-form-urlencoded");
    let request = PutRequest {
        content_type: content_type.map(str::to_owned),
        conditions: WriteConditions::from_headers(&headers),
        length: headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok()),
        ..Default::default()
    };
    use futures_util::TryStreamExt;
    let body = body.into_data_stream().map_err(std::io::Error::other);
    let report = app
        .silo
        .put(&app.bearers.caller(&headers), &volume, &path, body, request)
        .await
        .map_err(put_error)?;
    let status = match report.outcome() {
        Outcome::Stored => StatusCode::CREATED,
        Outcome::Refused => StatusCode::UNPROCESSABLE_ENTITY,
        Outcome::Conflict => StatusCode::PRECONDITION_FAILED,
        Outcome::Invalid => StatusCode::BAD_REQUEST,
        Outcome::Unavailable | Outcome::Busy => StatusCode::SERVICE_UNAVAILABLE,
        Outcome::Forbidden | Outcome::TooLarge | Outcome::Failed => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let request_id = report
        .request_id
        .as_deref()
        .and_then(|id| HeaderValue::from_str(id).ok());
    let mut response = (status, axum::Json(report)).into_response();
    if let Some(id) = request_id {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    Ok(response)
}

/// Why an upload was not judged, as the sidecar answers it.
fn put_error(e: PutError) -> ApiError {
    match e {
        PutError::Denied(e) => e.into(),
        PutError::Storage(e) => e.into(),
        PutError::TooLarge { volume, limit } => too_large(&volume, limit),
        e @ (PutError::Body(_)
        | PutError::BadDigest(_)
        | PutError::SourceCondition
        | PutError::SourceRange
        | PutError::OntoItself) => ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad-request",
            message: e.to_string(),
        },
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
    let request_id = app.silo.delete(&app.bearers.caller(&headers), &volume, &path).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    Ok(response)
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
    let page = app
        .silo
        .list_dir(
            &app.bearers.caller(&headers),
            &volume,
            &prefix,
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
