//! The PostgreSQL engine of the metadata cache, for several Silo nodes on
//! one bucket: they share the rows, the refresh records and the refresh
//! lock. All of its SQL lives here.
//!
//! Paths are `COLLATE "C"`, so listings are in byte order as on SQLite.
//! Writes that add or prune directories take a transaction-scoped advisory
//! lock on the path's top-level directory (every shared ancestor implies
//! the same one), so a delete pruning a directory never races a write into
//! it on another node. Every change is announced with `NOTIFY` in its
//! transaction: the front caches of the other nodes drop the row when it
//! commits (see `Listener`).
//!
//! The schema is versioned (`silo_schema`); a database with a newer one
//! than this Silo knows is refused.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{
    Version,
    Change, Completion, Entry, FrontSink, Intent, MetadataEngine, Page, PartRecord, RefreshCounts, RefreshPart,
    RefreshProgress, UploadRecord, VolumeStats, decode_cursor, metadata_from_json, metadata_json, paginate,
    prefix_upper_bound,
};
use crate::audit::{Action, Filter, Record};
use crate::error::{StorageError, StorageResult};
use crate::path::{VolumePath, parent_of};
use crate::store::ObjectMeta;

/// The schema this Silo creates and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;
/// The channel changes are announced on.
const CHANNEL: &str = "silo_cache";
/// Where nodes ask each other for what only one of them holds.
const REQUESTS: &str = "silo_requests";
/// How often the change listener asks its connection whether it still
/// stands, and how long it waits for the answer.
const LISTENER_HEARTBEAT: Duration = Duration::from_secs(5);
/// Rows sent in one statement of a bulk insert.
const BATCH: usize = 5000;

const SCHEMA_V1: &str = r#"
CREATE TABLE objects (
    volume TEXT NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    parent TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    modified_ms BIGINT NOT NULL,
    cache_control TEXT,
    metadata TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (volume, path)
);
CREATE INDEX objects_in_dir ON objects (volume, parent, path)
    INCLUDE (size, etag, content_type, modified_ms, cache_control, metadata);
CREATE TABLE dirs (
    volume TEXT NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    parent TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (volume, path)
);
CREATE INDEX dirs_by_parent ON dirs (volume, parent, path);
CREATE TABLE refresh_runs (
    volume TEXT NOT NULL PRIMARY KEY,
    backend TEXT NOT NULL,
    started_ms BIGINT NOT NULL,
    owner TEXT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);
CREATE TABLE refresh_parts (
    volume TEXT NOT NULL,
    kind TEXT NOT NULL,
    prefix TEXT COLLATE "C" NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (volume, kind, prefix)
);
CREATE TABLE refresh_found (
    volume TEXT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    size BIGINT NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    modified_ms BIGINT NOT NULL,
    cache_control TEXT,
    metadata TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (volume, key)
);
-- A file recorded, or forgotten, in one round trip: the directory lock,
-- the rows and the announcement, in the statement's own transaction.
CREATE FUNCTION silo_put(v TEXT, p TEXT, par TEXT, sz BIGINT, e TEXT, ct TEXT, m BIGINT, cc TEXT, md TEXT,
                         ds TEXT[], dps TEXT[], lock_key TEXT) RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(lock_key));
    INSERT INTO objects (volume, path, parent, size, etag, content_type, modified_ms, cache_control, metadata)
    VALUES (v, p, par, sz, e, ct, m, cc, md)
    ON CONFLICT (volume, path) DO UPDATE SET size = EXCLUDED.size, etag = EXCLUDED.etag,
        content_type = EXCLUDED.content_type, modified_ms = EXCLUDED.modified_ms,
        cache_control = EXCLUDED.cache_control, metadata = EXCLUDED.metadata;
    IF cardinality(ds) > 0 THEN
        INSERT INTO dirs (volume, path, parent) SELECT v, d, q FROM UNNEST(ds, dps) AS t(d, q)
        ON CONFLICT DO NOTHING;
    END IF;
    PERFORM pg_notify('silo_cache', v || chr(10) || p);
END $$;
-- `ds`: the file's directories, deepest first; each is pruned while no
-- file is left under it ('/' + 1 is '0', so `d/` <= path < `d0` is "under").
CREATE FUNCTION silo_remove(v TEXT, p TEXT, version TEXT, ds TEXT[], lock_key TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    removed INTEGER;
    d TEXT;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(lock_key));
    DELETE FROM objects WHERE volume = v AND path = p AND (version IS NULL OR etag = version);
    GET DIAGNOSTICS removed = ROW_COUNT;
    IF removed = 0 THEN
        RETURN FALSE;
    END IF;
    FOREACH d IN ARRAY ds LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM objects WHERE volume = v AND path >= d || '/' AND path < d || '0');
        DELETE FROM dirs WHERE volume = v AND path = d;
    END LOOP;
    PERFORM pg_notify('silo_cache', v || chr(10) || p);
    RETURN TRUE;
END $$;
"#;

/// Version 2: a write takes shared locks on its directories, so writes in
/// one directory no longer queue behind each other (version 1 took one
/// exclusive lock per top-level directory: every upload under `uploads/`,
/// on every node, waited its turn). A removal, which may prune
/// directories, takes them exclusively. Both lock top-down, so they never
/// deadlock.
const SCHEMA_V2: &str = r#"
DROP FUNCTION silo_put(TEXT, TEXT, TEXT, BIGINT, TEXT, TEXT, BIGINT, TEXT, TEXT, TEXT[], TEXT[], TEXT);
DROP FUNCTION silo_remove(TEXT, TEXT, TEXT, TEXT[], TEXT);
-- `ds`: the file's directories, outermost first; `dps`: their parents.
CREATE FUNCTION silo_put(v TEXT, p TEXT, par TEXT, sz BIGINT, e TEXT, ct TEXT, m BIGINT, cc TEXT, md TEXT,
                         ds TEXT[], dps TEXT[]) RETURNS VOID LANGUAGE plpgsql AS $$
DECLARE
    dir TEXT;
BEGIN
    FOREACH dir IN ARRAY ds LOOP
        PERFORM pg_advisory_xact_lock_shared(hashtext('silo-dir:' || v || ':' || dir));
    END LOOP;
    INSERT INTO objects (volume, path, parent, size, etag, content_type, modified_ms, cache_control, metadata)
    VALUES (v, p, par, sz, e, ct, m, cc, md)
    ON CONFLICT (volume, path) DO UPDATE SET size = EXCLUDED.size, etag = EXCLUDED.etag,
        content_type = EXCLUDED.content_type, modified_ms = EXCLUDED.modified_ms,
        cache_control = EXCLUDED.cache_control, metadata = EXCLUDED.metadata;
    IF cardinality(ds) > 0 THEN
        INSERT INTO dirs (volume, path, parent) SELECT v, d, q FROM UNNEST(ds, dps) AS t(d, q)
        ON CONFLICT DO NOTHING;
    END IF;
    PERFORM pg_notify('silo_cache', v || chr(10) || p);
