//! An object store that delegates to another, recording every call and
//! failing the ones a rule picks: a test can prove how many requests a
//! path made, or break a real backend at a chosen moment.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use silo_host::StorageError;
use silo_host::store::{ByteRange, ByteStream, KeyPage, ObjectMeta, ObjectStore, ObjectUpload, PutOptions, Split};

type Rule = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

pub struct Watched {
    inner: Arc<dyn ObjectStore>,
    calls: Mutex<Vec<(&'static str, String)>>,
    fail: Mutex<Option<Rule>>,
}

impl Watched {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Watched> {
        Arc::new(Watched {
            inner,
            calls: Mutex::default(),
            fail: Mutex::default(),
        })
    }

    /// Every call so far: operation and key (or prefix).
    pub fn calls(&self) -> Vec<(&'static str, String)> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls of one operation so far.
    pub fn count(&self, op: &str) -> usize {
        self.calls.lock().unwrap().iter().filter(|(o, _)| *o == op).count()
    }

    /// Forget the calls so far.
    pub fn reset(&self) {
        self.calls.lock().unwrap().clear();
    }

    /// From now on, a call for which `rule(operation, key)` holds fails with
    /// `unavailable` without reaching the inner store.
    pub fn fail_when(&self, rule: impl Fn(&str, &str) -> bool + Send + Sync + 'static) {
        *self.fail.lock().unwrap() = Some(Box::new(rule));
    }

    /// Stop failing calls.
    pub fn heal(&self) {
        *self.fail.lock().unwrap() = None;
    }

    fn enter(&self, op: &'static str, key: &str) -> Result<(), StorageError> {
        self.calls.lock().unwrap().push((op, key.to_owned()));
        match &*self.fail.lock().unwrap() {
            Some(rule) if rule(op, key) => Err(StorageError::Unavailable(format!("injected failure of {op} '{key}'"))),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl ObjectStore for Watched {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn head(&self, key: &str) -> Result<ObjectMeta, StorageError> {
        self.enter("head", key)?;
        self.inner.head(key).await
    }
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<(ObjectMeta, ByteStream), StorageError> {
        self.enter("get", key)?;
        self.inner.get(key, range).await
    }
    async fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> Result<ObjectMeta, StorageError> {
        self.enter("put", key)?;
        self.inner.put(key, data, options).await
    }
    async fn start_upload(&self, key: &str, options: PutOptions) -> Result<Box<dyn ObjectUpload>, StorageError> {
        self.enter("start_upload", key)?;
        self.inner.start_upload(key, options).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.enter("delete", key)?;
        self.inner.delete(key).await
    }
    async fn copy(&self, from: &str, to: &str, options: &PutOptions) -> Result<ObjectMeta, StorageError> {
        self.enter("copy", from)?;
        self.inner.copy(from, to, options).await
    }
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<KeyPage, StorageError> {
        self.enter("list", prefix)?;
        self.inner.list(prefix, after, limit).await
    }
    async fn split(&self, prefix: &str) -> Result<Option<Split>, StorageError> {
        self.enter("split", prefix)?;
        self.inner.split(prefix).await
    }
}
