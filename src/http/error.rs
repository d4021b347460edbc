//! API errors: each a status code and a short message that says what to fix. Nothing internal
//! (paths, engine errors) reaches a response body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::stack::NameError;
use crate::webhook::{CredentialError, PayloadError, SignatureError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "webhooks are disabled: no webhook secret is configured (set STACKHOOK_WEBHOOK_SECRET or STACKHOOK_WEBHOOK_SECRET_FILE)"
    )]
    NoWebhookSecret,
    #[error(
        "no API token or webhook secret is configured (set STACKHOOK_API_TOKEN or STACKHOOK_WEBHOOK_SECRET)"
    )]
    NoCredentials,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A forge's token or signature (`webhook::Forge`).
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("the bearer token is not the API token")]
    BadToken,
    #[error("send Authorization: Bearer <api token> or a valid X-Hub-Signature-256")]
    Unauthenticated,
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    StackName(#[from] NameError),
    #[error("no stack named {0}")]
    UnknownStack(String),
    #[error("pull must be always, missing or never, not {0:?}")]
    BadPull(String),
    #[error("the request body did not arrive within {}", humantime::format_duration(*.0))]
    RequestTimeout(std::time::Duration),
    #[error("the request body is larger than 25 MB")]
    TooLarge,
    #[error("the request body could not be read")]
    BodyRead,
    #[error(
        "a signed request to a single-stack endpoint must be a GitHub release event, or have an empty body and an X-GitHub-Delivery id; send Authorization: Bearer <api token> otherwise"
    )]
    SignedNotRelease,
    #[error(
        "a signed request with an empty body must carry a fresh X-GitHub-Delivery id, so that it cannot be replayed"
    )]
    DeliveryRequired,
    /// The delivery id's header.
    #[error(
        "{0} must be text of at most {max} characters",
        max = super::delivery::MAX_ID_LEN
    )]
    BadDelivery(&'static str),
    #[error("the deploy worker stopped")]
    WorkerGone,
    #[error(
        "the status API is off: set STACKHOOK_API_TOKEN (and send Authorization: Bearer <token>), or STACKHOOK_PUBLIC_STATUS=true"
    )]
    StatusClosed,
    #[error("send Authorization: Bearer <api token>")]
    TokenRequired,
    #[error("no deployment {0} in the history")]
    UnknownDeployment(String),
    /// A failure reading what the server keeps; the details go to the log.
    #[error("{0} failed; the server log says why")]
    Internal(&'static str),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::NoWebhookSecret | ApiError::NoCredentials | ApiError::StatusClosed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Signature(_)
            | ApiError::Credential(_)
            | ApiError::BadToken
            | ApiError::Unauthenticated
            | ApiError::TokenRequired => StatusCode::UNAUTHORIZED,
            ApiError::Payload(_)
            | ApiError::StackName(_)
            | ApiError::BadPull(_)
            | ApiError::BodyRead
            | ApiError::SignedNotRelease
            | ApiError::DeliveryRequired
            | ApiError::BadDelivery(_) => StatusCode::BAD_REQUEST,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnknownStack(_) | ApiError::UnknownDeployment(_) => StatusCode::NOT_FOUND,
            ApiError::WorkerGone | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("{self}");
        } else {
            tracing::info!("refused: {self}");
        }
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}
