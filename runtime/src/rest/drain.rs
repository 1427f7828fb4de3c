//! Reads what is left of a request body before the answer goes out.
//!
//! A request refused before its body is read (over `--max_body_bytes`, a body on a GET, 429
//! before decoding) used to be answered while the client was still sending; the connection then
//! closed with unread data, and clients that write the whole body before reading (Python's
//! requests and urllib, the usual TF Serving clients) saw a broken pipe instead of the JSON
//! error. This layer hands the handler a body it can read or leave, and once the handler has
//! answered, reads and discards the rest, up to [`DRAIN_MAX_BYTES`] and [`DRAIN_MAX_TIME`].

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;

/// The most of an unread body read and discarded after the answer.
pub const DRAIN_MAX_BYTES: usize = 128 * 1024 * 1024;
/// The longest a client may take to finish sending a body nobody will read.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// The middleware: see the module docs.
pub async fn drain_unread_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if http_body::Body::is_end_stream(&body) {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let shared = Arc::new(Mutex::new(Some(body)));
    let handed = Body::new(Shared(shared.clone()));
    let response = next.run(Request::from_parts(parts, handed)).await;
    let left = shared.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(mut body) = left {
        let drain = async {
            let mut read = 0usize;
            while read <= DRAIN_MAX_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_MAX_TIME, drain).await;
    }
    response
}

/// The handler's view of a body the middleware keeps a hold on.
struct Shared(Arc<Mutex<Option<Body>>>);

impl http_body::Body for Shared {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or_else(http_body::SizeHint::default, http_body::Body::size_hint)
    }
}
