//! Who acts for a client, and what they may do. Grants and the public-read
//! rule are decided here, once, for every door (the sidecar, the S3
//! endpoint, an embedder's own routes): a door only says who is asking.

use std::sync::Arc;

use crate::principals::Principal;
use crate::vfs::{Access, Grant, Location, Quota, Session, Visibility};
use crate::{Silo, StorageError};

/// The principal a request acts as, as its door authenticated it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credentials: may read the files of public volumes, nothing else.
    Anonymous,
    /// The bearer of a URL Silo signed for reading one file: may read that
    /// file (and, as anyone, public ones).
    SignedUrl(Location),
    /// A principal of the credentials file, or `SILO_TOKEN`'s (every right
    /// on every volume): what its grants allow.
    Principal(Arc<Principal>),
    /// Silo's own tools (`cli`), or the application embedding it acting
    /// for itself, with every right; the name is what the audit trail
    /// records.
    Host(&'static str),
}

impl Caller {
    /// The name reports and the audit trail give it.
    pub fn name(&self) -> &str {
        match self {
            Caller::Anonymous | Caller::SignedUrl(_) => "anonymous",
            Caller::Principal(p) => &p.name,
            Caller::Host(name) => name,
        }
    }
}

/// What a caller asks to do in a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read a file (GET, HEAD): open to everyone on public volumes.
    Read,
    /// List files, or read a volume's settings: a read grant, whatever the
    /// volume's visibility (a public volume's files are readable by their
    /// names, not enumerable).
    List,
    /// Store or replace a file.
    Write,
    /// Remove a file.
    Delete,
    /// Ask about a volume's configuration (what the S3 endpoint answers
    /// for bucket settings): any grant on it.
    Configure,
    /// Change a volume's settings (bucket CORS): the `admin` grant.
    Admin,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::List => "list",
            Op::Write => "write",
            Op::Delete => "delete",
            Op::Configure => "configure",
            Op::Admin => "administer",
        })
    }
}

/// Why a caller may not do what it asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Nobody known asked, and this needs someone.
    #[error("this needs credentials")]
    Unauthenticated,
    /// The principal's grants do not cover it.
    #[error("principal '{principal}' may not {op} in volume '{volume}'")]
    NotGranted {
        /// Who asked.
        principal: String,
        /// Where.
        volume: String,
        /// What.
        op: Op,
    },
    /// A known caller named a volume that is not configured (told only to
    /// callers with credentials: a stranger learns no volume's name).
    #[error("there is no volume named '{0}'")]
    NoSuchVolume(String),
}

