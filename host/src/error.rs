//! The storage error every layer speaks: the core, the backends and (mapped
//! one-to-one) the WIT `error` variant a plugin sees.

use std::fmt;

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("not found")]
    /// No such file.
    NotFound,
    #[error("already exists")]
    /// The file exists and the write was create-only.
    AlreadyExists,
    #[error("precondition failed: the file changed")]
    /// A condition on the write or read did not hold.
    PreconditionFailed,
    #[error("access denied")]
    /// The session has no grant for this.
    AccessDenied,
    #[error("invalid path: {0}")]
    /// The path breaks Silo's path rules (the message says which).
    InvalidPath(String),
    #[error("too large")]
    /// Larger than the volume or the limit allows.
    TooLarge,
    #[error("quota exceeded: {0}")]
    /// The write would pass a quota (the message says which).
    QuotaExceeded(String),
    #[error("unsupported: {0}")]
    /// The backend or the volume cannot do this.
    Unsupported(String),
    #[error("unavailable: {0}")]
    /// The backend or the metadata database is unreachable; try again.
    Unavailable(String),
    /// A shared bound (write buffers, uploads under way) stayed full for
    /// longer than a client is kept waiting; retrying later succeeds.
    #[error("busy: {0}")]
    Busy(String),
    /// Refused by the write-xor-execute content policy.
    #[error("forbidden: {0}")]
    Forbidden(String),
}

impl StorageError {
    /// A stable machine-readable code (used in JSON output and HTTP errors).
    pub fn code(&self) -> &'static str {
        match self {
            StorageError::NotFound => "not-found",
            StorageError::AlreadyExists => "already-exists",
            StorageError::PreconditionFailed => "precondition-failed",
            StorageError::AccessDenied => "access-denied",
            StorageError::InvalidPath(_) => "invalid-path",
            StorageError::TooLarge => "too-large",
            StorageError::QuotaExceeded(_) => "quota-exceeded",
            StorageError::Unsupported(_) => "unsupported",
            StorageError::Unavailable(_) => "unavailable",
            StorageError::Busy(_) => "busy",
            StorageError::Forbidden(_) => "forbidden",
        }
    }

    pub(crate) fn unavailable(what: impl fmt::Display) -> Self {
        StorageError::Unavailable(what.to_string())
    }

    pub(crate) fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::NotFound => StorageError::NotFound,
            std::io::ErrorKind::AlreadyExists => StorageError::AlreadyExists,
            _ => StorageError::Unavailable(format!("{context}: {err}")),
        }
    }
}

/// A storage operation's result.
pub type StorageResult<T> = Result<T, StorageError>;
