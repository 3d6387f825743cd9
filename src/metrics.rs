//! Prometheus metrics: every metric name and label, the recorder, and the
//! listener Prometheus scrapes. Other modules record through the one-line
//! functions here (`metrics::verification(Outcome::Valid)`), which cost an
//! atomic load when metrics are off and an atomic add when they are on: the
//! handles for every fixed label value are registered once, at start-up, so
//! the hot path neither allocates a label nor looks a key up under a lock.
//!
//! `/metrics` is served on `KEYSMITH_METRICS_ADDR` only, never on the main
//! listener: the numbers describe the deployment (token counts, traffic,
//! mail backlog), which is the operator's business and not the internet's,
//! and a separate port lets the operator open it to the scraper alone.
//! Gauges that need the database (outbox depth) are read when Prometheus
//! scrapes, so they cost nothing while nobody is looking.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, State};
use axum::http::{Request, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::AppState;
use crate::config::Config;
use crate::store::verification::LastUse;
use crate::verify::rate_limit::{RateDecision, RequestClass};

/// Bearer checks by outcome (`outcome`, see [`Outcome`]).
pub const VERIFICATIONS: &str = "keysmith_verifications_total";
/// Verifier cache look-ups that were answered from memory.
pub const CACHE_HITS: &str = "keysmith_verify_cache_hits_total";
/// Verifier look-ups that had to read the database.
pub const CACHE_MISSES: &str = "keysmith_verify_cache_misses_total";
/// Tokens held in the verifier cache.
pub const CACHE_ENTRIES: &str = "keysmith_verify_cache_entries";
/// Requests refused by a token's rate limit (`class`: read or write).
pub const RATE_LIMITED: &str = "keysmith_rate_limited_total";
/// Handling time per matched route template (`route`).
pub const ROUTE_LATENCY: &str = "keysmith_http_request_duration_seconds";
/// Mail delivery attempts (`result`: delivered or failed).
pub const MAIL_ATTEMPTS: &str = "keysmith_mail_delivery_attempts_total";
/// Outbox messages waiting to be delivered.
pub const OUTBOX_PENDING: &str = "keysmith_mail_outbox_pending";
/// Age of the oldest message waiting to be delivered (0 when none waits).
pub const OUTBOX_OLDEST_AGE: &str = "keysmith_mail_outbox_oldest_pending_age_seconds";
/// Outbox messages that failed for good (until `keysmith mail retry`).
pub const OUTBOX_FAILED: &str = "keysmith_mail_outbox_failed";
/// Last-used entries written to the database.
pub const LAST_USED_WRITTEN: &str = "keysmith_last_used_written_total";
/// How far behind the newest written batch of last-used entries was: the
/// age of its oldest use when it reached the database.
pub const LAST_USED_LAG: &str = "keysmith_last_used_batch_lag_seconds";
/// Connections the database pool holds, and how many of them are idle.
pub const POOL_SIZE: &str = "keysmith_db_pool_connections";
pub const POOL_IDLE: &str = "keysmith_db_pool_idle_connections";

/// Seconds; from a cached whoami (well under a millisecond) to a request
/// that ran into the 30 s timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How one presented bearer token fared. Every check counts once, under
/// the first reason it was refused for, or `valid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Valid,
    /// No token has this secret (or its shape or checksum is wrong).
    Unknown,
    Revoked,
    Expired,
    /// The token is disabled (paused) by its owner or a superuser.
    Disabled,
    /// Its owner's membership is disabled.
    MemberDisabled,
    /// Its owner is no longer a member of the organization.
    NotAMember,
    /// Its owner may no longer hold tokens.
    NotPermitted,
    /// A replaced secret, past its grace period.
    Replaced,
    InsufficientScope,
    RateLimited,
    /// The database could not be asked.
    Unavailable,
}

