//! Error kinds shared by every layer. The HTTP layer maps each kind to an RFC 9457 problem;
//! the message is written for the person who has to act on it.

use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The request is well-formed JSON but its content is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// No credentials, or credentials that are unknown, expired or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but the token's role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// Does not exist — or belongs to another tenant, which must look the same.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    /// A dependency (audit trail, store) cannot take the request now; retry later.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Error::Forbidden(msg.into())
    }
    pub fn unauthenticated(msg: impl Into<String>) -> Self {
        Error::Unauthenticated(msg.into())
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Error::Internal(msg.into())
    }
    pub fn unavailable(msg: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Error::Unavailable {
            message: msg.into(),
            retry_after,
        }
    }
}
