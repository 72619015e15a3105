//! Silo's S3 endpoint, started in the test's process beside a `Silo`, and
//! aws-sdk-s3 clients for it: the client CMSs and tools use.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use silo_host::Silo;
use silo_host::principals::PrincipalsHandle;
use silo_host::serve::s3::S3ApiSettings;

/// The base domain the tests' endpoints take virtual-host requests under.
pub const BASE_DOMAIN: &str = "s3.silo.test";

pub struct Endpoint {
    pub addr: std::net::SocketAddr,
    pub principals: Arc<PrincipalsHandle>,
    pub credentials_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
    _background: Option<silo_host::Background>,
    /// The nodes behind a balanced endpoint.
    pub nodes: Vec<Endpoint>,
}

impl Endpoint {
    /// An endpoint for `silo` with the principals of `credentials` (a
    /// credentials file's text), clients cut off after `idle`.
    pub async fn start(silo: Arc<Silo>, credentials: &str, idle: Duration) -> Endpoint {
        let dir = tempfile::tempdir().unwrap();
        let credentials_file = dir.path().join("credentials.toml");
        std::fs::write(&credentials_file, credentials).unwrap();
        let volumes = silo.config().volumes.keys().cloned().collect();
        let principals = Arc::new(PrincipalsHandle::open(Some(&credentials_file), volumes).expect("principals"));
        // Multipart handover between nodes and expiry, as `silo serve` runs them.
        let background = silo.start_background().await.expect("the background work");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = S3ApiSettings {
            base_domain: Some(BASE_DOMAIN.into()),
            region: "us-east-1".into(),
            idle_timeout: idle,
        };
        let task = tokio::spawn({
            let principals = principals.clone();
            async move {
                silo_host::serve::s3::serve(
                    listener,
                    silo,
                    principals,
                    settings,
                    std::future::pending(),
                    Duration::from_secs(30),
                )
                .await
                .expect("serve S3");
            }
        });
        Endpoint {
            addr,
            principals,
            credentials_file,
            _dir: dir,
            task,
            _background: Some(background),
            nodes: Vec::new(),
        }
    }

