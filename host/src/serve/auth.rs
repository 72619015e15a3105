//! Who a request is, as a door reads it from its credentials: a bearer
//! token (the sidecar) or an S3 access key (the S3 endpoint), turned into
//! the [`Caller`] the core decides by. What the caller may then do is the
//! core's (`Silo::authorize`).

use std::sync::Arc;

use http::{HeaderMap, header};

use crate::access::{Caller, UrlSigner};
use crate::principals::{Principal, PrincipalsHandle};

/// The name `SILO_TOKEN`'s principal has in reports and the audit trail.
pub const TOKEN_PRINCIPAL: &str = "token";

/// The sidecar's secrets and principals.
pub(crate) struct Bearers {
    /// `SILO_TOKEN`, and the principal it opens: every right on every
    /// volume.
    write: String,
    token: Arc<Principal>,
    principals: Option<Arc<PrincipalsHandle>>,
    /// `SILO_ADMIN_TOKEN`: the admin routes; `None` turns them off.
    admin: Option<String>,
    /// Signs and checks the sidecar's time-limited URLs.
    pub(crate) signer: UrlSigner,
}

/// Whether a request may use the admin routes.
pub(crate) enum Admin {
    Allowed,
    /// No admin token, or another one.
    Unauthorized,
    /// The sidecar has no admin token: the routes are off.
    Disabled,
}

impl Bearers {
    pub(crate) fn new(
        write: String,
        signing_key: Vec<u8>,
        admin: Option<String>,
        principals: Option<Arc<PrincipalsHandle>>,
        volumes: impl IntoIterator<Item = String>,
    ) -> Bearers {
        Bearers {
            write,
            token: Arc::new(Principal::with_every_right(TOKEN_PRINCIPAL, volumes)),
            principals,
            admin,
            signer: UrlSigner::new(signing_key),
        }
    }

    /// Who the bearer token presented is: the write token's principal, a
    /// principal's, or (no token, or one nobody has) anonymous.
    pub(crate) fn caller(&self, headers: &HeaderMap) -> Caller {
        let Some(presented) = bearer(headers) else {
            return Caller::Anonymous;
        };
        if same_secret(presented, &self.write) {
            return Caller::Principal(self.token.clone());
        }
        match &self.principals {
            Some(principals) => principals
                .current()
                .by_token(presented)
                .map_or(Caller::Anonymous, Caller::Principal),
            None => Caller::Anonymous,
        }
    }

    /// As [`Bearers::caller`]; without a token, the bearer of a signed URL
    /// for this file if `expires` and `signature` (the URL's query) hold.
    pub(crate) fn caller_signed(
        &self,
        headers: &HeaderMap,
        volume: &str,
        path: &str,
        expires: Option<u64>,
        signature: Option<&str>,
    ) -> Caller {
        match self.caller(headers) {
            Caller::Anonymous => self
                .signer
                .caller(volume, path, expires, signature)
                .unwrap_or(Caller::Anonymous),
            known => known,
        }
    }

    /// Whether the admin token was presented.
    pub(crate) fn admin(&self, headers: &HeaderMap) -> Admin {
        match (&self.admin, bearer(headers)) {
            (None, _) => Admin::Disabled,
            (Some(admin), Some(presented)) if same_secret(presented, admin) => Admin::Allowed,
            (Some(_), _) => Admin::Unauthorized,
        }
    }
}

/// The caller an S3 access key names: its principal, if the key is
/// known (the signature was checked by s3s with that principal's secret).
pub(crate) fn key_caller(principals: &PrincipalsHandle, access_key: &str) -> Option<Caller> {
    principals.current().by_access_key(access_key).map(Caller::Principal)
}

/// The bearer token presented, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Compare a presented secret in constant time.
fn same_secret(presented: &str, secret: &str) -> bool {
    presented.len() == secret.len()
        && presented
            .bytes()
            .zip(secret.bytes())
            .fold(0, |acc, (a, b)| acc | (a ^ b))
            == 0
}
