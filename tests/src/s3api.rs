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
    _background: silo_host::Background,
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
            _background: background,
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