impl Outcome {
    const ALL: [Outcome; 12] = [
        Outcome::Valid,
        Outcome::Unknown,
        Outcome::Revoked,
        Outcome::Expired,
        Outcome::Disabled,
        Outcome::MemberDisabled,
        Outcome::NotAMember,
        Outcome::NotPermitted,
        Outcome::Replaced,
        Outcome::InsufficientScope,
        Outcome::RateLimited,
        Outcome::Unavailable,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Valid => "valid",
            Outcome::Unknown => "unknown",
            Outcome::Revoked => "revoked",
            Outcome::Expired => "expired",
            Outcome::Disabled => "disabled",
            Outcome::MemberDisabled => "member_disabled",
            Outcome::NotAMember => "not_a_member",
            Outcome::NotPermitted => "not_permitted",
            Outcome::Replaced => "replaced",
            Outcome::InsufficientScope => "insufficient_scope",
            Outcome::RateLimited => "rate_limited",
            Outcome::Unavailable => "unavailable",
        }
    }
}

/// The registered handles, one per fixed label value.
struct Handles {
    verifications: [Counter; Outcome::ALL.len()],
    cache_hits: Counter,
    cache_misses: Counter,
    cache_entries: Gauge,
    rate_limited_reads: Counter,
    rate_limited_writes: Counter,
    mail_delivered: Counter,
    mail_failed: Counter,
    outbox_pending: Gauge,
    outbox_oldest_age: Gauge,
    outbox_failed: Gauge,
    last_used_written: Counter,
    last_used_lag: Gauge,
    pool_size: Gauge,
    pool_idle: Gauge,
}

struct Installed {
    prometheus: PrometheusHandle,
    handles: Handles,
}

/// The recorder is process-wide (the `metrics` facade has one), so it is
/// installed once, by the first server that asks, and shared after that.
static INSTALLED: OnceLock<Result<Installed, String>> = OnceLock::new();

fn handles() -> Option<&'static Handles> {
    match INSTALLED.get() {
        Some(Ok(installed)) => Some(&installed.handles),
        _ => None,
    }
}

