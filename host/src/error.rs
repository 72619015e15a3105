//! The storage error every layer speaks: the core, the backends and (mapped
//! one-to-one) the WIT `error` variant a plugin sees.

use std::fmt;

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    #[error("already exists")]
    AlreadyExists,
    #[error("precondition failed: the file changed")]
    PreconditionFailed,
    #[error("access denied")]
    AccessDenied,
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("too large")]
    TooLarge,
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("unavailable: {0}")]
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

pub type StorageResult<T> = Result<T, StorageError>;
