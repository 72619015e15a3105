//! The PostgreSQL server `tests/run` starts: a fresh database per test.

use std::sync::atomic::{AtomicU64, Ordering};

/// The server's URL (its `postgres` database), from `tests/run`.
pub fn admin_url() -> String {
    std::env::var("SILO_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!("SILO_TEST_DATABASE_URL is not set: run the tests with tests/run, which starts PostgreSQL")
    })
}

/// A new, empty database; returns its URL.
pub async fn database(hint: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let admin = admin_url();
    let name = format!(
        "silo_{}_{}_{}",
        hint.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {admin}: {e}"));
    let task = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    drop(client);
    let _ = task.await;
    match admin.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("SILO_TEST_DATABASE_URL has no database name: {admin}"),
    }
}

/// A PostgreSQL server of a test's own, to stop and start again (the
/// binaries `tests/run` found; as the `postgres` user when run as root).
pub struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
    bin: std::path::PathBuf,
    /// More `-c` settings for the server.
    settings: String,
}

fn as_postgres(program: &std::path::Path) -> std::process::Command {
    // SAFETY-free check of root: the effective uid is 0 when /proc says so.
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        .unwrap_or(false);
    if root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

impl PgServer {
    pub fn start() -> PgServer {
        let server = Self::init();
        server.start_again();
        server
    }

    /// A server that takes TLS connections only, with this certificate and
    /// key (PEM): plain ones are refused by its pg_hba.conf.
    pub fn start_tls(cert: &str, key: &str) -> PgServer {
        let mut server = Self::init();
        let data = server.dir.path().join("data");
        std::fs::write(data.join("server.crt"), cert).unwrap();
        std::fs::write(data.join("server.key"), key).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 0.0.0.0/0 reject\n",
        )
        .unwrap();
        for file in ["server.crt", "server.key", "pg_hba.conf"] {
            use std::os::unix::fs::PermissionsExt;
            let path = data.join(file);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if as_postgres(&server.bin).get_program() == "runuser" {
                let out = std::process::Command::new("chown")
                    .arg("postgres")
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "chown: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        server.settings = "-c ssl=on".into();
        server.start_again();
        server
    }

    fn init() -> PgServer {
        let bin: std::path::PathBuf = std::env::var("SILO_TEST_PG_BIN")
            .unwrap_or_else(|_| panic!("SILO_TEST_PG_BIN is not set: run the tests with tests/run"))
            .into();
        let dir = tempfile::tempdir().expect("a directory for PostgreSQL");
        let port = crate::cluster::free_port();
        let status = |c: &mut std::process::Command| c.output().map(|o| (o.status.success(), o));
        if std::env::var("SILO_TEST_PG_BIN").is_ok() && as_postgres(&bin.join("initdb")).get_program() == "runuser" {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let (ok, out) = status(
            as_postgres(&bin.join("initdb"))
                .arg("-D")
                .arg(dir.path().join("data"))
                .args(["-U", "silo", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]),
        )
        .expect("run initdb");
        assert!(ok, "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        PgServer {
            dir,
            port,
            bin,
            settings: String::new(),
        }
    }

    /// The server's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("postgres://silo@127.0.0.1:{}/postgres", self.port)
    }

    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {}",
            self.port,
            self.dir.path().display(),
            self.settings
        );
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stop at once, as a crash would.
    pub fn stop(&self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