fn install() -> Result<&'static Installed, String> {
    INSTALLED
        .get_or_init(|| {
            let prometheus = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(ROUTE_LATENCY.into()), LATENCY_BUCKETS)
                .map_err(|e| e.to_string())?
                .install_recorder()
                .map_err(|e| e.to_string())?;
            describe();
            let handles = Handles {
                verifications: Outcome::ALL
                    .map(|o| metrics::counter!(VERIFICATIONS, "outcome" => o.label())),
                cache_hits: metrics::counter!(CACHE_HITS),
                cache_misses: metrics::counter!(CACHE_MISSES),
                cache_entries: metrics::gauge!(CACHE_ENTRIES),
                rate_limited_reads: metrics::counter!(RATE_LIMITED, "class" => "read"),
                rate_limited_writes: metrics::counter!(RATE_LIMITED, "class" => "write"),
                mail_delivered: metrics::counter!(MAIL_ATTEMPTS, "result" => "delivered"),
                mail_failed: metrics::counter!(MAIL_ATTEMPTS, "result" => "failed"),
                outbox_pending: metrics::gauge!(OUTBOX_PENDING),
                outbox_oldest_age: metrics::gauge!(OUTBOX_OLDEST_AGE),
                outbox_failed: metrics::gauge!(OUTBOX_FAILED),
                last_used_written: metrics::counter!(LAST_USED_WRITTEN),
                last_used_lag: metrics::gauge!(LAST_USED_LAG),
                pool_size: metrics::gauge!(POOL_SIZE),
                pool_idle: metrics::gauge!(POOL_IDLE),
            };
            Ok(Installed {
                prometheus,
                handles,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(VERIFICATIONS, "Bearer token checks by outcome.");
    describe_counter!(
        CACHE_HITS,
        "Token look-ups answered from the verifier cache."
    );
    describe_counter!(CACHE_MISSES, "Token look-ups that read the database.");
    describe_gauge!(CACHE_ENTRIES, "Tokens held in the verifier cache.");
    describe_counter!(RATE_LIMITED, "Requests refused by a token's rate limit.");
    describe_histogram!(
        ROUTE_LATENCY,
        Unit::Seconds,
        "Request handling time per matched route."
    );
    describe_counter!(MAIL_ATTEMPTS, "Mail delivery attempts by result.");
    describe_gauge!(OUTBOX_PENDING, "Mail messages waiting to be delivered.");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest mail message waiting to be delivered."
    );
    describe_gauge!(OUTBOX_FAILED, "Mail messages that failed for good.");
    describe_counter!(
        LAST_USED_WRITTEN,
        "Last-used entries written to the database."
    );
    describe_gauge!(
        LAST_USED_LAG,
        Unit::Seconds,
        "Age of the oldest use in the latest last-used batch when it was written."
    );
    describe_gauge!(POOL_SIZE, "Connections held by the database pool.");
    describe_gauge!(POOL_IDLE, "Idle connections in the database pool.");
}

/// One bearer check ended with `outcome`.
#[inline]
pub fn verification(outcome: Outcome) {
    if let Some(h) = handles() {
        h.verifications[outcome as usize].increment(1);
    }
}

/// The outcome of an introspection (which has no rate limit or scope to
/// refuse for).
pub fn introspected(
    verdict: &Result<crate::verify::Verdict, crate::verify::Unavailable>,
    verifier: &crate::verify::Verifier,
    digest: &crate::token::TokenDigest,
) -> Outcome {
    use crate::verify::Verdict;
    match verdict {
        Ok(Verdict::Active(_)) => Outcome::Valid,
        Ok(Verdict::Inactive) => verifier.refusal_reason(digest),
        Ok(Verdict::Replaced(_)) => Outcome::Replaced,
        Err(_) => Outcome::Unavailable,
    }
}

/// The verifier answered from memory (`true`) or read the database.
#[inline]
pub fn cache(hit: bool) {
    if let Some(h) = handles() {
        if hit { &h.cache_hits } else { &h.cache_misses }.increment(1);
    }
}

/// A verified token's request was counted against its rate limit: the
/// check ends as `valid` or `rate_limited`.
#[inline]
pub fn admitted(decision: &RateDecision) {
    let Some(h) = handles() else { return };
    if decision.allowed {
        h.verifications[Outcome::Valid as usize].increment(1);
    } else {
        h.verifications[Outcome::RateLimited as usize].increment(1);
        match decision.class {
            RequestClass::Read => &h.rate_limited_reads,
            RequestClass::Write => &h.rate_limited_writes,
        }
        .increment(1);
    }
}

/// The mail worker handed a message over (`true`) or failed to.
pub fn mail_attempt(delivered: bool) {
    if let Some(h) = handles() {
        if delivered {
            &h.mail_delivered
        } else {
            &h.mail_failed
        }
        .increment(1);
    }
}

/// A batch of last-used entries reached the database at `now` (unix seconds).
pub fn last_used_written(batch: &[LastUse], now: i64) {
    let Some(h) = handles() else { return };
    h.last_used_written.increment(batch.len() as u64);
    if let Some(oldest) = batch.iter().map(|u| u.at).min() {
        h.last_used_lag
            .set(now.saturating_sub(oldest).max(0) as f64);
    }
}

/// The route-latency layer, when metrics are on (for
/// `tower::util::option_layer`: without metrics the routes are not wrapped).
pub fn route_latency(config: &Config) -> Option<RouteLatencyLayer> {
    config.metrics_addr.map(|_| RouteLatencyLayer)
}

/// Times each request of the route it wraps (`Router::route_layer`, so
/// after routing: the label is the matched template such as
/// `/settings/api-tokens/{id}/rename`, never the path, which can hold ids
/// and link secrets).
#[derive(Debug, Clone, Copy)]
pub struct RouteLatencyLayer;

impl<S> tower::Layer<S> for RouteLatencyLayer {
    type Service = RouteLatency<S>;

    fn layer(&self, inner: S) -> RouteLatency<S> {
        RouteLatency {
            inner,
            histogram: Arc::default(),
        }
    }
}

/// See [`RouteLatencyLayer`]. `route_layer` wraps each route separately, so
/// one service sees one template: its histogram handle is looked up on the
/// first request and kept.
#[derive(Debug, Clone)]
pub struct RouteLatency<S> {
    inner: S,
    histogram: Arc<OnceLock<(Box<str>, Histogram)>>,
}

impl<S> RouteLatency<S> {
    fn histogram_for(&self, route: &str) -> Option<Histogram> {
        handles()?;
        let (cached_route, histogram) = self.histogram.get_or_init(|| {
            (
                route.into(),
                metrics::histogram!(ROUTE_LATENCY, "route" => route.to_owned()),
            )
        });
        Some(if **cached_route == *route {
            histogram.clone()
        } else {
            // Never happens with one route per service; stay correct anyway.
            metrics::histogram!(ROUTE_LATENCY, "route" => route.to_owned())
        })
    }
}

impl<S, B> tower::Service<Request<B>> for RouteLatency<S>
where
    S: tower::Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let histogram = request
            .extensions()
            .get::<MatchedPath>()
            .and_then(|route| self.histogram_for(route.as_str()));
        Timed {
            inner: self.inner.call(request),
            started: Instant::now(),
            histogram,
        }
    }
}

