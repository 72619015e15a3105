//! A SeaweedFS server of one test's own, for killing and restarting: the
//! shared server (`s3`) must stay up for every other test. Same binary as
//! the shared one (`tests/run` exports its path as `SILO_TEST_WEED`), same
//! credentials, every port free and on 127.0.0.1, its own data directory,
//! kept across a restart.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;

pub struct Seaweed {
    dir: tempfile::TempDir,
    ports: Vec<(&'static str, u16)>,
    child: Option<Child>,
    starts: u32,
}

/// Every listening port `weed mini` opens when WebDAV, the admin UI and
/// the table-bucket ports are off.
const PORT_FLAGS: &[&str] = &[
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
];

impl Seaweed {
    /// Start a fresh server and wait until it answers S3 requests.
    pub async fn start() -> Seaweed {
        let dir = tempfile::tempdir().expect("a temp dir for SeaweedFS");
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let identities = serde_json::json!({"identities": [{
            "name": "silo-test",
            "credentials": [{
                "accessKey": crate::s3::env("AWS_ACCESS_KEY_ID"),
                "secretKey": crate::s3::env("AWS_SECRET_ACCESS_KEY"),
            }],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]});
        std::fs::write(dir.path().join("identities.json"), identities.to_string()).unwrap();
        // Free ports, asked of the kernel; held together so none repeats.
        let held: Vec<TcpListener> = PORT_FLAGS
            .iter()
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
            .collect();
        let ports = PORT_FLAGS
            .iter()
            .zip(&held)
            .map(|(flag, l)| (*flag, l.local_addr().unwrap().port()))
            .collect();
        drop(held);
        let mut server = Seaweed {
            dir,
            ports,
            child: None,
            starts: 0,
        };
        server.launch().await;
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[0].1)
    }

    /// A plain S3 client for this server.
    pub fn client(&self) -> Client {
        crate::s3::client_at(&self.endpoint())
    }

    /// Bytes the server process has read so far (sockets and files), from
    /// `/proc`: how a test tells that an upload is under way.
    pub fn bytes_read(&self) -> u64 {
        let pid = self.child.as_ref().expect("the server is running").id();
        let io = std::fs::read_to_string(format!("/proc/{pid}/io")).expect("read /proc/PID/io");
        io.lines()
            .find_map(|l| l.strip_prefix("rchar:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("rchar in /proc/PID/io")
    }

    /// SIGKILL: the server dies at once, mid-request or not.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same ports and data, and wait until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        self.launch().await;
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join(format!("weed-{}.log", self.starts))
    }

    async fn launch(&mut self) {
        let weed = std::env::var("SILO_TEST_WEED").unwrap_or_else(|_| {
            panic!(
                "SILO_TEST_WEED is not set: this test starts a SeaweedFS server of its own; \
                 run it through `tests/run` (the README's test command), which installs SeaweedFS and exports its path"
            )
        });
        self.starts += 1;
        let log = std::fs::File::create(self.log()).unwrap();
        let mut command = Command::new(&weed);
        command
            .arg("mini")
            .arg(format!("-dir={}", self.dir.path().join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-webdav=false",
                "-admin.ui=false",
            ])
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"])
            // A bucket takes a volume; the default count is free disk / 1 GiB.
            .arg("-volume.max=1000")
            .arg(format!(
                "-s3.config={}",
                self.dir.path().join("identities.json").display()
            ))
            .args(self.ports.iter().map(|(flag, port)| format!("-{flag}={port}")))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start SeaweedFS ({weed}): {e}"));
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Ready when a bucket can be listed: the S3 gateway answers and its
    /// filer is up (a bare 403 comes sooner than that).
    async fn wait_ready(&mut self) {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if client.list_buckets().send().await.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "SeaweedFS exited ({status}); its log:\n{}",
                    std::fs::read_to_string(self.log()).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "SeaweedFS did not answer on {} within 60 s; its log:\n{}",
                    self.endpoint(),
                    std::fs::read_to_string(self.log()).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.kill();
    }
}
