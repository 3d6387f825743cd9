//! `AppState`, the one route table, the middleware stack, and starting and
//! stopping the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::Redirect;
use axum::routing::{get, patch, post};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::throttle::Throttles;
use crate::clock::Clock;
use crate::config::{Config, MailTransport};
use crate::machine_layer::{self, MachineLayer};
use crate::mail::MailWaker;
use crate::mail::transport::Transport;
use crate::mail::worker::MailWorker;
use crate::store::{Db, PoolSettings, StoreError};
use crate::{api, auth, web};

/// Shared by every handler. One `Arc`: axum clones the state for every
/// request (and again for each extractor that asks for it), and on a busy
/// server each clone of a shared `Arc` is a contended atomic, so one is
/// cheaper than six.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] holds; its fields are reached through `Deref`.
pub struct Shared {
    pub config: Arc<Config>,
    pub db: Db,
    pub clock: Clock,
    /// Bearer token verification: the cache, rate limits and last-used buffer.
    pub verifier: Arc<crate::verify::Verifier>,
    /// Wakes the mail worker after a commit that enqueued mail.
    pub mail: MailWaker,
    pub throttles: Arc<Throttles>,
    /// The key CSRF tokens are derived with (kept in the database).
    pub csrf_key: auth::csrf::CsrfKey,
    /// The OpenID Connect provider, when one is configured.
    pub oidc: Option<Arc<auth::oidc::Oidc>>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }

    /// The development mailbox page exists (no SMTP configured).
    pub fn dev_mail_enabled(&self) -> bool {
        matches!(self.config.mail, MailTransport::DevOutbox(_))
    }
}

