//! Error responses: a status and a one-line plain-text reason (PROTOCOL.md §4.2). Storage failures become
//! 503 with their reason, logged in full; a client never causes a 500.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::response::{IntoResponse, Response};
use homestead_backends::{MetadataError, StoreError};
use http::{HeaderValue, StatusCode, header};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The status code.
    pub status: StatusCode,
    /// The plain-text body.
    pub message: String,
}

impl HttpError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400 with a reason.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 `Not Found`.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found")
    }

    /// A request body that could not be read: 408 when the client paused too long, else 400.
    pub fn body_failed(source: &(dyn std::error::Error + 'static)) -> Self {
        let timed_out = source
            .downcast_ref::<std::io::Error>()
            .is_some_and(|err| err.kind() == std::io::ErrorKind::TimedOut);
        if timed_out {
            Self::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("Request body timed out: {source}"),
            )
        } else {
            Self::bad_request(format!("Request body could not be read: {source}"))
        }
    }

    /// 401 `No authenticated session found`: a request that needs a session has none.
    pub fn no_session() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "No authenticated session found")
    }

    /// 404 `Pubky Host is missing`: `GET /session` without a tenant (0.9.3's answer, which its SDK
    /// reads as "signed out").
    pub fn no_tenant() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Pubky Host is missing")
    }

    /// 400 `Missing request tenant`: a storage route or `DELETE /session` without a tenant
    /// (PROTOCOL-0.17.md §12.1).
    pub fn missing_tenant() -> Self {
        Self::bad_request("Missing request tenant")
    }
}

/// Storage failures seen while answering requests, for the metrics.
#[derive(Debug, Default)]
pub struct StorageFailures {
    /// Blob store errors (including blobs missing behind an entry).
    pub blob: AtomicU64,
    /// Metadata database errors.
    pub database: AtomicU64,
}

/// The process-wide count of [`StorageFailures`].
pub static STORAGE_FAILURES: StorageFailures = StorageFailures {
    blob: AtomicU64::new(0),
    database: AtomicU64::new(0),
};

impl From<MetadataError> for HttpError {
    fn from(err: MetadataError) -> Self {
        StoreError::Metadata(err).into()
    }
}

impl From<StoreError> for HttpError {
    fn from(err: StoreError) -> Self {
        let counter = match &err {
            StoreError::Blob { .. } | StoreError::BlobMissing { .. } => {
                Some(&STORAGE_FAILURES.blob)
            }
            StoreError::Metadata(_) => Some(&STORAGE_FAILURES.database),
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        match err {
            StoreError::NoSuchUser { .. } => Self::not_found(),
            StoreError::QuotaExceeded { .. } => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "Disk space quota exceeded",
            ),
            StoreError::PreconditionFailed { .. } => {
                Self::new(StatusCode::PRECONDITION_FAILED, "Precondition failed")
            }
            StoreError::PathTooLong { .. } => {
                Self::bad_request("Invalid URL: Path is too long to store")
            }
            StoreError::TooLarge { limit, .. } => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body is larger than the limit of {limit} bytes"),
            ),
            StoreError::Body { source, .. } => Self::body_failed(source.as_ref()),
            other => {
                tracing::error!(err = %other, "storage failure");
                // A fixed reason: the error itself names paths, blob keys and the data directory.
                Self::new(StatusCode::SERVICE_UNAVAILABLE, other.public_reason())
            }
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.message).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    }
}
