//! Principals: who may reach Silo's doors, with which credentials, and what
//! each may do. One file lists them all (`[serve] credentials_file`; never
//! the config itself, which holds no secret), reloaded on SIGHUP. A
//! principal has an S3 key pair (the S3 endpoint), a bearer token (the
//! sidecar), or both:
//!
//! ```toml
//! [[principal]]
//! name = "drupal"                          # what reports and logs call it
//! s3_access_key = "SILODRUPAL0001"
//! s3_secret_key = "…"                      # 16 characters or more
//! token = "…"                              # 16 characters or more
//! grants = [
//!     { volume = "public", access = ["read", "write", "delete"] },
//!     { volume = "private", access = ["read"] },
//!     { volume = "uploads", access = ["read", "write", "admin"] }, # admin: its CORS rules
//! ]
//! ```
//!
//! For a quick start, `SILO_S3_ACCESS_KEY` and `SILO_S3_SECRET_KEY` add one
//! principal, `env`, with every right on every volume (as `SILO_TOKEN` has
//! on the sidecar).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;

use crate::vfs::Access;

/// The shortest secret accepted: short secrets can be guessed offline from
/// one signed request.
pub const MIN_SECRET_CHARS: usize = 16;

/// One principal: a name, its S3 key pair, and its rights per volume.
#[derive(Clone)]
pub struct Principal {
    /// Its name, in audit records.
    pub name: String,
    /// Its S3 access key, if it has a key pair.
    pub access_key: Option<String>,
    secret_key: Option<String>,
    /// Volume → what it may do there.
    pub grants: BTreeMap<String, Vec<Access>>,
}

impl Principal {
    /// Its S3 secret key.
    pub fn secret_key(&self) -> Option<&str> {
        self.secret_key.as_deref()
    }

    /// A principal with every right on each of `volumes` and no key (what
    /// `SILO_TOKEN` opens on the sidecar).
    pub fn with_every_right(name: &str, volumes: impl IntoIterator<Item = String>) -> Principal {
        let every = vec![Access::Read, Access::Write, Access::Delete, Access::Admin];
        Principal {
            name: name.to_owned(),
            access_key: None,
            secret_key: None,
            grants: volumes.into_iter().map(|v| (v, every.clone())).collect(),
        }
    }

    /// Whether it may do `access` on `volume`.
    pub fn may(&self, volume: &str, access: Access) -> bool {
        self.grants.get(volume).is_some_and(|a| a.contains(&access))
    }
}

/// The secret never shows in a debug form.
impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("name", &self.name)
            .field("access_key", &self.access_key)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