END $$;
-- `ds`: the file's directories, deepest first; each is pruned while no
-- file is left under it ('/' + 1 is '0', so `d/` <= path < `d0` is "under").
CREATE FUNCTION silo_remove(v TEXT, p TEXT, version TEXT, ds TEXT[]) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    removed INTEGER;
    d TEXT;
BEGIN
    FOR i IN REVERSE cardinality(ds)..1 LOOP
        PERFORM pg_advisory_xact_lock(hashtext('silo-dir:' || v || ':' || ds[i]));
    END LOOP;
    DELETE FROM objects WHERE volume = v AND path = p AND (version IS NULL OR etag = version);
    GET DIAGNOSTICS removed = ROW_COUNT;
    IF removed = 0 THEN
        RETURN FALSE;
    END IF;
    FOREACH d IN ARRAY ds LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM objects WHERE volume = v AND path >= d || '/' AND path < d || '0');
        DELETE FROM dirs WHERE volume = v AND path = d;
    END LOOP;
    PERFORM pg_notify('silo_cache', v || chr(10) || p);
    RETURN TRUE;
END $$;
"#;

/// Version 3: the open multipart uploads of the S3 endpoint and their
/// parts, so that any node may take an upload's parts and its completion.
const SCHEMA_V3: &str = r#"
CREATE TABLE multipart_uploads (
    id TEXT NOT NULL PRIMARY KEY,
    volume TEXT NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    principal TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    settings TEXT NOT NULL
);
CREATE INDEX multipart_by_principal ON multipart_uploads (principal);
CREATE INDEX multipart_by_key ON multipart_uploads (volume, key, id);
CREATE TABLE multipart_parts (
    upload TEXT NOT NULL,
    number INTEGER NOT NULL,
    etag TEXT NOT NULL,
    size BIGINT NOT NULL,
    modified_ms BIGINT NOT NULL,
    blob TEXT NOT NULL,
    PRIMARY KEY (upload, number)
);
"#;

/// Version 4: the audit trail (`crate::audit`), oldest first by id.
const SCHEMA_V4: &str = r#"
CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    time_ms BIGINT NOT NULL,
    node TEXT NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    volume TEXT NOT NULL,
    path TEXT COLLATE "C" NOT NULL,
    size BIGINT,
    etag TEXT,
    sha256 TEXT,
    plugin TEXT,
    reason TEXT,
    request_id TEXT NOT NULL
);
CREATE INDEX audit_by_path ON audit (volume, path, id);
-- Changes about to be made to a backend, ended with their row.
CREATE TABLE intents (
    id BIGSERIAL PRIMARY KEY,
    node TEXT NOT NULL,
    volume TEXT NOT NULL,
    path TEXT NOT NULL,
    principal TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX intents_by_node ON intents (node);
"#;

/// Version 5: completed multipart uploads, for a completion repeated (its
/// answer lost).
const SCHEMA_V5: &str = r#"
CREATE TABLE multipart_completed (
    id TEXT PRIMARY KEY,
    volume TEXT NOT NULL,
    key TEXT NOT NULL,
    etag TEXT NOT NULL,
    size BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    completed_ms BIGINT NOT NULL
);
CREATE INDEX multipart_completed_by_time ON multipart_completed (completed_ms);
"#;

/// Version 6: the checksum a part's client sent; a volume's settings
/// changed by its clients (bucket CORS);
/// a row removed only while it is one version, by ETag and, where given,
/// time (two writes of the same bytes share an ETag).
const SCHEMA_V6: &str = r#"
ALTER TABLE multipart_parts ADD COLUMN checksum TEXT;
CREATE TABLE volume_settings (
    volume TEXT NOT NULL,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (volume, name)
);
CREATE FUNCTION silo_remove_version(v TEXT, p TEXT, version TEXT, version_ms BIGINT, ds TEXT[]) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    removed INTEGER;
    d TEXT;
BEGIN
    FOR i IN REVERSE cardinality(ds)..1 LOOP
        PERFORM pg_advisory_xact_lock(hashtext('silo-dir:' || v || ':' || ds[i]));
    END LOOP;
    DELETE FROM objects WHERE volume = v AND path = p
        AND (version IS NULL OR (etag = version AND (version_ms IS NULL OR modified_ms = version_ms)));
    GET DIAGNOSTICS removed = ROW_COUNT;
    IF removed = 0 THEN
        RETURN FALSE;
    END IF;
    FOREACH d IN ARRAY ds LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM objects WHERE volume = v AND path >= d || '/' AND path < d || '0');
        DELETE FROM dirs WHERE volume = v AND path = d;
    END LOOP;
    PERFORM pg_notify('silo_cache', v || chr(10) || p);
    RETURN TRUE;
END $$;
"#;

/// The schema's history: entry `i` takes a database from version `i` to
/// `i + 1`. Every node of a site runs the same version: stop the old ones
/// before starting a newer Silo on their database.
pub const MIGRATIONS: &[&str] = &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6];

/// `call` with what goes in the same statement (so the same transaction):
/// the audit record's insert and the intent's end, as data-modifying CTEs
/// whose parameters are numbered from `$first` (the record's, then the
/// intent's id).
fn with_change(call: &str, first: usize, change: &Change) -> String {
    let mut ctes = Vec::new();
    let mut next = first;
    if change.audit.is_some() {
        ctes.push(format!("a AS ({})", audit_insert(next)));
        next += 12;
    }
    if change.intent.is_some() {
        ctes.push(format!("i AS (DELETE FROM intents WHERE id = ${next})"));
    }
    if ctes.is_empty() {
        call.to_owned()
    } else {
        format!("WITH {} {call}", ctes.join(", "))
    }
}

/// Run `call` with its `params`, and `change` in the same statement (see
/// [`with_change`]).
async fn execute_with_change(
    client: &deadpool_postgres::Object,
    call: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    change: &Change,
) -> StorageResult<()> {
    let sql = with_change(call, params.len() + 1, change);
    let statement = client.prepare_cached(&sql).await.map_err(db_error)?;
    let audit = change.audit.as_ref().map(AuditParams::new);
    let mut all = params.to_vec();
    if let Some(audit) = &audit {
        all.extend(audit.values());
    }
    if let Some(intent) = &change.intent {
        all.push(intent);
    }
    client.execute(&statement, &all).await.map_err(db_error)?;
    Ok(())
}

