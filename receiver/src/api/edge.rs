//! What every route's request and answer pass through, in one layer: CORS ([`super::cors`]),
//! then, around the handler, error answers re-worded as JSON ([`crate::error::json_errors`]).
//!
//! Written as one service rather than axum's `from_fn` and `map_response`: each of those, on
//! every request, clones the service it wraps, and `from_fn` builds a `Next` and boxes a future
//! of its own; together they were a sixth of a lookup's instructions. Here a request costs one
//! boxed future.

use std::convert::Infallible;
use std::future::{Future, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use tower_layer::Layer;
use tower_service::Service;

use crate::api::cors::{self, Admission};
use crate::app::Shared;

/// Wraps each route in an [`Edge`].
#[derive(Clone)]
pub struct EdgeLayer {
    shared: Arc<Shared>,
}

impl EdgeLayer {
    pub fn new(shared: Arc<Shared>) -> EdgeLayer {
        EdgeLayer { shared }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// A route with CORS and JSON error answers around it.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    shared: Arc<Shared>,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Answer {
        let origin = match cors::admit(&self.shared, &request) {
            Admission::Answered(answer) => return Box::pin(ready(Ok(answer))),
            Admission::Allowed(origin) => Some(origin),
            Admission::Untouched => None,
        };
        let handled = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = handled.await;
            let response = crate::error::json_errors(response).await;
            Ok(match origin {
                Some(origin) => cors::allowed_answer(response, origin),
                None => response,
            })
        })
    }
}
