//! An in-memory store, for tests and throwaway volumes. Same semantics as
//! the other backends, including conditional writes.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{ByteRange, ByteStream, Condition, KeyPage, ObjectMeta, ObjectStore, ObjectUpload, PutOptions};
use crate::error::{StorageError, StorageResult};

type Objects = BTreeMap<String, (ObjectMeta, Bytes)>;

/// Objects in a `BTreeMap`, lost when the store is dropped.
#[derive(Default, Clone)]
pub struct MemoryStore {
    objects: Arc<Mutex<Objects>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Objects> {
        // A panic while holding the lock cannot leave a half-written entry:
        // every mutation is a single insert or remove.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<ObjectMeta> {
        let mut objects = self.lock();
        check_condition(objects.get(key).map(|(m, _)| m), options.condition.as_ref())?;
        let meta = ObjectMeta {
            size: data.len() as u64,
            etag: options.etag.clone().unwrap_or_else(|| super::md5_etag(&data)),
            content_type: options.content_type.clone(),
            modified_ms: super::now_ms(),
            cache_control: options.cache_control.clone(),
            metadata: options.metadata.clone(),
            headers: options.headers.clone(),
        };
        objects.insert(key.to_owned(), (meta.clone(), data));
        Ok(meta)
    }
}

/// Apply a write condition to the current object (if any).
pub(crate) fn check_condition(current: Option<&ObjectMeta>, condition: Option<&Condition>) -> StorageResult<()> {
    match (condition, current) {
        (Some(Condition::CreateOnly), Some(_)) => Err(StorageError::AlreadyExists),
        (Some(Condition::IfMatch(etag)), Some(meta)) if &meta.etag != etag => Err(StorageError::PreconditionFailed),
        (Some(Condition::IfMatch(_)), None) => Err(StorageError::PreconditionFailed),
        _ => Ok(()),
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    async fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
        self.lock()
            .get(key)
            .map(|(m, _)| m.clone())
            .ok_or(StorageError::NotFound)
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> StorageResult<(ObjectMeta, ByteStream)> {
        let (meta, data) = self.lock().get(key).cloned().ok_or(StorageError::NotFound)?;
        let data = match range {
            None => data,
            Some(r) => {
                let start = r.offset.min(data.len() as u64) as usize;
                let end = r.offset.saturating_add(r.length).min(data.len() as u64) as usize;
                data.slice(start..end)
            }
        };
        Ok((meta, Box::pin(std::io::Cursor::new(data))))
    }

    async fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<ObjectMeta> {
        self.store(key, data, options)
    }

    async fn start_upload(&self, key: &str, options: PutOptions) -> StorageResult<Box<dyn ObjectUpload>> {
        Ok(Box::new(MemoryUpload {
            store: self.clone(),
            key: key.to_owned(),
            options,
            data: BytesMut::new(),
        }))
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.lock().remove(key).map(|_| ()).ok_or(StorageError::NotFound)
    }

    async fn copy(&self, from: &str, to: &str, options: &PutOptions) -> StorageResult<ObjectMeta> {
        let data = self
            .lock()
            .get(from)
            .map(|(_, d)| d.clone())
            .ok_or(StorageError::NotFound)?;
        self.store(to, data, options)
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StorageResult<KeyPage> {
        let objects = self.lock();
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        let mut page = KeyPage::default();
        for (key, (meta, _)) in objects.range((start, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if page.objects.len() == limit {
                page.next = page.objects.last().map(|(k, _)| k.clone());
                break;
            }
            page.objects.push((key.clone(), meta.clone()));
        }
        Ok(page)
    }
}

struct MemoryUpload {
    store: MemoryStore,
    key: String,
    options: PutOptions,
    data: BytesMut,
}

#[async_trait]
impl ObjectUpload for MemoryUpload {
    async fn write(&mut self, chunk: Bytes, _held: crate::budget::Held) -> StorageResult<()> {
        self.data.extend_from_slice(&chunk);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> StorageResult<ObjectMeta> {
        self.store.store(&self.key, self.data.freeze(), &self.options)
    }
}