/// Largest request body accepted: forms and JSON here are small.
const BODY_LIMIT: usize = 64 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn router(state: AppState) -> Router {
    let https = state.config.is_https();
    // Everything a browser drives: behind CSRF protection.
    let browser = Router::new()
        .route("/", get(|| async { Redirect::to(web::signin::HOME) }))
        .route(
            "/signin",
            get(web::signin::signin_page).post(web::signin::request_link),
        )
        .route(
            "/signin/link/{secret}",
            get(web::signin::link_page).post(web::signin::use_link),
        )
        .route(auth::oidc::START_PATH, get(web::oidc::start))
        .route(auth::oidc::CALLBACK_PATH, get(web::oidc::callback))
        .route("/signout", post(web::signin::signout))
        .route(
            "/tokens/revoke/{secret}",
            get(web::revoke_link::page).post(web::revoke_link::revoke),
        )
        .route(
            "/setup",
            get(web::setup::setup_page).post(web::setup::complete_setup),
        )
        .route(
            "/session/organization",
            post(web::account::switch_organization),
        )
        .route("/dev/mail", get(web::dev_mail::dev_mail))
        .route(
            "/settings/api-tokens",
            get(web::tokens::page).post(web::tokens::create),
        )
        .route("/settings/api-tokens/new", get(web::tokens::new_form))
        .route("/settings/api-tokens/{id}/label", get(web::tokens::label))
        .route(
            "/settings/api-tokens/{id}/ips",
            get(web::token_ips::settings_ips),
        )
        .route(
            web::token_ips::ALERTS_PATH,
            post(web::token_ips::set_alerts),
        )
        .route(
            "/settings/api-tokens/{id}/rename",
            get(web::tokens::rename_form).post(web::tokens::rename),
        )
        .route(
            "/settings/api-tokens/{id}/toggle",
            post(web::tokens::toggle),
        )
        .route(
            "/settings/api-tokens/{id}/revoke",
            get(web::tokens::revoke_confirm).post(web::tokens::revoke),
        )
        .route(
            "/settings/api-tokens/{id}/regenerate",
            get(web::regenerate::settings_confirm).post(web::regenerate::settings_submit),
        )
        .route("/team", get(web::team::page))
        .route("/team/invite", post(web::team::invite))
        .route("/team/members/{id}", get(web::team::member_page))
        .route(
            "/team/members/{id}/permission",
            get(web::team::confirm_permission).post(web::team::set_permission),
        )
        .route(
            "/team/members/{id}/role",
            get(web::team::confirm_role).post(web::team::set_role),
        )
        .route(
            "/team/members/{id}/status",
            get(web::team::confirm_status).post(web::team::set_status),
        )
        .route(
            "/team/members/{id}/revoke-all",
            get(web::team::revoke_all_confirm).post(web::team::revoke_all),
        )
        .route(
            "/team/members/{id}/tokens/{token}/toggle",
            get(web::team::confirm_token_toggle).post(web::team::toggle_token),
        )
        .route(
            "/team/members/{id}/tokens/{token}/revoke",
            get(web::team::revoke_token_confirm).post(web::team::revoke_token),
        )
        .route(
            "/team/members/{id}/tokens/{token}/regenerate",
            get(web::regenerate::team_confirm).post(web::regenerate::team_submit),
        )
        .route(
            "/team/members/{id}/tokens/{token}/ips",
            get(web::token_ips::team_ips),
        )
        .route("/team/policy", post(web::team::update_policy))
        .route("/team/projects", post(web::team::add_project))
        .route(
            "/team/projects/{id}/rename",
            post(web::team::rename_project),
        )
        .route(
            "/team/projects/{id}/archive",
            post(web::team::archive_project),
        )
        .route(
            "/team/scim-tokens",
            get(web::scim_tokens::page).post(web::scim_tokens::create),
        )
        .route(
            "/team/scim-tokens/{id}/revoke",
            post(web::scim_tokens::revoke),
        )
        .route("/team/audit", get(web::team_audit::page))
        .route("/team/audit.csv", get(web::team_audit::csv))
        .route(
            "/invite/{secret}",
            get(web::team::invitation_page).post(web::team::accept_invitation),
        )
        .route(
            "/api/user/api-keys",
            get(api::api_keys::list).post(api::api_keys::create),
        )
        .route(
            "/api/user/api-keys/{id}",
            patch(api::api_keys::update).delete(api::api_keys::revoke),
        )
        .route(
            "/api/user/api-keys/{id}/regenerate",
            post(api::rotate::regenerate),
        )
        // Error pages in the site's frame; inside CSRF protection, whose
        // token the frame's sign-out form needs.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            web::pages::error_layout,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::csrf::protect,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            web::health::track_writes,
        ))
        // Every page, fragment and JSON answer here is someone's (or holds
        // a CSRF token): never kept by a browser or shared cache.
        .route_layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));

    // The pages' other addresses, and the API routes no hot path goes
    // through (documents, rotation, leak reports).
    let site = browser
        .route("/static/{*path}", get(web::assets::serve))
        // SCIM: bearer-authenticated per organization, outside CSRF.
        .nest(crate::scim::PREFIX, crate::scim::router())
        .route(api::openapi::PATH, get(api::openapi::document))
        .route(api::metadata::PATH, get(api::metadata::metadata))
        .route(api::rotate::PATH, post(api::rotate::self_rotate))
        .route(
            api::secret_scanning::PATH,
            post(api::secret_scanning::reports).layer(axum::Extension(
                api::secret_scanning::Reports(state.config.secret_scanning_keys.clone().map(
                    |source| {
                        Arc::new(crate::service::leaks::KeyRing::new(
                            source,
                            state.clock.clone(),
                        ))
                    },
                )),
            )),
        );
    // What other services and probes call on every request: small JSON
    // answers that no browser renders.
    let machine = Router::new()
        .route("/healthz", get(web::health::healthz))
        .route("/readyz", get(web::health::readyz))
        .route("/api/v2/whoami", get(crate::api::whoami::whoami))
        .route("/auth/verify", api::verify::route())
        .route(
            "/oauth/introspect",
            axum::routing::post(crate::api::introspect::introspect)
                .fallback(crate::api::introspect::method_not_allowed)
                // The one machine route that reads a body (a form).
                .layer(RequestBodyLimitLayer::new(BODY_LIMIT)),
        );
    let latency = || tower::util::option_layer(crate::metrics::route_latency(&state.config));
    let site = site.route_layer(latency());
    let machine = machine.route_layer(latency());

    // Unknown addresses: a 404 page in the frame (JSON under the APIs).
    let not_found = axum::handler::Handler::layer(
        web::pages::not_found,
        middleware::from_fn_with_state(state.clone(), auth::csrf::protect),
    );
    // Headers that matter where a browser renders what it gets: the pages,
    // their assets, error pages and the JSON a page's script reads. Bodies
    // there can be large, so they are compressed for clients that ask.
    // The machine routes answer a few hundred bytes of JSON that nothing
    // renders or frames: a policy for documents, or gzip, is work on every
    // call for nothing (`nosniff`, `Referrer-Policy` and HSTS apply to both,
    // below).
    let mut site = site.fallback(not_found);
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        site = site.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    let site = site.layer(CompressionLayer::new());

    let mut everywhere = vec![
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Links carry secrets: never leak a URL to another site.
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    if https {
        everywhere.push((header::STRICT_TRANSPORT_SECURITY, machine_layer::HSTS));
    }
    let mut site = site;
    for (name, value) in everywhere {
        site = site.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    let x_request_id = HeaderName::from_static("x-request-id");
    let site = site.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(
                x_request_id.clone(),
                RandomRequestId,
            ))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span)
                    .on_response(DefaultOnResponse::new().level(Level::INFO)),
            )
            .layer(PropagateRequestIdLayer::new(x_request_id))
            .layer(CatchPanicLayer::custom(machine_layer::panic_response))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                REQUEST_TIMEOUT,
            ))
            .layer(RequestBodyLimitLayer::new(BODY_LIMIT)),
    );
    // The machine routes get the same request id, headers, panic answer
    // and timeout from one layer (see `machine_layer`).
    let machine = machine.layer(MachineLayer {
        https,
        timeout: REQUEST_TIMEOUT,
    });
    site.merge(machine).with_state(state)
}

