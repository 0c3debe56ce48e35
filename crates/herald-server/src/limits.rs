//! Per-request limits checked before routing: the request target's length (414), the header
//! section's size (431) and the deadline for receiving the body (408). They are the policy;
//! hyper's own parser limits are set well above them (see `listener`) so that a refusal is made
//! here, as an OperationOutcome, rather than by hyper with an empty body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use crate::AppState;
use crate::config::ServerConfig;
use crate::error::ApiError;

/// Bytes a request's header section takes on the wire: `name: value` and CRLF per field.
pub fn header_section_bytes(headers: &axum::http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

/// Bytes of the request target (authority when present, path and query).
pub fn request_target_bytes(uri: &axum::http::Uri) -> usize {
    uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |pq| pq.as_str().len())
}

/// Checks a request head against the configured limits.
pub fn check_head(config: &ServerConfig, req: &Request) -> Result<(), ApiError> {
    let target = request_target_bytes(req.uri());
    if target > config.max_uri_bytes {
        return Err(ApiError::for_status(
            StatusCode::URI_TOO_LONG,
            format!(
                "the request target is {target} bytes, longer than the limit of {} bytes \
                 (server.max_uri_bytes); send long searches as POST {{type}}/_search",
                config.max_uri_bytes
            ),
        ));
    }
    let headers = header_section_bytes(req.headers());
    if headers > config.max_header_bytes {
        return Err(ApiError::for_status(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "the request headers are {headers} bytes, more than the limit of {} bytes \
                 (server.max_header_bytes)",
                config.max_header_bytes
            ),
        ));
    }
    Ok(())
}

/// Middleware: refuses oversized heads and puts a deadline on the body.
pub async fn request_limits(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    if let Err(e) = check_head(&state.config, &req) {
        return e.into_response();
    }
    let timeout = Duration::from_secs(state.config.body_read_timeout_secs);
    let req = req.map(|body| {
        if http_body::Body::is_end_stream(&body) {
            body
        } else {
            Body::new(DeadlineBody::new(body, timeout))
        }
    });
    next.run(req).await
}

/// The error a body yields when its deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} seconds (server.body_read_timeout_secs)", .0.as_secs())]
pub struct BodyTimeout(pub Duration);

/// A request body that fails with [`BodyTimeout`] once its deadline has passed.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl DeadlineBody {
    fn new(inner: Body, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timeout,
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        // Data that has arrived is handed on even when the deadline has passed meanwhile.
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` (or anything it wraps) is of type `T`.
pub fn caused_by<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_section_counts_names_values_and_separators() {
        let mut h = axum::http::HeaderMap::new();
        h.insert("host", axum::http::HeaderValue::from_static("x"));
        // "host: x\r\n"
        assert_eq!(header_section_bytes(&h), 9);
    }

    #[test]
    fn request_target_counts_path_and_query() {
        let uri: axum::http::Uri = "/fhir/r4/Task?a=b".parse().expect("uri");
        assert_eq!(request_target_bytes(&uri), 17);
    }

    /// A body whose data never arrives.
    struct Stalled;

    impl http_body::Body for Stalled {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_fails_with_body_timeout() {
        let body = Body::new(DeadlineBody::new(
            Body::new(Stalled),
            Duration::from_millis(20),
        ));
        let err = axum::body::to_bytes(body, 1024)
            .await
            .expect_err("the deadline should fail the body");
        assert!(caused_by::<BodyTimeout>(&err).is_some(), "{err}");
    }

    #[tokio::test]
    async fn a_complete_body_passes() {
        let body = Body::new(DeadlineBody::new(Body::from("abc"), Duration::from_secs(5)));
        let bytes = axum::body::to_bytes(body, 1024).await.expect("body");
        assert_eq!(&bytes[..], b"abc");
    }
}
