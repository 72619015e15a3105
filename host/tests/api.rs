//! Silo's public API names no wasmtime or wit-bindgen type.
//!
//! The crate denies `private_interfaces` and `unnameable_types`, and the
//! runtime module (wasmtime, the generated bindings) is private to it, so a
//! runtime type in a public signature does not compile. Those lints do not
//! see a foreign crate's public types, such as `wasmtime::Engine`; this
//! test covers them: only the runtime module names wasmtime or wit-bindgen,
//! and what it lends the public API (the items `lib.rs` re-exports from it)
//! is defined without them.

use std::path::{Path, PathBuf};

const FOREIGN: [&str; 3] = ["wasmtime", "wit_bindgen", "bindings::"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of `text`, without `//` comments.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn only_the_runtime_names_wasmtime_or_its_bindings() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let runtime = src.join("runtime");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 20, "{files:?}");
    for file in files.iter().filter(|f| !f.starts_with(&runtime)) {
        let text = code(&std::fs::read_to_string(file).unwrap());
        for name in FOREIGN {
            assert!(!text.contains(name), "{} names {name}", file.display());
        }
    }
}

#[test]
fn what_the_runtime_lends_the_api_is_defined_without_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let lent: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub use runtime::"))
        .flat_map(|l| l.trim_matches(|c| "{};".contains(c)).split(','))
        .map(str::trim)
        .collect();
    assert!(lent.contains(&"LoadError"), "{lent:?}");
    let runtime = code(&std::fs::read_to_string(src.join("runtime/mod.rs")).unwrap());
    for item in lent {
        let start = ["pub struct ", "pub enum "]
            .iter()
            .find_map(|kind| runtime.find(&format!("{kind}{item} ")))
            .unwrap_or_else(|| panic!("runtime/mod.rs defines no struct or enum {item}"));
        // The definition: up to its closing brace at the start of a line.
        let body = &runtime[start..];
        let body = &body[..body.find("\n}").expect("a closing brace")];
        for name in FOREIGN {
            assert!(!body.contains(name), "{item} names {name}:\n{body}");
        }
        // Nor any impl of it that is public.
        for (at, _) in runtime.match_indices(&format!("impl {item} {{")) {
            let block = &runtime[at..];
            let block = &block[..block.find("\n}").expect("a closing brace")];
            for line in block.lines().filter(|l| l.trim_start().starts_with("pub fn")) {
                for name in FOREIGN {
                    assert!(!line.contains(name), "{item}: {line}");
                }
            }
        }
    }
}

/// A backend of the embedder's own: the memory store, counting what goes
/// through it. It is written against the public API only, so this also
/// checks that `ObjectStore` can be implemented outside the crate.
struct Counting {
    inner: silo_host::store::MemoryStore,
    writes: std::sync::atomic::AtomicUsize,
    reads: std::sync::atomic::AtomicUsize,
}

mod counting {
    use std::sync::atomic::Ordering::Relaxed;

    use bytes::Bytes;
    use silo_host::ObjectMeta;
    use silo_host::error::StorageResult;
    use silo_host::store::{ByteRange, ByteStream, KeyPage, ObjectStore, ObjectUpload, PutOptions};

    #[async_trait::async_trait]
    impl ObjectStore for super::Counting {
        fn describe(&self) -> String {
            "counting".into()
        }
        async fn head(&self, key: &str) -> StorageResult<ObjectMeta> {
            self.inner.head(key).await
        }
        async fn get(&self, key: &str, range: Option<ByteRange>) -> StorageResult<(ObjectMeta, ByteStream)> {
            self.reads.fetch_add(1, Relaxed);
            self.inner.get(key, range).await
        }
        async fn put(&self, key: &str, data: Bytes, options: &PutOptions) -> StorageResult<ObjectMeta> {
            self.writes.fetch_add(1, Relaxed);
            self.inner.put(key, data, options).await
        }
        async fn start_upload(&self, key: &str, options: PutOptions) -> StorageResult<Box<dyn ObjectUpload>> {
            self.writes.fetch_add(1, Relaxed);
            self.inner.start_upload(key, options).await
        }
        async fn delete(&self, key: &str) -> StorageResult<()> {
            self.inner.delete(key).await
        }
        async fn copy(&self, from: &str, to: &str, options: &PutOptions) -> StorageResult<ObjectMeta> {
            self.writes.fetch_add(1, Relaxed);
            self.inner.copy(from, to, options).await
        }
        async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StorageResult<KeyPage> {
            self.inner.list(prefix, after, limit).await
        }
    }
}

#[tokio::test]
async fn an_embedder_keeps_a_volume_in_a_store_of_its_own() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    use silo_host::serving::{Chunks, ReadRequest};
    use silo_host::{Caller, Outcome, PutRequest, Silo};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Counting {
        inner: silo_host::store::MemoryStore::new(),
        writes: Default::default(),
        reads: Default::default(),
    });
    let silo = Arc::new(
        Silo::builder(dir.path())
            .without_plugins()
            .store("public", store.clone())
            .open()
            .await
            .unwrap(),
    );
    let body = futures_util::stream::iter([Ok(bytes::Bytes::from_static(b"kept elsewhere"))]);
    let report = silo
        .put(
            &Caller::Host("cms"),
            "public",
            "notes/a.txt",
            body,
            PutRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(report.outcome(), Outcome::Stored, "{report:?}");
    assert!(store.writes.load(Relaxed) >= 1);
    // Not in the directory the configuration declares for the volume.
    assert!(!dir.path().join("silo-data/public/notes/a.txt").exists());
    // The private volume keeps its configured backend.
    let body = futures_util::stream::iter([Ok(bytes::Bytes::from_static(b"local"))]);
    let report = silo
        .put(&Caller::Host("cms"), "private", "b.txt", body, PutRequest::default())
        .await
        .unwrap();
    assert_eq!(report.outcome(), Outcome::Stored, "{report:?}");
    assert!(dir.path().join("silo-data/private/b.txt").is_file());

    let served = silo
        .read(&Caller::Anonymous, "public", "notes/a.txt", &ReadRequest::default())
        .await
        .unwrap();
    let bytes: Vec<u8> = match served.into_chunks().expect("a body") {
        Chunks::Whole(b) => b.to_vec(),
        Chunks::Streamed(mut s) => {
            use futures_util::StreamExt;
            let mut all = Vec::new();
            while let Some(chunk) = s.next().await {
                all.extend_from_slice(&chunk.unwrap());
            }
            all
        }
    };
    assert_eq!(bytes, b"kept elsewhere");

    // A store for a volume the configuration does not declare is refused,
    // by name.
    let err = Silo::builder(dir.path())
        .without_plugins()
        .store("pubic", store.clone())
        .open()
        .await
        .err()
        .expect("an undeclared volume is refused");
    assert!(err.to_string().contains("'pubic'"), "{err}");
}
