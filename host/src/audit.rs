//! The audit trail: one record for every change made to a volume through
//! Silo and for every refused upload, kept in the metadata engine.
//!
//! A change's record is written in the same transaction as the cache row
//! it describes, so the cache never holds a change without its record. A
//! refusal changes nothing and is recorded on its own. Records say who
//! (the principal of the request, `cli`, or the plugin that wrote), what,
//! where, through which node, and carry the id of the request that caused
//! them, shared by everything one upload did.

use std::sync::Arc;

use serde::Serialize;

use crate::path::Location;
use crate::store::ObjectMeta;

/// What a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// An upload stored (or a write by the host).
    Put,
    /// A copy made (S3 CopyObject, a rename's first half).
    Copy,
    /// A file deleted.
    Delete,
    /// A file a plugin wrote (a style, a derivative).
    Derived,
    /// A file a refused upload's plugins wrote, taken back out.
    Rollback,
    /// An upload refused (nothing stored).
    Refused,
}

impl Action {
    /// Its name in the trail (`put`, `copy`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Put => "put",
            Action::Copy => "copy",
            Action::Delete => "delete",
            Action::Derived => "derived",
            Action::Rollback => "rollback",
            Action::Refused => "refused",
        }
    }

    /// The action named `text`, if any.
    pub fn parse(text: &str) -> Option<Action> {
        [
            Action::Put,
            Action::Copy,
            Action::Delete,
            Action::Derived,
            Action::Rollback,
            Action::Refused,
        ]
        .into_iter()
        .find(|a| a.as_str() == text)
    }

    /// Whether this action leaves a file in place (its record names the
    /// request that wrote the file).
    pub fn writes(self) -> bool {
        matches!(self, Action::Put | Action::Copy | Action::Derived)
    }
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Its place in the trail (0 until stored).
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The node that made the change.
    pub node: String,
    /// Who made it (a principal's name, `cli`, …).
    pub principal: String,
    /// What was done.
    pub action: Action,
    /// The volume.
    pub volume: String,
    /// The file's path in it.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The file's size, where one was stored.
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The stored file's ETag.
    pub etag: Option<String>,
    /// The content's SHA-256, hex, where Silo hashed it (uploads it staged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The plugin that wrote the file or refused the upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// A refusal's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The request that made the change.
    pub request_id: String,
}

/// Who is changing storage, carried by a session to every record it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The credential's principal, `cli`, or for a plugin its name.
    pub principal: String,
    /// The request that made the change.
    pub request_id: String,
    /// Set for a plugin's session: its writes are derived files.
    pub plugin: Option<String>,
    /// The SHA-256 of the upload this session stores, where known.
    pub sha256: Option<String>,
}

/// The principal of changes made from the command line.
pub const CLI: &str = "cli";
/// The principal of the host's own changes (no request behind them).
pub const HOST: &str = "silo";

impl Actor {
    /// A new request by `principal`.
    pub fn request(principal: impl Into<String>) -> Arc<Actor> {
        Arc::new(Actor {
            principal: principal.into(),
            request_id: new_id(),
            plugin: None,
            sha256: None,
        })
    }

    /// The same request, acted on by plugin `name`.
    pub fn plugin(&self, name: &str) -> Arc<Actor> {
        Arc::new(Actor {
            principal: name.to_owned(),
            request_id: self.request_id.clone(),
            plugin: Some(name.to_owned()),
            sha256: None,
        })
    }

    /// The same request, storing content of this hash.
    pub fn storing(&self, sha256: Option<String>) -> Arc<Actor> {
        Arc::new(Actor { sha256, ..self.clone() })
    }

    /// A record of `action` at `loc`, of the file `meta` describes.
    pub fn record(&self, node: &str, action: Action, loc: &Location, meta: Option<&ObjectMeta>) -> Record {
        Record {
            id: 0,
            time_ms: crate::store::now_ms(),
            node: node.to_owned(),
            principal: self.principal.clone(),
            action,
            volume: loc.volume.clone(),
            path: loc.path.to_string(),
            size: meta.map(|m| m.size),
            etag: meta.map(|m| m.etag.clone()),
            sha256: if action == Action::Put {
                self.sha256.clone()
            } else {
                None
            },
            plugin: self.plugin.clone(),
            reason: None,
            request_id: self.request_id.clone(),
        }
    }
}

