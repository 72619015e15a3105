//! The sidecar in-process on a loopback port, and a small HTTP client for
//! driving it as a CMS would.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use silo_host::Silo;
use silo_host::serve::Tokens;

pub const TOKEN: &str = "test-write-token-0123456789";
pub const ADMIN_TOKEN: &str = "test-admin-token-9876543210";

/// `silo serve`, in this process.
pub struct Sidecar {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Sidecar {
    /// With [`TOKEN`] and [`ADMIN_TOKEN`].
    pub async fn start(silo: Arc<Silo>) -> Sidecar {
        let tokens = Tokens {
            write: TOKEN.into(),
            signing_key: b"test-signing-key".to_vec(),
            admin: Some(ADMIN_TOKEN.into()),
            principals: None,
        };
        Self::start_with(silo, tokens).await
    }

    pub async fn start_with(silo: Arc<Silo>, tokens: Tokens) -> Sidecar {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let max_connections = silo.config().limits.max_connections as usize;
        let app = silo_host::serve::router(silo, tokens);
        let task = tokio::spawn(async move {
            silo_host::serve::serve(
                listener,
                app,
                max_connections,
                std::future::pending(),
                std::time::Duration::from_secs(30),
            )
            .await
            .expect("serve");
        });
        Sidecar { addr, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response, whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/1.1 client with a connection pool.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client {
            inner: HyperClient::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl Client {
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Reply> {
        let mut request = hyper::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = self.inner.request(request.body(Full::new(body))?).await?;
        let (parts, body) = response.into_parts();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await?.to_bytes(),
        })
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
        self.send(Method::GET, url, headers, Bytes::new()).await
    }

    /// A GET with `Authorization: Bearer <token>`.
    pub async fn get_as(&self, url: &str, token: &str) -> anyhow::Result<Reply> {
        self.get(url, &[("authorization", &format!("Bearer {token}"))]).await
    }

    /// An upload with the write token.
    pub async fn put(&self, url: &str, content_type: &str, body: impl Into<Bytes>) -> anyhow::Result<Reply> {
        let auth = format!("Bearer {TOKEN}");
        self.send(
            Method::PUT,
            url,
            &[("authorization", &auth), ("content-type", content_type)],
            body.into(),
        )
        .await
    }
}

/// Uploads per second of `total` text files of 5.4 KB through the sidecar
/// at `base` (`http://addr/v1/files/<volume>/<dir>`), 16 clients at once;
/// each must be stored (201).
pub async fn uploads_per_second(base: &str, total: usize) -> f64 {
    let client = Client::default();
    let body = Bytes::from(vec![b'u'; 5400]);
    let start = std::time::Instant::now();
    let mut workers = Vec::new();
    for w in 0..16 {
        let (client, body, url) = (client.clone(), body.clone(), format!("{base}/{w}"));
        workers.push(tokio::spawn(async move {
            for i in 0..total / 16 {
                let reply = client
                    .put(&format!("{url}-{i}.txt"), "text/plain", body.clone())
                    .await
                    .unwrap();
                assert_eq!(reply.status.as_u16(), 201, "{}", reply.text());
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}