pin_project_lite::pin_project! {
    /// A route's response future, recording its time when it completes.
    pub struct Timed<F> {
        #[pin]
        inner: F,
        started: Instant,
        histogram: Option<Histogram>,
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Some(histogram) = this.histogram.take() {
            histogram.record(this.started.elapsed());
        }
        Poll::Ready(output)
    }
}

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot listen on {addr}: {reason} (set KEYSMITH_METRICS_ADDR to a free address)")]
    Bind {
        addr: SocketAddr,
        reason: std::io::Error,
    },
    #[error("cannot install the metrics recorder: {0}")]
    Recorder(String),
}

/// A running metrics listener.
pub struct MetricsListener {
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

/// Starts `/metrics` on `KEYSMITH_METRICS_ADDR` (nothing when unset); it
/// stops when `stop` turns true.
pub async fn start(
    state: &AppState,
    mut stop: watch::Receiver<bool>,
) -> Result<Option<MetricsListener>, MetricsError> {
    let Some(addr) = state.config.metrics_addr else {
        return Ok(None);
    };
    install().map_err(MetricsError::Recorder)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|reason| MetricsError::Bind { addr, reason })?;
    let addr = listener
        .local_addr()
        .map_err(|reason| MetricsError::Bind { addr, reason })?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(state.clone());
    let task = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|stop| *stop).await;
        };
        if let Err(e) = crate::serve::serve(listener, app, stopped).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    tracing::info!(%addr, "metrics are served at /metrics");
    Ok(Some(MetricsListener { addr, task }))
}

/// The most a scrape waits for the outbox count: a slow database must not
/// hold the scrape past Prometheus's own timeout (10 s by default).
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

async fn scrape(State(state): State<AppState>) -> impl IntoResponse {
    let Some(Ok(installed)) = INSTALLED.get() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "metrics are not installed\n".to_string(),
        );
    };
    refresh(&state, &installed.handles).await;
    // Histograms buffer their samples until upkeep folds them in.
    installed.prometheus.run_upkeep();
    (
        axum::http::StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        installed.prometheus.render(),
    )
}

/// Reads the gauges that are states rather than events.
async fn refresh(state: &AppState, h: &Handles) {
    h.cache_entries.set(state.verifier.cached_tokens() as f64);
    let pool = state.db.pool();
    h.pool_size.set(f64::from(pool.size()));
    h.pool_idle.set(pool.num_idle() as f64);
    match tokio::time::timeout(REFRESH_TIMEOUT, crate::store::outbox::depth(&state.db)).await {
        Ok(Ok(depth)) => {
            h.outbox_pending.set(depth.pending as f64);
            h.outbox_failed.set(depth.failed as f64);
            let age = depth
                .oldest_pending_created_at
                .map_or(0, |at| state.clock.unix().saturating_sub(at).max(0));
            h.outbox_oldest_age.set(age as f64);
        }
        // The gauges keep their last values; Prometheus sees the scrape succeed.
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: cannot read the mail outbox"),
        Err(_) => tracing::warn!("metrics: reading the mail outbox timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_are_distinct_and_indexed_by_position() {
        let labels: std::collections::HashSet<_> = Outcome::ALL.iter().map(|o| o.label()).collect();
        assert_eq!(labels.len(), Outcome::ALL.len());
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{o:?}");
        }
    }
}
