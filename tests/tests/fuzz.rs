//! Property-based fuzzing (proptest) of the path rules and of the storage
//! core's entry points as the WIT glue calls them (resolve, then operate),
//! with hostile paths. `PROPTEST_CASES` sets the number of cases (CI runs
//! the default, 256 per property).

use std::path::{Component, Path};
use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use silo_host::StorageError;
use silo_host::cache::MetadataCache;
use silo_host::maintenance::verify;
use silo_host::path::{MAX_KEY_BYTES, VolumePath};
use silo_host::policy::ContentPolicy;
use silo_host::store::{MemoryStore, ObjectStore, PutOptions};
use silo_host::vfs::{Access, CacheMode, Grant, Quota, Session, Storage, Visibility, Volume};

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just("up".to_owned()),
        4 => "[a-z0-9._-]{1,10}",
        1 => Just("..".to_owned()),
        1 => Just(".".to_owned()),
        1 => Just(String::new()),
        1 => Just("%2e%2e".to_owned()),
        1 => Just("\u{2024}\u{2024}".to_owned()),
        1 => Just("e\u{301}".to_owned()),
        1 => Just("\u{e9}".to_owned()),
        1 => Just("a\\..\\b".to_owned()),
        1 => Just("a\0b".to_owned()),
        1 => Just("\u{1F600}".to_owned()),
        1 => Just("x.php".to_owned()),
        1 => Just(".htaccess".to_owned()),
        1 => Just("a".repeat(400)),
        2 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

fn hostile_path() -> impl Strategy<Value = String> {
    (any::<bool>(), prop::collection::vec(segment(), 0..6), any::<bool>()).prop_map(|(lead, segments, trail)| {
        format!(
            "{}{}{}",
            if lead { "/" } else { "" },
            segments.join("/"),
            if trail { "/" } else { "" }
        )
    })
}

proptest! {
    #[test]
    fn accepted_paths_never_leave_their_volume(path in prop_oneof![hostile_path(), any::<String>()]) {
        if let Ok(p) = VolumePath::parse(&path) {
            let s = p.as_str();
            prop_assert!(!s.is_empty() && s.len() <= MAX_KEY_BYTES);
            prop_assert!(!s.starts_with('/') && !s.contains('\\') && !s.chars().any(char::is_control));
            // One trailing '/' names a folder; no other segment is empty.
            let body = s.strip_suffix('/').unwrap_or(s);
            prop_assert!(!body.is_empty() && !body.ends_with('/'));
            prop_assert!(body.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
            let joined = Path::new("/srv/volume").join(s);
            prop_assert!(joined.starts_with("/srv/volume"));
            prop_assert!(joined.components().skip(3).all(|c| matches!(c, Component::Normal(_))));
        }
    }

    #[test]
    fn the_storage_core_keeps_a_plugin_inside_its_grant(
        ops in prop::collection::vec((0u8..6, hostile_path(), hostile_path()), 1..24)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let (store, storage, session) = granted("up", CacheMode::ReadThrough);
            let inside = |p: &str| p == "up" || p.starts_with("up/");
            let policy = ContentPolicy::default();
            for (op, path, other) in &ops {
                let access = match op { 0 | 1 | 4 => Access::Write, 3 => Access::Delete, _ => Access::Read };
                let loc = match session.resolve("v", path, access) {
                    Ok(loc) => loc,
                    Err(e) => {
                        let expected = if inside(path) {
                            matches!(e, StorageError::InvalidPath(_))
                        } else {
                            e == StorageError::AccessDenied
                        };
                        assert!(expected, "{path:?}: {e:?}");
                        continue;
                    }
                };
                assert!(inside(path), "{path:?} resolved outside the grant");
                let result = match op {
                    0 => session.write(&loc, Bytes::from_static(b"data"), PutOptions::default()).await.map(|_| ()),
                    1 => {
                        let mut w = match session.open_write(&loc, PutOptions::default()).await {
                            Ok(w) => w,
                            Err(e) => { check_error(path, &e); continue; }
                        };
                        let r = w.write(Bytes::from_static(b"streamed"), Default::default()).await;
                        match r { Ok(()) => w.finish().await.map(|_| ()), Err(e) => Err(e) }
                    }
                    2 => session.read(&loc).await.map(|_| ()),
                    3 => session.delete(&loc).await,
                    4 => match session.resolve("v", other, Access::Write) {
                        Ok(to) => {
                            let copied = session.copy(&loc, &to, PutOptions::default()).await.map(|_| ());
                            // A copy of a file that exists onto a name a web
                            // server would run is refused by the policy.
                            if policy.check_name(to.path.as_str()).is_err() && session.exists(&loc).await.unwrap_or(false) {
                                assert!(
                                    matches!(copied, Err(StorageError::Forbidden(_))),
                                    "copy {path:?} onto {other:?}: {copied:?}"
                                );
                            }
                            copied
                        }
                        Err(_) => continue,
                    },
                    _ => session.list("v", path, false, None, 10).await.map(|_| ()),
                };
                if let Err(e) = result {
                    check_error(path, &e);
                }
            }
            // Nothing outside the grant, nothing that breaks the rules, and
            // the cache agrees with the backend.
            let keys = store.list("", None, 10_000).await.unwrap();
            for (key, _) in &keys.objects {
                assert!(inside(key), "{key:?} was stored outside the grant");
                assert!(policy.check_name(key).is_ok(), "{key:?} is a name the policy refuses");
                assert!(VolumePath::parse(key).is_ok(), "{key:?} breaks the path rules");
            }
            for (key, meta) in &keys.objects {
                assert!(!key.ends_with('/') || meta.size == 0, "the folder {key:?} holds bytes");
            }
            assert!(verify(&storage, "v", &|_| {}).await.unwrap().is_clean());
        });
    }
}