/// Request ids are random UUIDs (v4); see [`machine_layer::random_request_id`].
#[derive(Clone, Copy)]
struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        Some(RequestId::new(machine_layer::random_request_id()))
    }
}

/// The span of one page request (see [`machine_layer::request_span`]).
fn request_span(request: &Request) -> tracing::Span {
    let unknown = HeaderValue::from_static("-");
    let request_id = request.headers().get("x-request-id").unwrap_or(&unknown);
    machine_layer::request_span(request, request_id)
}

/// Why the server could not start; each message is one line an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("KEYSMITH_SMTP_URL: {0}")]
    Mail(String),
    #[error(
        "cannot listen on {addr}: {reason} (is another server using it? set KEYSMITH_ADDR to a free address)"
    )]
    Bind {
        addr: SocketAddr,
        reason: std::io::Error,
    },
    #[error("KEYSMITH_SCIM_TOKENS: {0}")]
    Scim(String),
    #[error("KEYSMITH_METRICS_ADDR: {0}")]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A server running in the background; `shutdown` stops it gracefully.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: AppState,
    /// The first-run setup URL, while the database has no organization.
    pub setup_url: Option<String>,
    /// Where `/metrics` is served, when `KEYSMITH_METRICS_ADDR` is set.
    pub metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    stop_workers: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

impl RunningServer {
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(std::io::Error::other)??;
        // Background workers finish what they hold, then stop.
        let _ = self.stop_workers.send(true);
        for worker in self.workers.drain(..) {
            let _ = worker.await;
        }
        // Last-used entries still in memory are written before the pool closes.
        self.state.verifier.shutdown().await;
        self.state.db.close().await;
        Ok(())
    }

    /// Resolves when the server stops on its own (it only does on an I/O error).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        (&mut self.task).await.map_err(std::io::Error::other)?
    }
}

