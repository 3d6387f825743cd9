//! The one layer around the machine routes (`/healthz`, `/readyz`, whoami,
//! `/auth/verify`, `/oauth/introspect`): what the page stack gives every
//! request, done in one place for routes that answer tens of thousands of
//! calls a second with a few hundred bytes of JSON.
//!
//! It keeps every property the page stack has: a request id (the caller's,
//! or a random one) on the response and in the span, `nosniff`,
//! `Referrer-Policy`, HSTS over https, a handler panic answered with a 500
//! instead of a dropped connection, and the request timeout (408). What it
//! leaves out is what these routes do not need: the span and its two clock
//! reads are only made when the log filter wants them, the timeout's timer
//! is only armed when a handler has to wait (a cached whoami answers on
//! its first poll), and the response passes no body wrapper.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};
use tracing::Span;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Strict-Transport-Security, sent everywhere when the public URL is https.
pub const HSTS: &str = "max-age=31536000; includeSubDomains";

/// Wraps the machine routes; `https` adds HSTS, as on the pages.
#[derive(Clone, Copy)]
pub struct MachineLayer {
    pub https: bool,
    pub timeout: Duration,
}

impl<S> Layer<S> for MachineLayer {
    type Service = Machine<S>;

    fn layer(&self, inner: S) -> Machine<S> {
        Machine {
            inner,
            config: *self,
        }
    }
}

#[derive(Clone)]
pub struct Machine<S> {
    inner: S,
    config: MachineLayer,
}

impl<S> Service<Request> for Machine<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = MachineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let request_id = request
            .headers()
            .get(X_REQUEST_ID)
            .cloned()
            .unwrap_or_else(random_request_id);
        let span = request_span(&request, &request_id);
        // The clock is read for the log line only when there is one to write.
        let started = (!span.is_disabled()).then(Instant::now);
        let inner = {
            let _entered = span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request)))
        };
        let state = match inner {
            Ok(future) => State::Running {
                future: tokio::time::timeout(self.config.timeout, future),
            },
            Err(panic) => State::Panicked {
                response: Some(panic_response(panic)),
            },
        };
        MachineFuture {
            state,
            span,
            started,
            request_id: Some(request_id),
            https: self.config.https,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct MachineFuture<F> {
        #[pin]
        state: State<F>,
        span: Span,
        started: Option<Instant>,
        request_id: Option<HeaderValue>,
        https: bool,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] future: tokio::time::Timeout<F> },
        Panicked { response: Option<Response> },
    }
}

impl<F> Future for MachineFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut response = match this.state.project() {
            StateProj::Running { future } => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(Ok(response)))) => response,
                    Ok(Poll::Ready(Err(_elapsed))) => StatusCode::REQUEST_TIMEOUT.into_response(),
                    Err(panic) => panic_response(panic),
                }
            }
            StateProj::Panicked { response } => response
                .take()
                .expect("a machine-route future is not polled after it is ready"),
        };
        let headers = response.headers_mut();
        if let Some(id) = this.request_id.take() {
            headers.entry(X_REQUEST_ID).or_insert(id);
        }
        headers
            .entry(header::X_CONTENT_TYPE_OPTIONS)
            .or_insert(HeaderValue::from_static("nosniff"));
        // Links carry secrets: never leak a URL to another site.
        headers
            .entry(header::REFERRER_POLICY)
            .or_insert(HeaderValue::from_static("no-referrer"));
        if *this.https {
            headers
                .entry(header::STRICT_TRANSPORT_SECURITY)
                .or_insert(HeaderValue::from_static(HSTS));
        }
        log_response(response.status(), this.started.map(|s| s.elapsed()));
        Poll::Ready(Ok(response))
    }
}

/// The line a response leaves in the log, as the page stack's trace layer
/// writes it: every response when the span is on (`latency` is known then),
/// and a server error whatever the filter's level for requests.
fn log_response(status: StatusCode, latency: Option<Duration>) {
    let status = status.as_u16();
    match latency {
        Some(latency) if status < 500 => {
            tracing::info!(latency = %format_args!("{} ms", latency.as_millis()), status, "finished processing request");
        }
        Some(latency) => {
            tracing::error!(latency = %format_args!("{} ms", latency.as_millis()), status, "response failed");
        }
        None if status >= 500 => tracing::error!(status, "response failed"),
        None => {}
    }
}

/// Request ids are random UUIDs (v4) from the thread's generator: they
/// only need to be unique, not secret, and the system generator would cost
/// a system call per request.
pub fn random_request_id() -> HeaderValue {
    use rand::RngExt;
    let id = uuid::Builder::from_random_bytes(rand::rng().random()).into_uuid();
    let mut buf = uuid::Uuid::encode_buffer();
    HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf))
        .expect("a UUID is a valid header value")
}

/// The span of one request. It names the matched route template, never the
/// raw path or query: those can carry link secrets or `?access_token=`.
pub fn request_span(request: &Request, request_id: &HeaderValue) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("(unmatched)");
    let request_id = request_id.to_str().unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), route, request_id)
}

/// What a panicking handler's caller gets: the error page (the panic
/// itself is logged by the panic hook; this adds which request).
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::response::Html(crate::web::pages::simple_page(
            "Something went wrong",
            "Something went wrong on our side. It has been logged.",
            Some(("/settings/api-tokens", "Back to Keysmith")),
        )),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    fn app(https: bool) -> Router {
        Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route(
                "/panics",
                get(|| async {
                    if true {
                        panic!("a handler bug");
                    }
                    "never"
                }),
            )
            .route(
                "/hangs",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    "never"
                }),
            )
            .layer(MachineLayer {
                https,
                timeout: Duration::from_millis(50),
            })
    }

    async fn call(app: Router, request: Request) -> Response {
        app.oneshot(request).await.unwrap()
    }

    fn get_request(path: &str) -> Request {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn answers_carry_a_fresh_request_id_and_the_headers() {
        let first = call(app(false), get_request("/ok")).await;
        let second = call(app(false), get_request("/ok")).await;
        assert_eq!(first.status(), StatusCode::OK);
        let ids: Vec<uuid::Uuid> = [&first, &second]
            .iter()
            .map(|r| uuid::Uuid::parse_str(r.headers()["x-request-id"].to_str().unwrap()).unwrap())
            .collect();
        assert_eq!(ids[0].get_version_num(), 4);
        assert_ne!(ids[0], ids[1]);
        assert_eq!(first.headers()["x-content-type-options"], "nosniff");
        assert_eq!(first.headers()["referrer-policy"], "no-referrer");
        assert!(first.headers().get("strict-transport-security").is_none());
        let https = call(app(true), get_request("/ok")).await;
        assert_eq!(https.headers()["strict-transport-security"], HSTS);
    }

    #[tokio::test]
    async fn a_callers_request_id_is_kept() {
        let request = Request::get("/ok")
            .header("x-request-id", "trace-me-42")
            .body(Body::empty())
            .unwrap();
        let response = call(app(false), request).await;
        assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    }

    #[tokio::test]
    async fn a_panicking_handler_gets_its_caller_a_500_page() {
        let response = call(app(false), get_request("/panics")).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().contains_key("x-request-id"));
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("Something went wrong"));
    }

    #[tokio::test]
    async fn a_handler_that_does_not_answer_in_time_gets_408() {
        let started = Instant::now();
        let response = call(app(false), get_request("/hangs")).await;
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(response.headers().contains_key("x-request-id"));
    }

    #[tokio::test]
    async fn unknown_methods_pass_through_the_layer() {
        let request = Request::post("/ok").body(Body::empty()).unwrap();
        let response = call(app(false), request).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
}
