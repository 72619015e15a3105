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