/// Why a client's operation failed: refused by access, or by storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    /// The caller may not do this.
    Denied(#[from] Denied),
    #[error(transparent)]
    /// The storage failed.
    Storage(#[from] StorageError),
}

/// The grants everyone has: reading the files of each public volume.
pub(crate) fn public_reads(storage: &crate::Storage) -> Arc<[Grant]> {
    storage
        .volumes()
        .filter(|v| v.visibility == Visibility::Public)
        .map(|v| Grant {
            volume: v.name.clone(),
            prefix: String::new(),
            access: vec![Access::Read],
        })
        .collect()
}

impl Silo {
    /// Whether `caller` may do `op` on `path` (a file's path, or a prefix)
    /// in `volume`. Every client operation of the core asks this first.
    pub fn authorize(&self, caller: &Caller, volume: &str, path: &str, op: Op) -> Result<(), Denied> {
        let found = self.storage().volume(volume).ok();
        let public_read = op == Op::Read && found.is_some_and(|v| v.visibility == Visibility::Public);
        match caller {
            Caller::Host(_) => found.map(drop).ok_or_else(|| Denied::NoSuchVolume(volume.to_owned())),
            Caller::Principal(principal) => {
                if found.is_none() {
                    return Err(Denied::NoSuchVolume(volume.to_owned()));
                }
                let granted = match op {
                    Op::Read => principal.may(volume, Access::Read),
                    Op::List => principal.may(volume, Access::Read),
                    Op::Write => principal.may(volume, Access::Write),
                    Op::Delete => principal.may(volume, Access::Delete),
                    Op::Configure => principal.grants.contains_key(volume),
                    Op::Admin => principal.may(volume, Access::Admin),
                };
                if public_read || granted {
                    Ok(())
                } else {
                    Err(Denied::NotGranted {
                        principal: principal.name.clone(),
                        volume: volume.to_owned(),
                        op,
                    })
                }
            }
            Caller::SignedUrl(signed) => {
                let this_file = op == Op::Read && signed.volume == volume && signed.path.as_str() == path;
                if public_read || this_file {
                    Ok(())
                } else {
                    Err(Denied::Unauthenticated)
                }
            }
            Caller::Anonymous if public_read => Ok(()),
            Caller::Anonymous => Err(Denied::Unauthenticated),
        }
    }

    /// A storage session for `caller`: its grants (and the public reads
    /// everyone has) are checked again where the data is. One that
    /// changes files takes the caller's actor too.
    pub(crate) fn session_for(&self, caller: &Caller) -> Session {
        let storage = self.storage().clone();
        let public = || self.public_reads().to_vec();
        let grants: Option<Arc<[Grant]>> = match caller {
            Caller::Host(_) => None,
            Caller::Anonymous => Some(self.public_reads().clone()),
            Caller::SignedUrl(loc) => {
                let mut grants = public();
                grants.push(Grant {
                    volume: loc.volume.clone(),
                    prefix: loc.path.to_string(),
                    access: vec![Access::Read],
                });
                Some(grants.into())
            }
            Caller::Principal(principal) => {
                let mut grants = public();
                grants.extend(principal.grants.iter().map(|(volume, access)| Grant {
                    volume: volume.clone(),
                    prefix: String::new(),
                    access: access.clone(),
                }));
                Some(grants.into())
            }
        };
        Session::new(storage, grants, Quota::UNLIMITED)
    }
}

type Hmac = hmac::Hmac<sha2::Sha256>;

fn url_mac(key: &[u8], volume: &str, path: &str, expires: u64) -> Hmac {
    use hmac::Mac;
    let mut mac = Hmac::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{volume}/{path}\n{expires}").as_bytes());
    mac
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Signs and checks URLs that let their bearer read one file until they
/// expire (HMAC-SHA256 of the volume, the path and the expiry).
#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
}

impl UrlSigner {
    /// A signer with `key` (the sidecar's signing key).
    pub fn new(key: Vec<u8>) -> UrlSigner {
        UrlSigner { key }
    }

    /// The hex signature of a URL for `path` of `volume` valid until
    /// `expires` (seconds since the Unix epoch).
    pub fn sign(&self, volume: &str, path: &str, expires: u64) -> String {
        use hmac::Mac;
        hex::encode(url_mac(&self.key, volume, path, expires).finalize().into_bytes())
    }

    /// The caller a URL's signature makes: the bearer of a signed URL for
    /// this file while it is valid, else no one.
    pub fn caller(&self, volume: &str, path: &str, expires: Option<u64>, signature: Option<&str>) -> Option<Caller> {
        use hmac::Mac;
        let (expires, signature) = (expires?, hex::decode(signature?).ok()?);
        if expires < now_secs()
            || url_mac(&self.key, volume, path, expires)
                .verify_slice(&signature)
                .is_err()
        {
            return None;
        }
        let path = crate::path::VolumePath::parse(path).ok()?;
        Some(Caller::SignedUrl(Location {
            volume: volume.to_owned(),
            path,
        }))
    }
}

impl Silo {
    /// A URL path of Silo's that lets its bearer read `path` of `volume`
    /// for `expires_in` (1 s to [`crate::vfs::MAX_URL_SECONDS`]), minted for
    /// `caller`, who must be able to read it: `(url, expires)`.
    pub fn sign(
        &self,
        caller: &Caller,
        signer: &UrlSigner,
        volume: &str,
        path: &str,
        expires_in: std::time::Duration,
    ) -> Result<(String, u64), RequestError> {
        self.authorize(caller, volume, path, Op::Read)?;
        self.storage().location(volume, path)?;
        let seconds = expires_in.as_secs();
        if !(1..=crate::vfs::MAX_URL_SECONDS).contains(&seconds) {
            return Err(StorageError::Unsupported(format!(
                "a signed URL stays valid for 1 to {} seconds, not {seconds}",
                crate::vfs::MAX_URL_SECONDS
            ))
            .into());
        }
        let expires = now_secs() + seconds;
        let url = format!(
            "/v1/files/{}/{}?expires={expires}&signature={}",
            crate::path::percent_encode(volume),
            crate::path::percent_encode(path),
            signer.sign(volume, path, expires)
        );
        Ok((url, expires))
    }

    /// An S3 presigned URL that reads `path` of `volume` straight from its
    /// backend for `expires_in`, for `caller`, who must be able to read it;
    /// `None` where the volume is not on S3.
    pub async fn presign(
        &self,
        caller: &Caller,
        volume: &str,
        path: &str,
        expires_in: std::time::Duration,
    ) -> Result<Option<String>, RequestError> {
        self.authorize(caller, volume, path, Op::Read)?;
        let loc = self.storage().location(volume, path)?;
        let meta = self.session_for(caller).stat(&loc).await?;
        Ok(self.storage().presigned_url(&loc, &meta, expires_in).await?)
    }
}