/// An audit record as statement parameters, in [`AUDIT_INSERT`]'s order.
struct AuditParams<'a> {
    time: i64,
    action: &'static str,
    size: Option<i64>,
    r: &'a Record,
}

/// The insert of one audit record, its parameters numbered from `$first`.
fn audit_insert(first: usize) -> String {
    let values: Vec<String> = (first..first + 12).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO audit (time_ms, node, principal, action, volume, path, size, etag, sha256, plugin, reason,
             request_id) VALUES ({})",
        values.join(", ")
    )
}

impl<'a> AuditParams<'a> {
    fn new(r: &'a Record) -> Self {
        AuditParams {
            time: r.time_ms as i64,
            action: r.action.as_str(),
            size: r.size.map(|n| n as i64),
            r,
        }
    }

    fn values(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 12] {
        [
            &self.time,
            &self.r.node,
            &self.r.principal,
            &self.action,
            &self.r.volume,
            &self.r.path,
            &self.size,
            &self.r.etag,
            &self.r.sha256,
            &self.r.plugin,
            &self.r.reason,
            &self.r.request_id,
        ]
    }
}

fn audit_from_row(row: &tokio_postgres::Row) -> StorageResult<Record> {
    let action: String = row.get(4);
    let id: i64 = row.get(0);
    Ok(Record {
        id,
        time_ms: row.get::<_, i64>(1) as u64,
        node: row.get(2),
        principal: row.get(3),
        action: Action::parse(&action)
            .ok_or_else(|| StorageError::unavailable(format!("audit record {id}: unknown action '{action}'")))?,
        volume: row.get(5),
        path: row.get(6),
        size: row.get::<_, Option<i64>>(7).map(|n| n as u64),
        etag: row.get(8),
        sha256: row.get(9),
        plugin: row.get(10),
        reason: row.get(11),
        request_id: row.get(12),
    })
}

/// Settings of the engine.
#[derive(Clone)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/database` (never logged).
    pub url: String,
    /// Connections in the pool.
    pub pool_size: usize,
}

/// The database by host, port and name, never the URL that holds the password.
impl std::fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parsed = split_tls(&self.url)
            .ok()
            .and_then(|(url, _, _)| url.parse::<tokio_postgres::Config>().ok());
        let database = match parsed {
            Some(config) => describe(&config),
            None => "(not a PostgreSQL URL)".to_owned(),
        };
        f.debug_struct("PostgresSettings")
            .field("database", &database)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

pub struct PostgresEngine {
    pool: Pool,
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    describe: String,
    /// Where other nodes' requests go, once something answers them.
    requests: Arc<std::sync::RwLock<Option<RequestSink>>>,
}

type RequestSink = Arc<dyn Fn(&str) + Send + Sync>;

/// libpq's `sslmode`: how (and whether) the connection is encrypted and
/// the server's certificate checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    /// TLS if the server offers it, unverified (libpq's default).
    Prefer,
    /// TLS or nothing; the certificate checked against `sslrootcert` if
    /// one is given, as libpq does.
    Require,
    /// TLS, the certificate chain checked against `sslrootcert`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

/// The URL without libpq's TLS parameters (tokio-postgres reads only part
/// of them), and those parameters.
fn split_tls(url: &str) -> Result<(String, SslMode, Option<PathBuf>), StorageError> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let mut mode = SslMode::Prefer;
    let mut root = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => {
                mode = match value {
                    "disable" => SslMode::Disable,
                    "allow" | "prefer" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(StorageError::Unsupported(format!(
                            "sslmode={other}: use disable, prefer, require, verify-ca or verify-full"
                        )));
                    }
                }
            }
            "sslrootcert" => {
                root = Some(PathBuf::from(
                    percent_encoding::percent_decode_str(value).decode_utf8_lossy().as_ref(),
                ))
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, mode, root))
}

/// The TLS connector for `mode`, with the CA certificates of `root`.
fn tls_connector(mode: SslMode, root: Option<&std::path::Path>) -> StorageResult<MakeRustlsConnect> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = match root {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| StorageError::unavailable(format!("sslrootcert {}: {e}", path.display())))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(StorageError::unavailable(format!(
                    "sslrootcert {} holds no CA certificate",
                    path.display()
                )));
            }
            Some(Arc::new(roots))
        }
        None if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) => {
            return Err(StorageError::Unsupported(
                "sslmode=verify-ca and verify-full need sslrootcert=PATH (the CA certificates, PEM) in the URL".into(),
            ));
        }
        None => None,
    };
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match roots {
        None => Arc::new(Unverified(provider.clone())),
        Some(roots) => {
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| StorageError::unavailable(format!("sslrootcert: {e}")))?;
            match mode {
                SslMode::VerifyFull => webpki,
                _ => Arc::new(ChainOnly(webpki)),
            }
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StorageError::unavailable(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `prefer` and `require` without `sslrootcert`: encrypted, the server
/// not authenticated (as libpq; the signatures of the handshake are still
/// checked).
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain to a trusted CA, whatever host it names.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        // The name is checked after the chain: a wrong name means a good chain.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn db_error(e: tokio_postgres::Error) -> StorageError {
    // The server's own message where there is one (it names the problem).
    match e.as_db_error() {
        Some(db) => StorageError::unavailable(format!("metadata database: {}", db.message())),
        None => {
            // With its causes: "error performing TLS handshake" alone does
            // not say what was wrong with the certificate.
            let mut message = format!("metadata database: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            StorageError::unavailable(message)
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StorageError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_error(e),
        other => StorageError::unavailable(format!("metadata database: {other}")),
    }
}

impl PostgresEngine {
    /// Connect, then create or migrate the schema. Refused when the
    /// database holds a newer schema than this Silo knows.
    pub async fn connect(settings: &PostgresSettings) -> StorageResult<Self> {
        let (url, mode, root) = split_tls(&settings.url)?;
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            StorageError::unavailable(format!("the metadata database URL is not a PostgreSQL URL: {e}"))
        })?;
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        // A server that takes the connection and never answers must not
        // hold a connect (the change listener's above all) forever.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let tls = tls_connector(mode, root.as_deref())?;
        let describe = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .wait_timeout(Some(Duration::from_secs(30)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StorageError::unavailable(format!("metadata database pool: {e}")))?;
        let engine = PostgresEngine {
            pool,
            config,
            tls,
            describe,
            requests: Arc::default(),
        };
        engine.migrate().await?;
        Ok(engine)
    }

    async fn client(&self) -> StorageResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn migrate(&self) -> StorageResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // One node migrates at a time.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext('silo-schema'))", &[])
            .await
            .map_err(db_error)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS silo_schema (version INTEGER NOT NULL)")
            .await
            .map_err(db_error)?;
        let current: Option<i32> = tx
            .query_opt("SELECT max(version) FROM silo_schema", &[])
            .await
            .map_err(db_error)?
            .and_then(|r| r.get(0));
        match current {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StorageError::Unsupported(format!(
                    "the metadata database {} has schema version {v}, newer than this Silo's {SCHEMA_VERSION}; upgrade Silo (or point it at another database)",
                    self.describe
                )));
            }
            current => {
                let from = current.unwrap_or(0).max(0) as usize;
                for migration in &MIGRATIONS[from..] {
                    tx.batch_execute(migration).await.map_err(db_error)?;
                }
                if from < MIGRATIONS.len() {
                    tx.execute("INSERT INTO silo_schema (version) VALUES ($1)", &[&SCHEMA_VERSION])
                        .await
                        .map_err(db_error)?;
                }
            }
        }
        tx.commit().await.map_err(db_error)
    }

    /// Watch the announcements of changes from other nodes on a dedicated
    /// connection, dropping the rows from `front`; see `Listener`.
    pub fn listen(&self, front: Arc<dyn FrontSink>) {
        tokio::spawn(
            Listener {
                config: self.config.clone(),
                tls: self.tls.clone(),
                front,
                requests: self.requests.clone(),
            }
            .run(),
        );
    }
}

