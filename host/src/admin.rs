//! What an operator asks of a node (the sidecar's admin routes, or an
//! embedder's): cache upkeep per volume, statistics, the audit trail.

use serde::Serialize;

use crate::access::{Denied, RequestError};
use crate::audit::{Filter, Record};
use crate::maintenance::{Drift, RefreshReport};
use crate::{Silo, Storage, StorageError};

/// Files and bytes of one volume, and of its disk read cache.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeReport {
    /// The volume's name.
    pub volume: String,
    /// Where its files are (a directory, a bucket and prefix).
    pub backend: String,
    /// Files the metadata cache holds.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Directories the metadata cache holds.
    pub directories: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The volume's read cache, if it has one.
    pub read_cache: Option<ReadCacheReport>,
}

/// What a volume's disk read cache holds.
#[derive(Debug, Clone, Serialize)]
pub struct ReadCacheReport {
    /// Files on disk.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// The most it keeps (`read_cache_mib`).
    pub max_bytes: u64,
}

/// Audit records handed out per page at most.
pub const MAX_AUDIT_PAGE: usize = 1000;

impl Silo {
    fn known_volume(&self, volume: &str) -> Result<(), Denied> {
        self.storage()
            .volume(volume)
            .map(drop)
            .map_err(|_| Denied::NoSuchVolume(volume.to_owned()))
    }

    /// Rebuild `volume`'s metadata cache from its backend.
    pub async fn refresh(&self, volume: &str) -> Result<RefreshReport, RequestError> {
        self.known_volume(volume)?;
        Ok(crate::maintenance::refresh(self.storage(), volume, &|_| {}).await?)
    }

    /// Compare `volume`'s metadata cache with its backend; changes nothing.
    pub async fn verify(&self, volume: &str) -> Result<Drift, RequestError> {
        self.known_volume(volume)?;
        Ok(crate::maintenance::verify(self.storage(), volume, &|_| {}).await?)
    }

    /// Files and bytes per volume, from the metadata cache and the read
    /// caches.
    pub async fn volume_reports(&self) -> Result<Vec<VolumeReport>, StorageError> {
        self.storage().volume_reports().await
    }

    /// A page of the audit trail, oldest first: records after id `after`,
    /// at most `limit` (clamped to [`MAX_AUDIT_PAGE`]).
    pub async fn audit_page(
        &self,
        filter: &Filter,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        self.storage().audit_page(filter, after, limit).await
    }
}

/// The same for the operator's commands, which open the storage alone.
impl Storage {
    /// Files and bytes per volume, from the metadata cache and the read
    /// caches.
    pub async fn volume_reports(&self) -> Result<Vec<VolumeReport>, StorageError> {
        let cached = self.cache().stats().await?;
        Ok(self
            .volumes()
            .map(|v| {
                let s = cached.iter().find(|s| s.volume == v.name);
                VolumeReport {
                    volume: v.name.clone(),
                    backend: v.store.describe(),
                    files: s.map_or(0, |s| s.files),
                    bytes: s.map_or(0, |s| s.bytes),
                    directories: s.map_or(0, |s| s.directories),
                    read_cache: v.read_cache.as_ref().map(|c| ReadCacheReport {
                        files: c.files(),
                        bytes: c.bytes(),
                        max_bytes: c.settings().max_bytes,
                    }),
                }
            })
            .collect())
    }

    /// A page of the audit trail, oldest first: records after id `after`,
    /// at most `limit` (clamped to [`MAX_AUDIT_PAGE`]).
    pub async fn audit_page(
        &self,
        filter: &Filter,
        after: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Record>, StorageError> {
        self.cache()
            .engine()
            .audit_query(filter, after.filter(|a| *a > 0), limit.clamp(1, MAX_AUDIT_PAGE))
            .await
    }
}
