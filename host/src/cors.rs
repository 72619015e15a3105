//! Cross-origin rules of a volume (S3's bucket CORS), for browsers that
//! upload straight to storage: a page of the CMS presigns a PUT or a POST
//! policy and the browser sends the file to Silo's S3 endpoint, which is
//! another origin. The rules come from the volume's configuration, or,
//! where it sets none, from its clients (PutBucketCors, with the `admin`
//! grant), kept in the metadata engine so that every node answers them.
//! Which rule answers a request is decided here, for every door.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::access::{Caller, Denied, Op};
use crate::{Silo, StorageError};

/// Rules a volume may hold (S3's bound).
pub const MAX_RULES: usize = 100;

/// The name the rules are kept under in the metadata engine.
const SETTING: &str = "cors";

/// Methods a rule may allow (S3's set).
const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];

/// One rule: which origins may use which methods, sending which headers
/// and reading which.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorsRule {
    /// A name for the rule, as the client gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Origins (`https://cms.example`), each with at most one `*`
    /// standing for any text; `*` alone is any origin.
    pub allowed_origins: Vec<String>,
    /// `GET`, `PUT`, `POST`, `DELETE` or `HEAD`.
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for, each with at most one `*`
    /// (case does not matter).
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    /// Response headers the page's script may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may keep a preflight's answer, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_secs: Option<u32>,
}

/// What a matching rule lets a browser do with one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsAllow {
    /// `Access-Control-Allow-Origin`: the origin, or `*` for a rule that
    /// allows any.
    pub origin: String,
    /// `Access-Control-Allow-Credentials: true` (never with `*`).
    pub credentials: bool,
    /// `Access-Control-Allow-Methods` (preflights).
    pub methods: Vec<String>,
    /// `Access-Control-Allow-Headers`: the headers the preflight asked for.
    pub headers: Vec<String>,
    /// `Access-Control-Expose-Headers`.
    pub expose: Vec<String>,
    /// `Access-Control-Max-Age` (preflights).
    pub max_age_secs: Option<u32>,
}

/// Why the rules could not be read or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    /// The caller may not.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// The metadata engine failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The rules given break a bound (the message says which).
    #[error("invalid CORS rules: {0}")]
    Invalid(String),
    /// The volume's configuration sets its rules: clients cannot change
    /// them.
    #[error("the CORS rules of volume '{0}' are set in Silo's configuration")]
    Configured(String),
}

/// Whether `pattern` (at most one `*`) matches `text`.
fn wildcard(pattern: &str, text: &str, fold: bool) -> bool {
    let eq = |a: &str, b: &str| if fold { a.eq_ignore_ascii_case(b) } else { a == b };
    match pattern.split_once('*') {
        None => eq(pattern, text),
        Some((head, tail)) => {
            text.len() >= head.len() + tail.len()
                && text.get(..head.len()).is_some_and(|h| eq(h, head))
                && text.get(text.len() - tail.len()..).is_some_and(|t| eq(t, tail))
        }
    }
}

/// Rules a volume may hold: at most [`MAX_RULES`], each allowing some
/// origin and some method, with at most one `*` in a pattern.
pub fn check_rules(rules: &[CorsRule]) -> Result<(), String> {
    if rules.is_empty() {
        return Err("no rules: give at least one, or delete the configuration".into());
    }
    if rules.len() > MAX_RULES {
        return Err(format!("{} rules, more than {MAX_RULES}", rules.len()));
    }
    for (i, rule) in rules.iter().enumerate() {
        let n = i + 1;
        if rule.allowed_origins.is_empty() || rule.allowed_methods.is_empty() {
            return Err(format!(
                "rule {n} needs at least one allowed origin and one allowed method"
            ));
        }
        if let Some(m) = rule.allowed_methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(format!(
                "rule {n}: unsupported method '{m}' (one of {})",
                METHODS.join(", ")
            ));
        }
        for pattern in rule.allowed_origins.iter().chain(&rule.allowed_headers) {
            if pattern.matches('*').count() > 1 {
                return Err(format!("rule {n}: '{pattern}' has more than one '*'"));
            }
            if pattern.is_empty() || pattern.chars().any(char::is_control) {
                return Err(format!("rule {n}: an empty or unprintable origin or header"));
            }
        }
        if let Some(h) = rule.expose_headers.iter().find(|h| h.contains('*') || h.is_empty()) {
            return Err(format!("rule {n}: exposed header '{h}' must be a header name"));
        }
    }
    Ok(())
}

/// The first rule that lets `origin` use `method` sending `headers`.
fn matching<'a>(rules: &'a [CorsRule], origin: &str, method: &str, headers: &[&str]) -> Option<&'a CorsRule> {
    rules.iter().find(|rule| {
        rule.allowed_origins.iter().any(|o| wildcard(o, origin, false))
            && rule.allowed_methods.iter().any(|m| m == method)
            && headers
                .iter()
                .all(|h| rule.allowed_headers.iter().any(|a| wildcard(a, h, true)))
    })
}

fn allow(rule: &CorsRule, origin: &str, preflight: Option<&[&str]>) -> CorsAllow {
    let any = rule.allowed_origins.iter().any(|o| o == "*");
    CorsAllow {
        origin: if any { "*".into() } else { origin.to_owned() },
        credentials: !any,
        methods: if preflight.is_some() {
            rule.allowed_methods.clone()
        } else {
            Vec::new()
        },
        headers: preflight
            .unwrap_or_default()
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        expose: rule.expose_headers.clone(),
        max_age_secs: preflight.and(rule.max_age_secs),
    }
}