/// Which records a query returns; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Records of this volume.
    pub volume: Option<String>,
    /// A plain string prefix of the path.
    pub prefix: Option<String>,
    /// Records of this principal.
    pub principal: Option<String>,
    /// Records of this request.
    pub request_id: Option<String>,
    /// From this time on (ms since the epoch), inclusive.
    pub since_ms: Option<u64>,
    /// Before this time, exclusive.
    pub until_ms: Option<u64>,
}

/// How the audit trail is kept on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Whether changes are recorded at all.
    pub enabled: bool,
    /// This node's name in the records.
    pub node: String,
    /// Records older than this many days are pruned.
    pub keep_days: u32,
}

/// Records a prune deletes per transaction: a prune is many short
/// transactions, so an interrupted one keeps what it did and the next
/// goes on from there.
pub const PRUNE_BATCH: usize = 10_000;

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: true,
            node: node_name(),
            keep_days: DEFAULT_KEEP_DAYS,
        }
    }
}

/// How long records are kept by default, days.
pub const DEFAULT_KEEP_DAYS: u32 = 90;

/// This machine's host name, the default node name.
pub fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "silo".to_owned())
}

/// A new id: 32 lower-case hex digits, from the time, this process and the
/// random keys of the standard library's hasher, so that ids made on
/// different nodes at once differ.
pub fn new_id() -> String {
    use sha2::Digest;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut random = std::collections::hash_map::RandomState::new().build_hasher();
    random.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    let mut hash = sha2::Sha256::new();
    hash.update(random.finish().to_le_bytes());
    hash.update(std::process::id().to_le_bytes());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hash.update(now.as_nanos().to_le_bytes());
    }
    hex::encode(&hash.finalize()[..16])
}

/// What one prune did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// Records deleted.
    pub deleted: u64,
    /// Another node was pruning, so this one left it to it.
    pub left_to_another_node: bool,
}

/// How often `silo serve` prunes the trail.
pub const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// An intent older than this, of any node, is taken for one whose node
/// stopped and will not come back to it.
pub const INTENT_ORPHANED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// A time as a query gives it: RFC 3339 (`2026-12-04T10:00:00Z`), or a
/// duration before now (`90min`, `2h`, `7days`); ms since the epoch.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let at = match humantime::parse_rfc3339_weak(text) {
        Ok(at) => at,
        Err(_) => match humantime::parse_duration(text) {
            Ok(ago) => std::time::SystemTime::now()
                .checked_sub(ago)
                .ok_or_else(|| format!("'{text}' reaches back before 1970"))?,
            Err(_) => {
                return Err(format!(
                    "'{text}' is neither an RFC 3339 time (2026-12-04T10:00:00Z) nor a duration ago (2h, 7days)"
                ));
            }
        },
    };
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .map_err(|_| format!("'{text}' is before 1970"))
}

/// A record's time as RFC 3339, to the millisecond.
pub fn format_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

impl Record {
    /// One line for people: time, node, principal, action, file, then
    /// what else is known.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} {} {} {} {}/{}",
            format_time(self.time_ms),
            self.node,
            self.principal,
            self.action.as_str(),
            self.volume,
            self.path
        );
        if let Some(size) = self.size {
            line.push_str(&format!(" size={size}"));
        }
        if let Some(etag) = &self.etag {
            line.push_str(&format!(" etag={etag}"));
        }
        if let Some(sha) = &self.sha256 {
            line.push_str(&format!(" sha256={sha}"));
        }
        if let Some(plugin) = &self.plugin {
            line.push_str(&format!(" plugin={plugin}"));
        }
        line.push_str(&format!(" request={}", self.request_id));
        if let Some(reason) = &self.reason {
            line.push_str(&format!(" reason={reason:?}"));
        }
        line
    }
}