/// A memory volume `v` and a session with every right under `prefix`.
fn granted(prefix: &str, cache_mode: CacheMode) -> (Arc<MemoryStore>, Arc<Storage>, Session) {
    let store = Arc::new(MemoryStore::new());
    let volume = Volume {
        name: "v".into(),
        visibility: Visibility::Private,
        cache_mode,
        store: store.clone(),
        public_url: None,
        read_cache: None,
    };
    let storage = Arc::new(Storage::new(vec![volume], MetadataCache::in_memory().unwrap()));
    let grants: Arc<[Grant]> = vec![Grant {
        volume: "v".into(),
        prefix: prefix.into(),
        access: vec![Access::Read, Access::Write, Access::Delete],
    }]
    .into();
    let quota = Quota {
        bytes_written: 1 << 20,
        objects_written: 1000,
        max_object_bytes: 1 << 16,
    };
    let session = Session::new(storage.clone(), Some(grants), quota);
    (store, storage, session)
}

/// Errors an operation inside the grant may end with: never `access-denied`
/// (the grant covers it), never `unavailable` (the memory store does not
/// fail).
fn check_error(path: &str, e: &StorageError) {
    assert!(
        !matches!(e, StorageError::AccessDenied | StorageError::Unavailable(_)),
        "{path:?}: {e:?}"
    );
}

/// Copies and renames by a plugin onto names a web server would run are
/// refused by the policy, and nothing is stored under them; the source of a
/// refused rename stays.
#[tokio::test]
async fn copies_and_renames_onto_server_executable_names_store_nothing() {
    let (store, _storage, session) = granted("", CacheMode::Canonical);
    let source = session.resolve("v", "up/notes.txt", Access::Write).unwrap();
    let options = PutOptions {
        content_type: "text/plain".into(),
        ..Default::default()
    };
    session
        .write(&source, Bytes::from_static(b"hello"), options)
        .await
        .unwrap();
    for target in [
        "up/x.php",
        "up/.htaccess",
        "up/x.php.txt",
        "up/x.PHTML",
        "up/.user.ini",
        "up/web.config",
    ] {
        let to = session.resolve("v", target, Access::Write).unwrap();
        let copied = session.copy(&source, &to, PutOptions::default()).await;
        assert!(
            matches!(copied, Err(StorageError::Forbidden(_))),
            "copy onto {target}: {copied:?}"
        );
        let renamed = session.rename(&source, &to).await;
        assert!(
            matches!(renamed, Err(StorageError::Forbidden(_))),
            "rename onto {target}: {renamed:?}"
        );
        assert!(!session.exists(&to).await.unwrap(), "{target} is in the cache");
    }
    let keys: Vec<String> = store
        .list("", None, 100)
        .await
        .unwrap()
        .objects
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["up/notes.txt"]);
}