/// Why the credentials could not be loaded.
pub enum PrincipalsError {
    #[error("cannot read the credentials file {}: {source}", path.display())]
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    #[error("credentials file {}: {message}", path.display())]
    /// The file is refused.
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    #[error("{0}")]
    /// The environment's quick-start key is invalid.
    Environment(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    principal: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    s3_access_key: Option<String>,
    s3_secret_key: Option<String>,
    token: Option<String>,
    grants: Vec<GrantEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    volume: String,
    access: Vec<Access>,
}

/// Every principal, by access key and by (the SHA-256 of its) token.
#[derive(Debug, Default)]
pub struct Principals {
    by_key: BTreeMap<String, Arc<Principal>>,
    by_token: BTreeMap<[u8; 32], Arc<Principal>>,
    names: std::collections::BTreeSet<String>,
}

/// Tokens are looked up by digest, so that no comparison runs over the
/// secret itself.
fn token_digest(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl Principals {
    /// Parse a credentials file's text; every volume a grant names must be
    /// one of `volumes`.
    pub fn parse(text: &str, path: &Path, volumes: &[&str]) -> Result<Principals, PrincipalsError> {
        let invalid = |message: String| PrincipalsError::Invalid {
            path: path.to_owned(),
            message,
        };
        // The parser's message may quote the line, which may hold a secret.
        let file: File = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text.get(..s.start).map_or(0, |t| t.matches('\n').count() + 1));
            invalid(match line {
                Some(line) => format!("not valid at line {line} (unknown key, missing field or bad syntax)"),
                None => "not a valid credentials file".into(),
            })
        })?;
        let mut out = Principals::default();
        for entry in file.principal {
            let name = entry.name;
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)) {
                return Err(invalid(format!(
                    "principal name '{name}' may only use letters, digits, '-', '_', '.' and '@'"
                )));
            }
            if out.names.contains(&name) {
                return Err(invalid(format!("principal '{name}' is listed twice")));
            }
            let keys = match (entry.s3_access_key, entry.s3_secret_key) {
                (Some(key), Some(secret)) => {
                    if key.len() < 3 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        return Err(invalid(format!(
                            "principal '{name}': s3_access_key must be 3 or more letters and digits"
                        )));
                    }
                    if secret.chars().count() < MIN_SECRET_CHARS {
                        return Err(invalid(format!(
                            "principal '{name}': s3_secret_key must be at least {MIN_SECRET_CHARS} characters"
                        )));
                    }
                    Some((key, secret))
                }
                (None, None) => None,
                _ => {
                    return Err(invalid(format!(
                        "principal '{name}': give both s3_access_key and s3_secret_key, or neither"
                    )));
                }
            };
            if let Some(token) = &entry.token
                && (token.chars().count() < MIN_SECRET_CHARS || !token.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(invalid(format!(
                    "principal '{name}': token must be at least {MIN_SECRET_CHARS} visible ASCII characters"
                )));
            }
            if keys.is_none() && entry.token.is_none() {
                return Err(invalid(format!(
                    "principal '{name}' has no credential: give it an S3 key pair, a token, or both"
                )));
            }
            let mut grants: BTreeMap<String, Vec<Access>> = BTreeMap::new();
            for grant in entry.grants {
                if !volumes.contains(&grant.volume.as_str()) {
                    return Err(invalid(format!(
                        "principal '{name}': a grant names volume '{}', which is not configured",
                        grant.volume
                    )));
                }
                let rights = grants.entry(grant.volume).or_default();
                for access in grant.access {
                    if !rights.contains(&access) {
                        rights.push(access);
                    }
                }
            }
            let principal = Arc::new(Principal {
                name: name.clone(),
                access_key: keys.as_ref().map(|(k, _)| k.clone()),
                secret_key: keys.as_ref().map(|(_, s)| s.clone()),
                grants,
            });
            if let Some((key, _)) = keys
                && out.by_key.insert(key, principal.clone()).is_some()
            {
                return Err(invalid(format!(
                    "principal '{name}': its s3_access_key is another's too"
                )));
            }
            if let Some(token) = &entry.token
                && out.by_token.insert(token_digest(token), principal.clone()).is_some()
            {
                return Err(invalid(format!("principal '{name}': its token is another's too")));
            }
            out.names.insert(name);
        }
        Ok(out)
    }

    /// Read and parse the credentials file at `path`.
    pub fn load(path: &Path, volumes: &[&str]) -> Result<Principals, PrincipalsError> {
        let text = std::fs::read_to_string(path).map_err(|source| PrincipalsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, volumes)
    }

    /// Add the quick-start principal `env` (every right on every volume)
    /// from `SILO_S3_ACCESS_KEY` and `SILO_S3_SECRET_KEY`, when both are set.
    pub fn with_environment(mut self, volumes: &[&str]) -> Result<Principals, PrincipalsError> {
        let key = std::env::var("SILO_S3_ACCESS_KEY").ok().filter(|k| !k.is_empty());
        let secret = std::env::var("SILO_S3_SECRET_KEY").ok().filter(|k| !k.is_empty());
        let (key, secret) = match (key, secret) {
            (None, None) => return Ok(self),
            (Some(key), Some(secret)) => (key, secret),
            _ => {
                return Err(PrincipalsError::Environment(
                    "set both SILO_S3_ACCESS_KEY and SILO_S3_SECRET_KEY, or neither".into(),
                ));
            }
        };
        if key.len() < 3 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(PrincipalsError::Environment(
                "SILO_S3_ACCESS_KEY must be 3 or more letters and digits".into(),
            ));
        }
        if secret.chars().count() < MIN_SECRET_CHARS {
            return Err(PrincipalsError::Environment(format!(
                "SILO_S3_SECRET_KEY must be at least {MIN_SECRET_CHARS} characters"
            )));
        }
        if self.by_key.contains_key(&key) {
            return Err(PrincipalsError::Environment(
                "SILO_S3_ACCESS_KEY is a key the credentials file lists too".into(),
            ));
        }
        if self.names.contains("env") {
            return Err(PrincipalsError::Environment(
                "the credentials file names a principal 'env', the name SILO_S3_ACCESS_KEY's principal takes".into(),
            ));
        }
        let every = vec![Access::Read, Access::Write, Access::Delete, Access::Admin];
        let principal = Principal {
            name: "env".into(),
            access_key: Some(key.clone()),
            secret_key: Some(secret),
            grants: volumes.iter().map(|v| (v.to_string(), every.clone())).collect(),
        };
        self.by_key.insert(key, Arc::new(principal));
        self.names.insert("env".into());
        Ok(self)
    }

    /// The principal with this S3 access key.
    pub fn by_access_key(&self, key: &str) -> Option<Arc<Principal>> {
        self.by_key.get(key).cloned()
    }

    /// The principal whose sidecar token this is.
    pub fn by_token(&self, token: &str) -> Option<Arc<Principal>> {
        self.by_token.get(&token_digest(token)).cloned()
    }

    /// How many have an S3 key pair.
    pub fn s3_keys(&self) -> usize {
        self.by_key.len()
    }

    /// How many principals there are.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The principals in force, replaced whole on reload: a request sees the