/// Where the database is, without the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("postgres://{host}:{port}/{}", config.get_dbname().unwrap_or(""))
}

/// The announcement of a change to one row (`volume`, a newline, `path`;
/// neither may hold control characters) or to a whole volume (`volume`, a
/// newline, `*`: a refresh swapped it).
fn announcement(volume: &str, path: Option<&str>) -> String {
    format!("{volume}\n{}", path.unwrap_or("*"))
}

/// Keeps one connection listening for changes and tells the front cache.
/// While it is not connected the front cache holds nothing (a lost
/// connection may have lost announcements): it is cleared when the
/// connection ends and kept empty until a new one listens.
struct Listener {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    front: Arc<dyn FrontSink>,
    requests: Arc<std::sync::RwLock<Option<RequestSink>>>,
}

impl Listener {
    async fn run(self) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.config.connect(self.tls.clone()).await {
                Ok((client, mut connection)) => {
                    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    let listen = format!("LISTEN {CHANNEL}; LISTEN {REQUESTS}");
                    if self.drive(&mut messages, client.batch_execute(&listen)).await == Some(true) {
                        delay = Duration::from_millis(100);
                        self.front.listening(true);
                        // Announcements until the connection fails, or a
                        // heartbeat goes unanswered: a connection that died
                        // without a word (a lost peer) says nothing.
                        let mut beat = tokio::time::interval(LISTENER_HEARTBEAT);
                        beat.tick().await;
                        loop {
                            use futures_util::StreamExt;
                            tokio::select! {
                                message = messages.next() => match message {
                                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => self.apply(n.channel(), n.payload()),
                                    Some(Ok(_)) => {}
                                    Some(Err(_)) | None => break,
                                },
                                _ = beat.tick() => {
                                    let ping = tokio::time::timeout(
                                        LISTENER_HEARTBEAT,
                                        self.drive(&mut messages, client.simple_query("")),
                                    );
                                    if ping.await != Ok(Some(true)) {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    drop(client);
                    self.front.listening(false);
                    tracing::warn!(
                        "lost the metadata database's change announcements; the front cache is off until they are back"
                    );
                }
                Err(e) => tracing::warn!("cannot listen for metadata changes: {e}"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Await `request` while polling the connection it needs (applying
    /// announcements meanwhile): whether it succeeded, `None` if the
    /// connection failed first.
    async fn drive<T, E>(
        &self,
        messages: &mut (
                 impl futures_util::Stream<Item = Result<tokio_postgres::AsyncMessage, tokio_postgres::Error>> + Unpin
             ),
        request: impl std::future::Future<Output = Result<T, E>>,
    ) -> Option<bool> {
        use futures_util::StreamExt;
        let mut request = std::pin::pin!(request);
        loop {
            tokio::select! {
                done = &mut request => return Some(done.is_ok()),
                message = messages.next() => match message {
                    Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => self.apply(n.channel(), n.payload()),
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return None,
                },
            }
        }
    }

    fn apply(&self, channel: &str, payload: &str) {
        if channel == REQUESTS {
            let sink = self.requests.read().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(sink) = sink {
                sink(payload);
            }
            return;
        }
        match payload.split_once('\n') {
            Some((volume, "*")) => self.front.forget_volume(volume),
            Some((volume, path)) => self.front.forget(volume, path),
            None => self.front.forget_all(),
        }
    }
}

/// Listed file rows: the path, then the metadata.
fn file_entries(rows: &[tokio_postgres::Row]) -> StorageResult<Vec<Entry>> {
    rows.iter()
        .map(|r| {
            Ok(Entry::File {
                path: r.get(0),
                meta: row_meta(r, 1)?,
            })
        })
        .collect()
}

fn row_meta(row: &tokio_postgres::Row, first: usize) -> StorageResult<ObjectMeta> {
    let metadata: String = row.get(first + 5);
    let (metadata, headers) = metadata_from_json(&metadata)?;
    Ok(ObjectMeta {
        size: row.get::<_, i64>(first) as u64,
        etag: row.get(first + 1),
        content_type: row.get(first + 2),
        modified_ms: row.get::<_, i64>(first + 3) as u64,
        cache_control: row.get(first + 4),
        metadata,
        headers,
    })
}

async fn notify(tx: &deadpool_postgres::Transaction<'_>, volume: &str, path: Option<&str>) -> StorageResult<()> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &announcement(volume, path)])
        .await
        .map_err(db_error)?;
    Ok(())
}

async fn lock(tx: &deadpool_postgres::Transaction<'_>, key: &str) -> StorageResult<()> {
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&key])
        .await
        .map_err(db_error)?;
    Ok(())
}

async fn refresh_clear(tx: &deadpool_postgres::Transaction<'_>, volume: &str) -> StorageResult<()> {
    for sql in [
        "DELETE FROM refresh_runs WHERE volume = $1",
        "DELETE FROM refresh_parts WHERE volume = $1",
        "DELETE FROM refresh_found WHERE volume = $1",
    ] {
        tx.execute(sql, &[&volume]).await.map_err(db_error)?;
    }
    Ok(())
}

/// Record objects a refresh found, in batches.
async fn insert_found(
    tx: &deadpool_postgres::Transaction<'_>,
    volume: &str,
    rows: &[(String, ObjectMeta)],
) -> StorageResult<()> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO refresh_found (volume, key, size, etag, content_type, modified_ms, cache_control, metadata)
             SELECT $1, k, s, e, t, m, c, d FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[],
                 $6::bigint[], $7::text[], $8::text[]) AS r(k, s, e, t, m, c, d)
             ON CONFLICT (volume, key) DO UPDATE SET size = EXCLUDED.size, etag = EXCLUDED.etag,
                 content_type = EXCLUDED.content_type, modified_ms = EXCLUDED.modified_ms,
                 cache_control = EXCLUDED.cache_control, metadata = EXCLUDED.metadata",
        )
        .await
        .map_err(db_error)?;
    for chunk in rows.chunks(BATCH) {
        let keys: Vec<&str> = chunk.iter().map(|(k, _)| k.as_str()).collect();
        let sizes: Vec<i64> = chunk.iter().map(|(_, m)| m.size as i64).collect();
        let etags: Vec<&str> = chunk.iter().map(|(_, m)| m.etag.as_str()).collect();
        let types: Vec<&str> = chunk.iter().map(|(_, m)| m.content_type.as_str()).collect();
        let times: Vec<i64> = chunk.iter().map(|(_, m)| m.modified_ms as i64).collect();
        let controls: Vec<Option<&str>> = chunk.iter().map(|(_, m)| m.cache_control.as_deref()).collect();
        let metadata: Vec<String> = chunk.iter().map(|(_, m)| metadata_json(m)).collect();
        tx.execute(
            &statement,
            &[&volume, &keys, &sizes, &etags, &types, &times, &controls, &metadata],
        )
        .await
        .map_err(db_error)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MetadataEngine for PostgresEngine {
    fn describe(&self) -> String {
        format!("PostgreSQL {}", self.describe)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn ask_nodes(&self, request: &str) -> StorageResult<()> {
        let client = self.client().await?;
        client
            .execute("SELECT pg_notify($1, $2)", &[&REQUESTS, &request])
            .await
            .map_err(db_error)?;
        Ok(())
    }

    fn answer_nodes(&self, sink: Arc<dyn Fn(&str) + Send + Sync>) {
        *self.requests.write().unwrap_or_else(|p| p.into_inner()) = Some(sink);
    }

    fn watch(&self, front: Arc<dyn FrontSink>) {
        self.listen(front);
    }

    async fn get(&self, volume: &str, path: &str) -> StorageResult<Option<ObjectMeta>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT size, etag, content_type, modified_ms, cache_control, metadata
                 FROM objects WHERE volume = $1 AND path = $2",
            )
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(&statement, &[&volume, &path])
            .await
            .map_err(db_error)?;
        row.map(|r| row_meta(&r, 0)).transpose()
    }

    async fn put(&self, volume: &str, path: &VolumePath, meta: &ObjectMeta, change: &Change) -> StorageResult<()> {
        let client = self.client().await?;
        let dirs: Vec<&str> = path.ancestors().collect();
        let parents: Vec<&str> = dirs.iter().map(|d| parent_of(d)).collect();
        let (size, modified, metadata) = (meta.size as i64, meta.modified_ms as i64, metadata_json(meta));
        let (path, parent) = (path.as_str(), path.parent());
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 11] = [
            &volume,
            &path,
            &parent,
            &size,
            &meta.etag,
            &meta.content_type,
            &modified,
            &meta.cache_control,
            &metadata,
            &dirs,
            &parents,
        ];
        execute_with_change(
            &client,
            "SELECT silo_put($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &params,
            change,
        )
        .await
    }

    async fn remove(
        &self,
        volume: &str,
        path: &VolumePath,
        version: Option<Version<'_>>,
        change: &Change,
    ) -> StorageResult<()> {
        let client = self.client().await?;
        let deepest_first: Vec<&str> = path.ancestors().collect::<Vec<_>>().into_iter().rev().collect();
        let path = path.as_str();
        let etag = version.map(|v| v.etag);
        let modified_ms = version.and_then(|v| v.modified_ms).map(|ms| ms as i64);
        execute_with_change(
            &client,
            "SELECT silo_remove_version($1, $2, $3, $4, $5)",
            &[&volume, &path, &etag, &modified_ms, &deepest_first],
            change,
        )
        .await
    }

    async fn intent_begin(&self, i: &Intent) -> StorageResult<i64> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO intents (node, volume, path, principal, request_id, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .await
            .map_err(db_error)?;
        let row = client
            .query_one(
                &statement,
                &[
                    &i.node,
                    &i.volume,
                    &i.path,
                    &i.principal,
                    &i.request_id,
                    &(i.created_ms as i64),
                ],
            )
            .await
            .map_err(db_error)?;
        Ok(row.get(0))
    }

    async fn intent_end(&self, id: i64) -> StorageResult<()> {
        let client = self.client().await?;
        client
            .execute("DELETE FROM intents WHERE id = $1", &[&id])
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn intents(&self, node: Option<&str>, before_ms: u64) -> StorageResult<Vec<Intent>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, node, volume, path, principal, request_id, created_ms FROM intents
                 WHERE ($1::text IS NOT NULL AND node = $1) OR ($1::text IS NULL AND created_ms < $2) ORDER BY id",
                &[&node, &(before_ms.min(i64::MAX as u64) as i64)],
            )
            .await
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| Intent {
                id: r.get(0),
                node: r.get(1),
                volume: r.get(2),
                path: r.get(3),
                principal: r.get(4),
                request_id: r.get(5),
                created_ms: r.get::<_, i64>(6) as u64,
            })
            .collect())
    }

