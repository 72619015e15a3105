//! A small "CMS" that embeds Silo as a library: its own routes, and Silo's
//! core calls behind them (the same calls the sidecar and the S3 endpoint
//! make, so access, preconditions and headers are Silo's).
//!
//! ```text
//! cargo run -p silo-host --example embed -- [ADDR] [DIR]
//! curl -X POST --data-binary @cat.jpg -H 'content-type: image/jpeg' http://127.0.0.1:3000/upload/photos/cat.jpg
//! curl -i http://127.0.0.1:3000/files/photos/cat.jpg
//! curl http://127.0.0.1:3000/folder/photos/
//! ```
//!
//! `ADDR` defaults to 127.0.0.1:3000 and `DIR` (where the built-in default
//! configuration keeps its volumes, state and plugins) to the current
//! directory. Uploads go to the public volume, judged by the built-in
//! plugins; visitors read them anonymously.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use silo_host::listing::ListRequest;
use silo_host::serving::{Chunks, ReadRequest};
use silo_host::{Caller, Outcome, PutRequest, Silo};

/// The CMS acts for itself with every right; its visitors are anonymous.
const CMS: Caller = Caller::Host("cms");
const VOLUME: &str = "public";

type Answer = Result<Response, (StatusCode, String)>;

fn failed(status: StatusCode, e: impl std::fmt::Display) -> (StatusCode, String) {
    (status, format!("{e}\n"))
}

/// Store the body at `path`, judged by Silo's plugins.
async fn upload(State(silo): State<Arc<Silo>>, Path(path): Path<String>, headers: HeaderMap, body: Body) -> Answer {
    use futures_util::TryStreamExt;
    let request = PutRequest {
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        ..Default::default()
    };
    let body = body.into_data_stream().map_err(std::io::Error::other);
    let report = silo
        .put(&CMS, VOLUME, &path, body, request)
        .await
        .map_err(|e| failed(StatusCode::BAD_REQUEST, e))?;
    let status = match report.outcome() {
        Outcome::Stored => StatusCode::CREATED,
        Outcome::Refused => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    Ok((status, axum::Json(report)).into_response())
}

/// Serve `path` to a visitor as Silo decides: ranges, conditions, safe
/// headers.
async fn file(State(silo): State<Arc<Silo>>, Path(path): Path<String>, headers: HeaderMap) -> Answer {
    let request = ReadRequest::from_headers(&headers, false);
    let served = silo
        .read(&Caller::Anonymous, VOLUME, &path, &request)
        .await
        .map_err(|e| failed(StatusCode::NOT_FOUND, e))?;
    let (status, headers) = (served.status.code(), served.headers.to_header_map());
    Ok(match served.into_chunks() {
        None => (status, headers).into_response(),
        Some(Chunks::Whole(bytes)) => (status, headers, Body::from(bytes)).into_response(),
        Some(Chunks::Streamed(stream)) => (status, headers, Body::from_stream(stream)).into_response(),
    })
}

/// The files and folders directly under `prefix`.
async fn folder(State(silo): State<Arc<Silo>>, Path(prefix): Path<String>) -> Answer {
    let request = ListRequest {
        prefix,
        delimiter: Some("/".into()),
        max: 1000,
        ..Default::default()
    };
    let listing = silo
        .list(&CMS, VOLUME, &request)
        .await
        .map_err(|e| failed(StatusCode::BAD_REQUEST, e))?;
    let files: Vec<_> = listing
        .contents
        .iter()
        .map(|(key, meta)| serde_json::json!({ "path": key, "size": meta.size, "type": meta.content_type }))
        .collect();
    Ok(axum::Json(serde_json::json!({ "files": files, "folders": listing.common_prefixes })).into_response())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let dir = args.next().map_or_else(std::env::current_dir, |d| Ok(d.into()))?;
    // The built-in default configuration under `dir`, serving: recovery,
    // audit upkeep and multipart expiry run for as long as `_background`
    // lives.
    let (silo, _background) = Silo::builder(&dir).serve().await?;
    let app = Router::new()
        .route("/upload/{*path}", post(upload))
        .route("/files/{*path}", get(file))
        .route("/folder/{*prefix}", get(folder))
        .with_state(silo);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("embed: listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