/// Opens and migrates the store, binds the address and starts serving.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let db = Db::connect(&config.database_url, &PoolSettings::default()).await?;
    db.migrate().await?;
    crate::scim::auth::check_configured(&db, &config.scim_tokens)
        .await
        .map_err(StartError::Scim)?;
    let csrf_key = auth::csrf::CsrfKey::load(&db).await?;
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|reason| StartError::Bind {
            addr: config.addr,
            reason,
        })?;
    let addr = listener.local_addr().map_err(|reason| StartError::Bind {
        addr: config.addr,
        reason,
    })?;
    let mut config = config;
    if config.public_url.port() == Some(0) {
        // KEYSMITH_ADDR asked for any free port and no public URL was given:
        // links must name the port the OS actually chose.
        let _ = config.public_url.set_port(Some(addr.port()));
    }
    let oidc = match &config.oidc {
        Some(settings) => Some(Arc::new(auth::oidc::Oidc::new(
            settings.clone(),
            &config.public_url,
        )?)),
        None => None,
    };
    let config = Arc::new(config);
    let clock = Clock::default();
    let mail = MailWaker::default();
    let verifier = Arc::new(crate::verify::Verifier::new(
        db.clone(),
        Arc::clone(&config),
        clock.clone(),
        mail.clone(),
    ));
    let state = AppState::new(Shared {
        config,
        db,
        clock,
        verifier,
        mail,
        throttles: Arc::new(Throttles::default()),
        csrf_key,
        oidc,
    });
    if let Some(oidc) = state.oidc.clone() {
        web::oidc::check_provider_at_start(oidc);
    }
    let transport = Transport::from_config(&state.config.mail).map_err(StartError::Mail)?;
    let (stop_workers, workers_stopped) = watch::channel(false);
    // The recorder first: what the workers count from their first pass on
    // (a message failing at start-up) would otherwise go nowhere.
    let metrics = crate::metrics::start(&state, workers_stopped.clone()).await?;
    let metrics_addr = metrics.as_ref().map(|m| m.addr);
    let mut workers = vec![
        MailWorker {
            db: state.db.clone(),
            config: state.config.clone(),
            clock: state.clock.clone(),
            transport,
            waker: state.mail.clone(),
        }
        .spawn(workers_stopped.clone()),
        crate::mail::reminders::spawn(
            state.db.clone(),
            state.clock.clone(),
            state.mail.clone(),
            workers_stopped.clone(),
        ),
        crate::auth::session::spawn_sweeper(
            state.db.clone(),
            state.clock.clone(),
            state.config.session_idle_timeout,
            workers_stopped.clone(),
        ),
    ];
    workers.extend(metrics.map(|m| m.task));
    let setup_url =
        web::setup::prepare_setup_link(&state.db, &state.config, state.clock.unix()).await?;
    if let Some(url) = &setup_url {
        tracing::info!(%url, "no organization yet: open the setup URL to create one");
    }

    state.verifier.start_background();
    let app = router(state.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        crate::serve::serve(listener, app, async {
            let _ = stopped.await;
        })
        .await
    });
    tracing::info!(%addr, database = state.db.backend_name(), "keysmith is listening");
    Ok(RunningServer {
        addr,
        state,
        setup_url,
        metrics_addr,
        stop: Some(stop),
        task,
        stop_workers,
        workers,
    })
}

/// `keysmith serve`: runs until SIGINT or SIGTERM, then drains and exits.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let mut server = start(config).await?;
    println!(
        "Keysmith is running at {}  (Ctrl-C stops it)",
        server.state.config.public_url
    );
    if let Some(url) = &server.setup_url {
        println!();
        println!("First run: no organization exists yet. Open this link to create yours:");
        println!();
        println!("    {url}");
        println!();
    }
    tokio::select! {
        result = server.wait() => return Ok(result?),
        () = shutdown_signal() => {}
    }
    tracing::info!("shutting down");
    server.shutdown().await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