/// What a preflight (`OPTIONS` with `Access-Control-Request-Method`)
/// from `origin` for `method` sending `headers` is answered: the first
/// rule that allows all of it, or a refusal.
pub fn preflight(rules: &[CorsRule], origin: &str, method: &str, headers: &[&str]) -> Option<CorsAllow> {
    matching(rules, origin, method, headers).map(|rule| allow(rule, origin, Some(headers)))
}

/// The CORS headers an answer to a request from `origin` by `method`
/// carries: the first rule allowing it, or none (the browser hides the
/// answer from the page).
pub fn actual(rules: &[CorsRule], origin: &str, method: &str) -> Option<CorsAllow> {
    matching(rules, origin, method, &[]).map(|rule| allow(rule, origin, None))
}

impl Silo {
    /// The CORS rules volume `volume` answers browsers with: its
    /// configuration's, else those its clients stored; `None` when it has
    /// none (or is not a volume), and every cross-origin request is then
    /// refused.
    pub async fn cors(&self, volume: &str) -> Result<Option<Arc<[CorsRule]>>, StorageError> {
        let Ok(found) = self.storage().volume(volume) else {
            return Ok(None);
        };
        if let Some(rules) = self.config().volumes.get(&found.name).and_then(|v| v.cors.as_ref()) {
            return Ok(Some(rules.clone().into()));
        }
        let engine = self.storage().cache().engine();
        let Some(text) = engine.setting(volume, SETTING).await? else {
            return Ok(None);
        };
        let rules: Vec<CorsRule> = serde_json::from_str(&text).map_err(|e| {
            StorageError::Unavailable(format!(
                "the CORS rules stored for volume '{volume}' cannot be read: {e}"
            ))
        })?;
        Ok(Some(rules.into()))
    }

    /// The rules of `volume`, as GetBucketCors answers them: any grant on
    /// the volume may read them.
    pub async fn cors_rules(&self, caller: &Caller, volume: &str) -> Result<Option<Arc<[CorsRule]>>, CorsError> {
        self.authorize(caller, volume, "", Op::Configure)?;
        Ok(self.cors(volume).await?)
    }

    /// Store (`Some`) or remove (`None`) the rules of `volume`: the
    /// caller needs the `admin` grant, and a volume whose configuration
    /// sets rules keeps them.
    pub async fn set_cors(&self, caller: &Caller, volume: &str, rules: Option<Vec<CorsRule>>) -> Result<(), CorsError> {
        self.authorize(caller, volume, "", Op::Admin)?;
        if self.config().volumes.get(volume).is_some_and(|v| v.cors.is_some()) {
            return Err(CorsError::Configured(volume.to_owned()));
        }
        let text = match &rules {
            Some(rules) => {
                check_rules(rules).map_err(CorsError::Invalid)?;
                Some(serde_json::to_string(rules).map_err(|e| CorsError::Invalid(e.to_string()))?)
            }
            None => None,
        };
        let engine = self.storage().cache().engine();
        engine.set_setting(volume, SETTING, text.as_deref()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            id: None,
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            expose_headers: vec!["ETag".into()],
            max_age_secs: Some(600),
        }
    }

    #[test]
    fn the_first_rule_allowing_origin_method_and_headers_answers() {
        let rules = [
            rule(
                &["https://*.example.com"],
                &["PUT", "POST"],
                &["content-type", "x-amz-*"],
            ),
            rule(&["*"], &["GET"], &[]),
        ];
        let put = preflight(
            &rules,
            "https://cms.example.com",
            "PUT",
            &["Content-Type", "X-Amz-Date"],
        )
        .unwrap();
        assert_eq!(put.origin, "https://cms.example.com");
        assert!(put.credentials);
        assert_eq!(put.methods, ["PUT", "POST"]);
        assert_eq!(put.headers, ["content-type", "x-amz-date"]);
        assert_eq!(put.max_age_secs, Some(600));
        // A header no rule allows, another origin, another method.
        assert_eq!(
            preflight(&rules, "https://cms.example.com", "PUT", &["authorization"]),
            None
        );
        assert_eq!(preflight(&rules, "https://evil.test", "PUT", &[]), None);
        assert_eq!(preflight(&rules, "https://example.com.evil.test", "PUT", &[]), None);
        assert_eq!(preflight(&rules, "https://cms.example.com", "DELETE", &[]), None);
        // Any origin may GET: answered `*`, without credentials.
        let get = actual(&rules, "https://evil.test", "GET").unwrap();
        assert_eq!((get.origin.as_str(), get.credentials), ("*", false));
        assert!(get.methods.is_empty() && get.max_age_secs.is_none());
    }

    #[test]
    fn rules_out_of_bounds_are_refused_by_name() {
        assert!(check_rules(&[]).is_err());
        let bad = check_rules(&[rule(&["*"], &["PATCH"], &[])]).unwrap_err();
        assert!(bad.contains("PATCH"), "{bad}");
        let bad = check_rules(&[rule(&["https://*.*.example"], &["GET"], &[])]).unwrap_err();
        assert!(bad.contains("more than one"), "{bad}");
        assert!(check_rules(&vec![rule(&["*"], &["GET"], &[]); MAX_RULES + 1]).is_err());
        assert!(check_rules(&[rule(&["*"], &["GET"], &["*"])]).is_ok());
    }
}