    /// One endpoint in front of `nodes`, as a load balancer puts one: each
    /// request goes to the next node in turn (not each connection), so a
    /// client's calls (a multipart upload's parts, a write and the read
    /// after it) are spread over the nodes. The Host header is kept, so
    /// signatures hold.
    pub async fn balanced(nodes: Vec<Endpoint>) -> Endpoint {
        use hyper_util::client::legacy::Client as HyperClient;
        use hyper_util::client::legacy::connect::HttpConnector;
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstreams: Arc<[std::net::SocketAddr]> = nodes.iter().map(|n| n.addr).collect();
        let client: HyperClient<HttpConnector, hyper::body::Incoming> =
            HyperClient::builder(TokioExecutor::new()).build(HttpConnector::new());
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (client, upstreams, next) = (client.clone(), upstreams.clone(), next.clone());
                let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    let (client, upstreams) = (client.clone(), upstreams.clone());
                    let node = upstreams[next.fetch_add(1, Ordering::Relaxed) % upstreams.len()];
                    async move {
                        let path = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
                        *request.uri_mut() = format!("http://{node}{path}").parse().unwrap();
                        client.request(request).await
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Endpoint {
            addr,
            principals: nodes[0].principals.clone(),
            credentials_file: nodes[0].credentials_file.clone(),
            _dir: tempfile::tempdir().unwrap(),
            task,
            _background: None,
            nodes,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An aws-sdk-s3 client signing with this key pair, path style.
    pub fn client(&self, access_key: &str, secret_key: &str) -> Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(self.url())
            .region(Region::new("us-east-1"))
            .force_path_style(true)
            .credentials_provider(Credentials::new(access_key, secret_key, None, None, "silo-tests"))
            .build();
        Client::from_conf(config)
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A credentials file's entry for one principal.
pub fn principal(name: &str, key: &str, secret: &str, grants: &str) -> String {
    format!(
        "[[principal]]\nname = \"{name}\"\ns3_access_key = \"{key}\"\ns3_secret_key = \"{secret}\"\ngrants = {grants}\n\n"
    )
}

/// Two nodes with `pipeline` sharing a new PostgreSQL database, on volumes
/// `public` and `private` in a new bucket of the S3 server, behind one
/// balanced endpoint ([`Endpoint::balanced`]) with the principals of
/// `credentials`: the first node's Silo, the endpoint, the bucket, and the
/// nodes' directories (kept while they run).
pub async fn two_nodes(
    pipeline: &str,
    credentials: &str,
    hint: &str,
) -> (Arc<Silo>, Endpoint, String, Vec<tempfile::TempDir>) {
    let bucket = crate::s3::bucket(hint).await;
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, crate::pg::database(hint).await).unwrap();
    let volumes = format!(
        "[metadata]\nbackend = \"postgres\"\nurl_file = \"{}\"\npool_size = 4\n\n{}{}",
        url_file.display(),
        crate::s3::volume_toml(
            "public",
            &bucket,
            "public",
            "visibility = \"public\"\npart_size_mib = 5"
        ),
        crate::s3::volume_toml("private", &bucket, "private", "part_size_mib = 5"),
    );
    let mut dirs = vec![dir];
    let mut nodes = Vec::new();
    let mut first = None;
    for _ in 0..2 {
        let t = crate::TestSilo::with_volumes(pipeline, &[], &volumes).await.unwrap();
        let silo = Arc::new(t.silo);
        first.get_or_insert_with(|| silo.clone());
        nodes.push(Endpoint::start(silo, credentials, Duration::from_secs(30)).await);
        dirs.push(t.dir);
    }
    let endpoint = Endpoint::balanced(nodes).await;
    (first.unwrap(), endpoint, bucket, dirs)
}

/// The fields of a browser form posting into `bucket` under `prefix`
/// (`<prefix>${filename}`), with a policy of an hour for files of 1 B to
/// 1 MiB signed by `key`/`secret` (SigV4, us-east-1), as a CMS's server
/// signs one.
pub fn post_fields(bucket: &str, prefix: &str, key: &str, secret: &str) -> Vec<(String, String)> {
    use aws_sdk_s3::primitives::{DateTime, DateTimeFormat};
    use base64::Engine;
    use hmac::Mac;
    type Hmac = hmac::Hmac<sha2::Sha256>;
    let now = std::time::SystemTime::now();
    let stamp = DateTime::from(now).fmt(DateTimeFormat::DateTime).unwrap();
    let amz_date: String = stamp.chars().filter(|c| *c != '-' && *c != ':').collect();
    let day = &amz_date[..8];
    let credential = format!("{key}/{day}/us-east-1/s3/aws4_request");
    let expiration = DateTime::from(now + Duration::from_secs(3600))
        .fmt(DateTimeFormat::DateTime)
        .unwrap();
    let policy = serde_json::json!({
        "expiration": expiration,
        "conditions": [
            {"bucket": bucket},
            ["starts-with", "$key", prefix],
            {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
            {"x-amz-credential": credential},
            {"x-amz-date": amz_date},
            ["content-length-range", 1, 1048576],
        ],
    });
    let policy = base64::engine::general_purpose::STANDARD.encode(policy.to_string());
    let step = |key: &[u8], data: &str| {
        let mut mac = Hmac::new_from_slice(key).unwrap();
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    let mut signing = step(format!("AWS4{secret}").as_bytes(), day);
    for part in ["us-east-1", "s3", "aws4_request"] {
        signing = step(&signing, part);
    }
    let signature = hex::encode(step(&signing, &policy));
    [
        ("key", format!("{prefix}${{filename}}")),
        ("x-amz-algorithm", "AWS4-HMAC-SHA256".into()),
        ("x-amz-credential", credential),
        ("x-amz-date", amz_date),
        ("policy", policy),
        ("x-amz-signature", signature),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A `multipart/form-data` body of `fields` and then the file, as a
/// browser sends a form: its Content-Type and its bytes.
pub fn form_body(
    fields: &[(String, String)],
    filename: &str,
    content_type: &str,
    file: &[u8],
) -> (String, bytes::Bytes) {
    let boundary = "----silo-form-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::with_capacity(file.len() + 2048);
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(file);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body.into())
}