    async fn audit_add(&self, record: &Record) -> StorageResult<()> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&audit_insert(1)).await.map_err(db_error)?;
        client
            .execute(&statement, &AuditParams::new(record).values())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn audit_query(&self, f: &Filter, after: Option<i64>, limit: usize) -> StorageResult<Vec<Record>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT id, time_ms, node, principal, action, volume, path, size, etag, sha256, plugin, reason,
                     request_id FROM audit
                 WHERE id > $1 AND ($2::text IS NULL OR volume = $2) AND ($3::text IS NULL OR path >= $3)
                     AND ($4::text IS NULL OR path < $4) AND ($5::text IS NULL OR principal = $5)
                     AND ($6::text IS NULL OR request_id = $6) AND ($7::bigint IS NULL OR time_ms >= $7)
                     AND ($8::bigint IS NULL OR time_ms < $8)
                 ORDER BY id LIMIT $9",
            )
            .await
            .map_err(db_error)?;
        let prefix = f.prefix.as_deref().filter(|p| !p.is_empty());
        let upper = prefix.and_then(prefix_upper_bound);
        let rows = client
            .query(
                &statement,
                &[
                    &after.unwrap_or(0),
                    &f.volume,
                    &prefix,
                    &upper,
                    &f.principal,
                    &f.request_id,
                    &f.since_ms.map(|t| t as i64),
                    &f.until_ms.map(|t| t as i64),
                    &(limit as i64),
                ],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_prune(&self, before_ms: u64, batch: usize) -> StorageResult<Option<u64>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // One node prunes at a time; the others find the lock taken.
        let mine: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock(hashtext('silo-audit-prune'))", &[])
            .await
            .map_err(db_error)?
            .get(0);
        if !mine {
            return Ok(None);
        }
        let deleted = tx
            .execute(
                "DELETE FROM audit WHERE id IN
                     (SELECT id FROM (SELECT id, time_ms FROM audit ORDER BY id LIMIT $2) AS oldest WHERE time_ms < $1)",
                &[&(before_ms as i64), &(batch as i64)],
            )
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(deleted))
    }

    async fn audit_writer(&self, volume: &str, path: &str, etag: &str) -> StorageResult<Option<String>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT request_id FROM audit WHERE volume = $1 AND path = $2 AND etag = $3
                     AND action IN ('put', 'copy', 'derived') ORDER BY id DESC LIMIT 1",
            )
            .await
            .map_err(db_error)?;
        let row = client
            .query_opt(&statement, &[&volume, &path, &etag])
            .await
            .map_err(db_error)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn list_dir(&self, volume: &str, dir: &str, cursor: Option<&str>, limit: usize) -> StorageResult<Page> {
        let (after_path, after_kind) = decode_cursor(cursor)?;
        let client = self.client().await?;
        let (files, dirs) = (
            client
                .prepare_cached(
                    "SELECT path, size, etag, content_type, modified_ms, cache_control, metadata
                     FROM objects WHERE volume = $1 AND parent = $2 AND path >= $3 AND (path > $3 OR $4::bigint < 0)
                     ORDER BY path LIMIT $5",
                )
                .await
                .map_err(db_error)?,
            client
                .prepare_cached(
                    "SELECT path FROM dirs WHERE volume = $1 AND parent = $2 AND path >= $3 AND (path > $3 OR $4::bigint < 1)
                     ORDER BY path LIMIT $5",
                )
                .await
                .map_err(db_error)?,
        );
        let page = limit as i64 + 1;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [&volume, &dir, &after_path, &after_kind, &page];
        // Both go out at once on the connection: one round trip.
        let (files, dirs) =
            tokio::try_join!(client.query(&files, &params), client.query(&dirs, &params)).map_err(db_error)?;
        let files = file_entries(&files)?;
        let dirs: Vec<Entry> = dirs.iter().map(|r| Entry::Dir { path: r.get(0) }).collect();
        Ok(super::merge_dir_page(files, dirs, limit))
    }

    async fn list_prefix(&self, volume: &str, prefix: &str, cursor: Option<&str>, limit: usize) -> StorageResult<Page> {
        let (after_path, _) = decode_cursor(cursor)?;
        let upper = prefix_upper_bound(prefix);
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT path, size, etag, content_type, modified_ms, cache_control, metadata
                 FROM objects WHERE volume = $1 AND path >= $2 AND ($3::text IS NULL OR path < $3) AND path > $4
                 ORDER BY path LIMIT $5",
            )
            .await
            .map_err(db_error)?;
        let rows = client
            .query(
                &statement,
                &[&volume, &prefix, &upper, &after_path, &(limit as i64 + 1)],
            )
            .await
            .map_err(db_error)?;
        let entries = file_entries(&rows)?;
        Ok(paginate(entries, limit))
    }

    async fn refresh_begin(
        &self,
        volume: &str,
        backend: &str,
        owner: &str,
        now_ms: u64,
        windows: (u64, u64),
    ) -> StorageResult<Option<RefreshProgress>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        lock(&tx, &format!("silo-refresh:{volume}")).await?;
        let run = tx
            .query_opt(
                "SELECT backend, started_ms, heartbeat_ms FROM refresh_runs WHERE volume = $1",
                &[&volume],
            )
            .await
            .map_err(db_error)?
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1), r.get::<_, i64>(2)));
        let resumable = super::may_refresh(volume, run, backend, now_ms, windows)?;
        let progress = if resumable {
            refresh_progress(&tx, volume).await?
        } else {
            None
        };
        match &progress {
            Some(_) => tx
                .execute(
                    "UPDATE refresh_runs SET owner = $2, heartbeat_ms = $3 WHERE volume = $1",
                    &[&volume, &owner, &(now_ms as i64)],
                )
                .await
                .map_err(db_error)?,
            None => {
                refresh_clear(&tx, volume).await?;
                tx.execute(
                    "INSERT INTO refresh_runs (volume, backend, started_ms, owner, heartbeat_ms) VALUES ($1, $2, $3, $4, $3)",
                    &[&volume, &backend, &(now_ms as i64), &owner],
                )
                .await
                .map_err(db_error)?
            }
        };
        tx.commit().await.map_err(db_error)?;
        Ok(progress)
    }

    async fn refresh_beat(&self, volume: &str, owner: &str, now_ms: u64) -> StorageResult<()> {
        self.client()
            .await?
            .execute(
                "UPDATE refresh_runs SET heartbeat_ms = $3 WHERE volume = $1 AND owner = $2",
                &[&volume, &owner, &(now_ms as i64)],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn refresh_record(
        &self,
        volume: &str,
        part: RefreshPart<'_>,
        found: &[(String, ObjectMeta)],
    ) -> StorageResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        insert_found(&tx, volume, found).await?;
        let (kind, prefix, state) = part.encode();
        tx.execute(
            "INSERT INTO refresh_parts (volume, kind, prefix, state) VALUES ($1, $2, $3, $4)
             ON CONFLICT (volume, kind, prefix) DO UPDATE SET state = EXCLUDED.state",
            &[&volume, &kind, &prefix, &state],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    async fn refresh_found(&self, volume: &str) -> StorageResult<Vec<(String, ObjectMeta)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT key, size, etag, content_type, modified_ms, cache_control, metadata
                 FROM refresh_found WHERE volume = $1 ORDER BY key",
                &[&volume],
            )
            .await
            .map_err(db_error)?;
        rows.iter().map(|r| Ok((r.get(0), row_meta(r, 1)?))).collect()
    }

    async fn finish_refresh(&self, volume: &str, owner: &str) -> StorageResult<RefreshCounts> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        lock(&tx, &format!("silo-refresh:{volume}")).await?;
        let current: Option<String> = tx
            .query_opt("SELECT owner FROM refresh_runs WHERE volume = $1", &[&volume])
            .await
            .map_err(db_error)?
            .map(|r| r.get(0));
        if current.as_deref() != Some(owner) {
            return Err(super::taken_over(volume));
        }
        let mut counts = RefreshCounts::default();
        {
            use futures_util::{StreamExt, TryStreamExt};
            let keys = tx
                .query_raw(
                    "SELECT key FROM refresh_found WHERE volume = $1 ORDER BY key",
                    [&volume as &(dyn tokio_postgres::types::ToSql + Sync)],
                )
                .await
                .map_err(db_error)?;
            let mut keys = std::pin::pin!(keys.map_err(db_error));
            while let Some(row) = keys.next().await {
                let key: String = row?.get(0);
                if VolumePath::parse(&key).is_err() {
                    counts.skipped.push(key);
                }
            }
        }
        if !counts.skipped.is_empty() {
            tx.execute(
                "DELETE FROM refresh_found WHERE volume = $1 AND key = ANY($2::text[])",
                &[&volume, &counts.skipped],
            )
            .await
            .map_err(db_error)?;
        }
        let row = tx
            .query_one(
                "SELECT
                     (SELECT COUNT(*) FROM refresh_found WHERE volume = $1),
                     (SELECT COALESCE(SUM(size), 0)::bigint FROM refresh_found WHERE volume = $1),
                     (SELECT COUNT(*) FROM refresh_found f WHERE f.volume = $1
                          AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.volume = $1 AND o.path = f.key)),
                     (SELECT COUNT(*) FROM refresh_found f JOIN objects o ON o.volume = f.volume AND o.path = f.key
                          WHERE f.volume = $1 AND o.etag <> f.etag),
                     (SELECT COUNT(*) FROM objects o WHERE o.volume = $1
                          AND NOT EXISTS (SELECT 1 FROM refresh_found f WHERE f.volume = $1 AND f.key = o.path))",
                &[&volume],
            )
            .await
            .map_err(db_error)?;
        let n = |i: usize| row.get::<_, i64>(i) as u64;
        (counts.files, counts.bytes, counts.added, counts.changed, counts.removed) = (n(0), n(1), n(2), n(3), n(4));
        // Writes into the volume wait for the swap.
        tx.execute("LOCK TABLE objects, dirs IN SHARE ROW EXCLUSIVE MODE", &[])
            .await
            .map_err(db_error)?;
        for sql in [
            // What a listing cannot carry comes from the unchanged old row.
            "UPDATE refresh_found f SET content_type = o.content_type,
                 cache_control = COALESCE(f.cache_control, o.cache_control),
                 metadata = CASE WHEN f.metadata = '[]' THEN o.metadata ELSE f.metadata END
             FROM objects o
             WHERE f.volume = $1 AND o.volume = $1 AND o.path = f.key AND o.etag = f.etag",
            "DELETE FROM objects WHERE volume = $1",
            "DELETE FROM dirs WHERE volume = $1",
            "INSERT INTO objects (volume, path, parent, size, etag, content_type, modified_ms, cache_control, metadata)
             SELECT volume, key, CASE WHEN strpos(key, '/') > 0 THEN regexp_replace(key, '/[^/]*$', '') ELSE '' END,
                 size, etag, content_type, modified_ms, cache_control, metadata
             FROM refresh_found WHERE volume = $1",
            "WITH RECURSIVE d(path) AS (
                 SELECT DISTINCT parent FROM objects WHERE volume = $1 AND parent <> ''
                 UNION
                 SELECT regexp_replace(path, '/[^/]*$', '') COLLATE \"C\" FROM d WHERE strpos(path, '/') > 0
             )
             INSERT INTO dirs (volume, path, parent)
             SELECT $1, path, CASE WHEN strpos(path, '/') > 0 THEN regexp_replace(path, '/[^/]*$', '') ELSE '' END FROM d",
        ] {
            tx.execute(sql, &[&volume]).await.map_err(db_error)?;
        }
        refresh_clear(&tx, volume).await?;
        notify(&tx, volume, None).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(counts)
    }

    async fn stats(&self) -> StorageResult<Vec<VolumeStats>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT volume, SUM(files)::bigint, SUM(bytes)::bigint, SUM(dirs)::bigint FROM (
                     SELECT volume, COUNT(*) AS files, COALESCE(SUM(size), 0) AS bytes, 0 AS dirs FROM objects GROUP BY volume
                     UNION ALL
                     SELECT volume, 0, 0, COUNT(*) FROM dirs GROUP BY volume
                 ) AS s GROUP BY volume ORDER BY volume",
                &[],
            )
            .await
            .map_err(db_error)?;
        Ok(rows
            .iter()
            .map(|r| VolumeStats {
                volume: r.get(0),
                files: r.get::<_, i64>(1) as u64,
                bytes: r.get::<_, i64>(2) as u64,
                directories: r.get::<_, i64>(3) as u64,
            })
            .collect())
    }

    async fn upload_create(&self, upload: &UploadRecord, max_open: usize) -> StorageResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // One creation per principal at a time, on every node, so the
        // count holds.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('silo-multipart:' || $1))",
            &[&upload.principal],
        )
        .await
        .map_err(db_error)?;
        let open: i64 = tx
            .query_one(
                "SELECT count(*) FROM multipart_uploads WHERE principal = $1",
                &[&upload.principal],
            )
            .await
            .map_err(db_error)?
            .get(0);
        if open as usize >= max_open {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO multipart_uploads (id, volume, key, principal, created_ms, settings)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &upload.id,
                &upload.volume,
                &upload.key,
                &upload.principal,
                &(upload.created_ms as i64),
                &upload.settings,
            ],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(true)
    }

    async fn upload_get(&self, id: &str) -> StorageResult<Option<UploadRecord>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT id, volume, key, principal, created_ms, settings FROM multipart_uploads WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(db_error)?;
        Ok(row.as_ref().map(upload_from_row))
    }

    async fn uploads(&self, volume: Option<&str>) -> StorageResult<Vec<UploadRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT id, volume, key, principal, created_ms, settings FROM multipart_uploads
                 WHERE $1::text IS NULL OR volume = $1 ORDER BY volume, key, id",
                &[&volume],
            )
            .await
            .map_err(db_error)?;
        Ok(rows.iter().map(upload_from_row).collect())
    }

    async fn upload_remove(&self, id: &str) -> StorageResult<Option<Vec<PartRecord>>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let closed = close_upload(&tx, id).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(closed)
    }

    async fn upload_complete(&self, completion: &Completion) -> StorageResult<Option<Vec<PartRecord>>> {
        let done = completion;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        let closed = close_upload(&tx, &done.id).await?;
        if closed.is_some() {
            tx.execute(
                "INSERT INTO multipart_completed (id, volume, key, etag, size, content_type, completed_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET volume = $2, key = $3, etag = $4, size = $5,
                     content_type = $6, completed_ms = $7",
                &[
                    &done.id,
                    &done.volume,
                    &done.key,
                    &done.etag,
                    &(done.size as i64),
                    &done.content_type,
                    &(done.completed_ms as i64),
                ],
            )
            .await
            .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        Ok(closed)
    }

    async fn completion(&self, id: &str) -> StorageResult<Option<Completion>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT id, volume, key, etag, size, content_type, completed_ms FROM multipart_completed WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(db_error)?;
        Ok(row.map(|row| Completion {
            id: row.get(0),
            volume: row.get(1),
            key: row.get(2),
            etag: row.get(3),
            size: row.get::<_, i64>(4) as u64,
            content_type: row.get(5),
            completed_ms: row.get::<_, i64>(6) as u64,
        }))
    }

    async fn completions_prune(&self, before_ms: u64) -> StorageResult<u64> {
        let n = self
            .client()
            .await?
            .execute(
                "DELETE FROM multipart_completed WHERE completed_ms < $1",
                &[&(before_ms as i64)],
            )
            .await
            .map_err(db_error)?;
        Ok(n)
    }

    async fn setting(&self, volume: &str, name: &str) -> StorageResult<Option<String>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT value FROM volume_settings WHERE volume = $1 AND name = $2",
                &[&volume, &name],
            )
            .await
            .map_err(db_error)?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn set_setting(&self, volume: &str, name: &str, value: Option<&str>) -> StorageResult<()> {
        let client = self.client().await?;
        match value {
            Some(value) => {
                client
                    .execute(
                        "INSERT INTO volume_settings (volume, name, value) VALUES ($1, $2, $3)
                         ON CONFLICT (volume, name) DO UPDATE SET value = excluded.value",
                        &[&volume, &name, &value],
                    )
                    .await
            }
            None => {
                client
                    .execute(
                        "DELETE FROM volume_settings WHERE volume = $1 AND name = $2",
                        &[&volume, &name],
                    )
                    .await
            }
        }
        .map_err(db_error)?;
        Ok(())
    }

    async fn part_put(&self, id: &str, part: &PartRecord) -> StorageResult<Option<Option<String>>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db_error)?;
        // The upload's row, locked: its parts are recorded one at a time,
        // and never after the upload is removed.
        let open = tx
            .query_opt("SELECT 1 FROM multipart_uploads WHERE id = $1 FOR UPDATE", &[&id])
            .await
            .map_err(db_error)?
            .is_some();
        if !open {
            return Ok(None);
        }
        let replaced: Option<String> = tx
            .query_opt(
                "SELECT blob FROM multipart_parts WHERE upload = $1 AND number = $2",
                &[&id, &part.number],
            )
            .await
            .map_err(db_error)?
            .map(|r| r.get(0));
        tx.execute(
            "INSERT INTO multipart_parts (upload, number, etag, size, modified_ms, blob, checksum)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (upload, number) DO UPDATE
             SET etag = $3, size = $4, modified_ms = $5, blob = $6, checksum = $7",
            &[
                &id,
                &part.number,
                &part.etag,
                &(part.size as i64),
                &(part.modified_ms as i64),
                &part.blob,
                &part.checksum,
            ],
        )
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Some(replaced))
    }

    async fn part_checksum(&self, id: &str, number: i32, blob: &str, checksum: &str) -> StorageResult<()> {
        self.client()
            .await?
            .execute(
                "UPDATE multipart_parts SET checksum = $4 WHERE upload = $1 AND number = $2 AND blob = $3",
                &[&id, &number, &blob, &checksum],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn part_remove(&self, id: &str, number: i32, blob: &str) -> StorageResult<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM multipart_parts WHERE upload = $1 AND number = $2 AND blob = $3",
                &[&id, &number, &blob],
            )
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn parts(&self, id: &str) -> StorageResult<Vec<PartRecord>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT number, etag, size, modified_ms, blob, checksum FROM multipart_parts
                 WHERE upload = $1 ORDER BY number",
                &[&id],
            )
            .await
            .map_err(db_error)?;
        Ok(rows.iter().map(part_from_row).collect())
    }
}

