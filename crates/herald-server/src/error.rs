//! The one place where failures become HTTP: every error of every crate is turned into an
//! `OperationOutcome` with the right status code here, and nowhere else.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use herald_delivery::egress::EgressError;
use herald_delivery::live::ActionError;
use herald_delivery::signing::SigningError;
use herald_fhir::FhirError;
use herald_fhir::outcome::{Severity, operation_outcome_at};
use herald_store::StoreError;
use herald_subscriptions::SubscriptionError;

/// An API failure: a status, an OperationOutcome issue code and a diagnostics text.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {diagnostics}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// FHIR `issue-type` code.
    pub code: &'static str,
    /// What went wrong, for a human.
    pub diagnostics: String,
    /// The element the error is about (`Task.status`), when there is one.
    pub expression: Option<String>,
}

impl ApiError {
    /// Builds an error.
    pub fn new(status: StatusCode, code: &'static str, diagnostics: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }
    /// The same error, naming the element it is about in the issue's `expression`.
    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }
    /// 400 with issue code `invalid`.
    pub fn bad_request(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", diagnostics)
    }
    /// 404 with issue code `not-found`.
    pub fn not_found(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", diagnostics)
    }
    /// 422 with issue code `processing` (business rules, profiles).
    pub fn unprocessable(diagnostics: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "processing", diagnostics)
    }
    /// An error for a bare status (a refusal made before any handler ran, or a rejection of
    /// axum's), with the issue code that fits it.
    pub fn for_status(status: StatusCode, diagnostics: impl Into<String>) -> Self {
        let code = match status {
            StatusCode::NOT_FOUND => "not-found",
            StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::NOT_ACCEPTABLE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
            | StatusCode::NOT_IMPLEMENTED => "not-supported",
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => "timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "too-costly",
            StatusCode::URI_TOO_LONG | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "too-long",
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "security",
            StatusCode::CONFLICT => "conflict",
            StatusCode::TOO_MANY_REQUESTS => "throttled",
            StatusCode::SERVICE_UNAVAILABLE => "transient",
            s if s.is_server_error() => "exception",
            _ => "invalid",
        };
        Self::new(status, code, diagnostics)
    }
    /// 500 with issue code `exception`; details go to the log, not to the client.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            format!("internal error while {context}; see the server log"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let severity = if self.status.is_server_error() {
            Severity::Fatal
        } else {
            Severity::Error
        };
        let body = operation_outcome_at(
            severity,
            self.code,
            &self.diagnostics,
            self.expression.as_deref(),
        );
        let mut resp = (self.status, body.to_string()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::FHIR_JSON),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"herald\""),
            );
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::NotFound { .. } | StoreError::VersionNotFound { .. } => {
                ApiError::not_found(msg)
            }
            StoreError::Gone { .. } => ApiError::new(StatusCode::GONE, "deleted", msg),
            StoreError::VersionConflict { .. } => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, "conflict", msg)
            }
            StoreError::AlreadyExists { .. } => {
                ApiError::new(StatusCode::CONFLICT, "duplicate", msg)
            }
            StoreError::Hook(m) => ApiError::unprocessable(m),
            StoreError::Corrupt(_)
            | StoreError::Engine(_)
            | StoreError::Io(_)
            | StoreError::Refused(_) => ApiError::internal("accessing the store", msg),
            StoreError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "transient", msg)
            }
        }
    }
}

impl From<FhirError> for ApiError {
    fn from(e: FhirError) -> Self {
        let msg = e.to_string();
        match e {
            FhirError::InvalidElement { expression, .. } => {
                ApiError::bad_request(msg).at(expression)
            }
            FhirError::InvalidResource(_) | FhirError::UnknownResourceType(_) => {
                ApiError::bad_request(msg)
            }
            FhirError::InvalidPatch(_) => ApiError::bad_request(msg),
            FhirError::PatchFailed(_) => ApiError::unprocessable(msg),
            FhirError::UnknownSearchParameter { .. }
            | FhirError::InvalidSearchValue { .. }
            | FhirError::FhirPath(_) => ApiError::bad_request(msg),
            FhirError::UnsupportedModifier { .. }
            | FhirError::UnsupportedSearchParameter { .. }
            | FhirError::FhirPathUnsupported(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "not-supported", msg)
            }
            FhirError::FhirPathLimit(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "too-costly", msg)
            }
        }
    }
}

impl From<SubscriptionError> for ApiError {
    /// Always 422: the body is well-formed FHIR, but Herald cannot honour it.
    fn from(e: SubscriptionError) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            e.issue_code(),
            e.to_string(),
        )
    }
}

impl From<EgressError> for ApiError {
    /// 422 `security`: the endpoint is one Herald will not call.
    fn from(e: EgressError) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "security", e.to_string())
    }
}

impl From<SigningError> for ApiError {
    /// The store's own mapping for its errors; 500 otherwise (nothing a client can change).
    fn from(e: SigningError) -> Self {
        match e {
            SigningError::Store(e) => e.into(),
            other => ApiError::internal("making or reading a signing secret", other),
        }
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<ActionError> for ApiError {
    fn from(e: ActionError) -> Self {
        match e {
            ActionError::Unknown(_) => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{e} (it is not loaded for delivery: see its status and error)"),
            ),
            ActionError::BadRange(_) => ApiError::unprocessable(e.to_string()),
            ActionError::Stopped => {
                ApiError::for_status(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}
