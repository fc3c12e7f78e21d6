use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use basalt_api::ErrorBody;
use basalt_kernel_core::master::{Rejection, RejectionKind};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] basalt_kernel_store::Error),
    #[error("master I/O: {0}")]
    Io(String),
    #[error("master internal error: {0}")]
    Internal(String),
}

/// Everything an HTTP handler can answer with besides success.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    NotFound(String),
    #[error("the master is shutting down")]
    Unavailable,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Rejected(r) => match r.kind {
                RejectionKind::BadRequest => StatusCode::BAD_REQUEST,
                RejectionKind::NotFound => StatusCode::NOT_FOUND,
                RejectionKind::Conflict => StatusCode::CONFLICT,
                RejectionKind::Forbidden => StatusCode::FORBIDDEN,
            },
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable => {
                tracing::warn!("request refused: master stopping");
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        (status, Json(ErrorBody::new(self.to_string()))).into_response()
    }
}