/// old set or the new one, never a mix.
pub struct PrincipalsHandle {
    current: RwLock<Arc<Principals>>,
    file: Option<PathBuf>,
    volumes: Vec<String>,
}

impl PrincipalsHandle {
    /// Load `file` (if any) and the environment's quick-start key.
    pub fn open(file: Option<&Path>, volumes: Vec<String>) -> Result<PrincipalsHandle, PrincipalsError> {
        let handle = PrincipalsHandle {
            current: RwLock::new(Arc::new(Principals::default())),
            file: file.map(Path::to_owned),
            volumes,
        };
        handle.reload()?;
        Ok(handle)
    }

    /// Read the file and the environment again; on an error the principals
    /// in force stay as they were.
    pub fn reload(&self) -> Result<usize, PrincipalsError> {
        let volumes: Vec<&str> = self.volumes.iter().map(String::as_str).collect();
        let loaded = match &self.file {
            Some(path) => Principals::load(path, &volumes)?,
            None => Principals::default(),
        }
        .with_environment(&volumes)?;
        let count = loaded.len();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(loaded);
        Ok(count)
    }

    /// The principals in force.
    pub fn current(&self) -> Arc<Principals> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Principals, PrincipalsError> {
        Principals::parse(text, Path::new("/etc/silo/credentials.toml"), &["public", "private"])
    }

    #[test]
    fn principals_are_parsed_with_their_grants() {
        let p = parse(
            "[[principal]]\nname = \"cms\"\ns3_access_key = \"CMSKEY1\"\ns3_secret_key = \"0123456789abcdef\"\n\
             grants = [{ volume = \"public\", access = [\"read\", \"write\"] }, { volume = \"private\", access = [\"read\"] }]\n",
        )
        .unwrap();
        let cms = p.by_access_key("CMSKEY1").unwrap();
        assert!(cms.may("public", Access::Write));
        assert!(!cms.may("public", Access::Delete));
        assert!(cms.may("private", Access::Read));
        assert!(!cms.may("private", Access::Write));
        assert!(!cms.may("other", Access::Read));
        assert!(!format!("{cms:?}").contains("0123456789abcdef"));
        // A principal with a token only is found by it, not by a key.
        let p = parse(
            "[[principal]]\nname = \"cms\"\ntoken = \"cms-token-0123456789\"\ngrants = [{ volume = \"public\", access = [\"read\"] }]\n",
        )
        .unwrap();
        assert_eq!(p.by_token("cms-token-0123456789").unwrap().name, "cms");
        assert!(p.by_token("cms-token-012345678").is_none());
        assert_eq!((p.len(), p.s3_keys()), (1, 0));
    }

    #[test]
    fn bad_credentials_files_are_refused_by_name_without_quoting_secrets() {
        let entry = |name: &str, key: &str, secret: &str, volume: &str| {
            format!(
                "[[principal]]\nname = \"{name}\"\ns3_access_key = \"{key}\"\ns3_secret_key = \"{secret}\"\n\
                 grants = [{{ volume = \"{volume}\", access = [\"read\"] }}]\n"
            )
        };
        let good = "0123456789abcdef";
        for (text, why) in [
            (entry("a", "KEY1", "short-secret", "public"), "at least 16 characters"),
            (entry("a", "KEY1", good, "nope"), "volume 'nope', which is not configured"),
            (entry("a b", "KEY1", good, "public"), "principal name 'a b'"),
            (entry("a", "K-1", good, "public"), "s3_access_key must be"),
            (entry("a", "KEY1", good, "public") + &entry("a", "KEY2", good, "public"), "listed twice"),
            (
                "[[principal]]\nname = \"a\"\ngrants = []\n".into(),
                "has no credential",
            ),
            (
                "[[principal]]\nname = \"a\"\ntoken = \"short\"\ngrants = []\n".into(),
                "token must be at least 16",
            ),
            (
                "[[principal]]\nname = \"a\"\ns3_access_key = \"KEY1\"\ngrants = []\n".into(),
                "both s3_access_key and s3_secret_key",
            ),
            (
                format!("[[principal]]\nname = \"a\"\ntoken = \"{good}\"\ngrants = []\n[[principal]]\nname = \"b\"\ntoken = \"{good}\"\ngrants = []\n"),
                "its token is another's too",
            ),
            (entry("a", "KEY1", good, "public") + &entry("b", "KEY1", good, "public"), "another's too"),
            (
                "[[principal]]\nname = \"a\"\ns3_access_key = \"KEY1\"\ns3_secret_key = \"topsecret-value-123\"\ncolour = 1\ngrants = []\n"
                    .into(),
                "line 5",
            ),
        ] {
            let err = match parse(&text) {
                Ok(_) => panic!("{text} was taken"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(why), "{text}: {err}");
            assert!(err.contains("/etc/silo/credentials.toml"), "{err}");
            assert!(!err.contains(good) && !err.contains("topsecret"), "a secret was quoted: {err}");
        }
    }
}