fn upload_from_row(row: &tokio_postgres::Row) -> UploadRecord {
    UploadRecord {
        id: row.get(0),
        volume: row.get(1),
        key: row.get(2),
        principal: row.get(3),
        created_ms: row.get::<_, i64>(4) as u64,
        settings: row.get(5),
    }
}

/// Remove upload `id` and its parts' rows in `tx`: its parts, by number,
/// `None` if it was not open.
async fn close_upload(tx: &deadpool_postgres::Transaction<'_>, id: &str) -> StorageResult<Option<Vec<PartRecord>>> {
    // Locked first, so a part being recorded is either in the list or
    // finds the upload gone.
    let open = tx
        .query_opt("DELETE FROM multipart_uploads WHERE id = $1 RETURNING id", &[&id])
        .await
        .map_err(db_error)?
        .is_some();
    let rows = tx
        .query(
            "DELETE FROM multipart_parts WHERE upload = $1
             RETURNING number, etag, size, modified_ms, blob, checksum",
            &[&id],
        )
        .await
        .map_err(db_error)?;
    let mut parts: Vec<PartRecord> = rows.iter().map(part_from_row).collect();
    parts.sort_by_key(|p| p.number);
    Ok(open.then_some(parts))
}

fn part_from_row(row: &tokio_postgres::Row) -> PartRecord {
    PartRecord {
        number: row.get(0),
        etag: row.get(1),
        size: row.get::<_, i64>(2) as u64,
        modified_ms: row.get::<_, i64>(3) as u64,
        blob: row.get(4),
        checksum: row.get(5),
    }
}

/// What the record of `volume`'s refresh says was done; `None` if it
/// cannot be read back.
async fn refresh_progress(
    tx: &deadpool_postgres::Transaction<'_>,
    volume: &str,
) -> StorageResult<Option<RefreshProgress>> {
    let parts = tx
        .query(
            "SELECT kind, prefix, state FROM refresh_parts WHERE volume = $1",
            &[&volume],
        )
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)));
    let found = tx
        .query_one("SELECT COUNT(*) FROM refresh_found WHERE volume = $1", &[&volume])
        .await
        .map_err(db_error)?
        .get::<_, i64>(0) as u64;
    Ok(RefreshProgress::decode(parts, found))
}
