//! The reviewers' web page: server-rendered HTML (askama templates, escaped by default) on its
//! own HTTPS listener, with local accounts, sessions, CSRF tokens and an audit log. No
//! JavaScript: every change is a form post.
//!
//! Every page takes `?as_of=DATE` and then shows the state recorded by that moment.

mod chart;
mod display;
mod exports;
mod fleet;
mod pages;
mod session;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::{HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tracing::{error, info};

use crate::accounts::Throttle;
use crate::ca::CertificateAuthority;
use crate::model::{format_unix_ms, now_unix_ms};
use crate::store::Store;

pub use session::{LOGIN_COOKIE, SESSION_COOKIE};

/// The file `serve` writes with the address the web page listens on.
pub fn address_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("web.addr")
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    /// Signs checkpoints and bundle manifests for exports.
    ca: Arc<CertificateAuthority>,
    ca_fingerprint: String,
    /// How agents reach the collector, for the enrolment command line.
    grpc_url: String,
    /// Sign-in attempts on the web page.
    passwords: Throttle,
    /// Wrong API tokens.
    tokens: Throttle,
}

impl AppState {
    pub fn new(store: Arc<Store>, ca: Arc<CertificateAuthority>, grpc_url: String) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                store,
                ca_fingerprint: ca.fingerprint(),
                ca,
                grpc_url,
                passwords: Throttle::for_passwords(),
                tokens: Throttle::for_tokens(),
            }),
        }
    }

    /// The collector CA's fingerprint and how agents reach the collector, for enrolment.
    pub(crate) fn enrolment_target(&self) -> (&str, &str) {
        (&self.inner.ca_fingerprint, &self.inner.grpc_url)
    }

    /// The collector's CA, to sign what exports carry (checkpoints, bundle manifests).
    pub(crate) fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.inner.ca
    }

    /// The throttle of wrong API tokens.
    pub(crate) fn token_throttle(&self) -> &Throttle {
        &self.inner.tokens
    }

    /// Runs a database call off the async runtime.
    pub(crate) async fn db<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, WebError> + Send + 'static,
    ) -> Result<T, WebError> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| WebError::Internal(format!("a page task failed: {e}")))?
    }
}

/// Serves the web page on `listener` until `shutdown` completes.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let address = listener
        .local_addr()
        .context("read the web listener's address")?;
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    info!(address = %address, "web page listening (https)");
    axum_server::from_tcp_rustls(
        listener,
        axum_server::tls_rustls::RustlsConfig::from_config(tls),
    )
    .context("serve the web page")?
    .handle(handle)
    .serve(router(state).into_make_service_with_connect_info::<SocketAddr>())
    .await
    .context("serve the web page")
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(fleet::overview))
        .route("/controls/{framework}/{control}", get(fleet::control))
        .route("/hosts", get(fleet::hosts))
        .route("/hosts/{agent_id}", get(fleet::host))
        .route("/evidence/{agent_id}/{sequence}", get(fleet::evidence))
        .route("/actions", get(pages::actions))
        .route("/actions/{id}", get(pages::action))
        .route("/actions/{id}/step", post(pages::action_step))
        .route(
            "/enrolment",
            get(pages::enrolment).post(pages::create_token),
        )
        .route("/audit", get(pages::audit))
        .route("/exports", get(exports::exports))
        .route("/exports/download", get(exports::download))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/static/style.css", get(style))
        .nest("/api/v1", crate::api::router())
        .fallback(not_found)
        .layer(middleware::from_fn(guard))
        .with_state(state)
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../templates/web/style.css"),
    )
        .into_response()
}

async fn not_found() -> WebError {
    WebError::NotFound("there is no such page".into())
}

/// Refuses cross-site posts before any handler runs, and sets the security headers of every
/// response. The session cookie is SameSite=Strict and every form carries a CSRF token; this
/// is the third wall, and the one that names the refusal.
async fn guard(request: Request, next: Next) -> Response {
    if request.method() == Method::POST
        && let Err(why) = same_origin(request.headers())
    {
        return WebError::Forbidden(format!("cross-site request refused: {why}")).into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// A browser names where a request comes from; anything but this site is refused. Browsers
/// that send `Sec-Fetch-Site` are judged by it; older ones by `Origin`. Scripts send neither
/// and meet the CSRF token (or, on the API, need a bearer token) instead.
fn same_origin(headers: &axum::http::HeaderMap) -> Result<(), String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return match site {
            "same-origin" | "none" => Ok(()),
            other => Err(format!("the browser says it came from a {other} page")),
        };
    }
    if let Some(origin) = text("origin") {
        let host = text("host").unwrap_or_default();
        if origin != format!("https://{host}") {
            return Err(format!("it came from {origin}, not from this site"));
        }
    }
    Ok(())
}

/// Why a page could not be shown, as a page.
#[derive(Debug)]
pub enum WebError {
    NotFound(String),
    BadRequest(String),
    Forbidden(String),
    TooMany(String),
    /// Not signed in: go to the sign-in page, then back to `next`.
    SignIn {
        next: String,
    },
    Internal(String),
}

impl std::fmt::Display for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WebError::NotFound(m)
            | WebError::BadRequest(m)
            | WebError::Forbidden(m)
            | WebError::TooMany(m)
            | WebError::Internal(m) => f.write_str(m),
            WebError::SignIn { .. } => f.write_str("not signed in"),
        }
    }
}

impl From<crate::store::StoreError> for WebError {
    fn from(e: crate::store::StoreError) -> Self {
        WebError::Internal(e.to_string())
    }
}

impl From<crate::status::StatusError> for WebError {
    fn from(e: crate::status::StatusError) -> Self {
        WebError::Internal(e.to_string())
    }
}

#[derive(Template)]
#[template(path = "web/error.html")]
struct ErrorPage<'a> {
    status: u16,
    title: &'a str,
    message: &'a str,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self {
            WebError::SignIn { next } => {
                let target = format!("/login?next={}", encode_query(next));
                return Redirect::to(&target).into_response();
            }
            WebError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m.clone()),
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Bad request", m.clone()),
            WebError::Forbidden(m) => (StatusCode::FORBIDDEN, "Forbidden", m.clone()),
            WebError::TooMany(m) => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                m.clone(),
            ),
            WebError::Internal(m) => {
                error!(error = %m, "web page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "the collector could not show this page; its log says why".to_owned(),
                )
            }
        };
        let page = ErrorPage {
            status: status.as_u16(),
            title,
            message: &message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, message).into_response(),
        }
    }
}

/// Percent-encodes a value for a query string.
pub fn encode_query(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The moment a page shows: now, or the `as_of` the reviewer picked.
#[derive(Debug, Clone)]
pub struct AsOf {
    pub ms: i64,
    /// As given, for the date picker and for links; empty for now.
    pub given: String,
}

impl AsOf {
    pub fn is_now(&self) -> bool {
        self.given.is_empty()
    }

    /// `?as_of=…` to append to links, or nothing.
    pub fn query(&self) -> String {
        if self.is_now() {
            String::new()
        } else {
            format!("as_of={}", encode_query(&self.given))
        }
    }

    /// The date part for the date picker.
    pub fn date(&self) -> String {
        self.given.chars().take(10).collect()
    }

    pub fn label(&self) -> String {
        if self.is_now() {
            format!("now ({})", format_unix_ms(self.ms))
        } else {
            format_unix_ms(self.ms)
        }
    }
}

#[derive(serde::Deserialize)]
struct AsOfQuery {
    as_of: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for AsOf {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = axum::extract::Query::<AsOfQuery>::try_from_uri(&parts.uri)
            .map_err(|e| WebError::BadRequest(format!("the query string: {e}")))?;
        let given = query.0.as_of.unwrap_or_default().trim().to_owned();
        if given.is_empty() {
            return Ok(AsOf {
                ms: now_unix_ms(),
                given,
            });
        }
        let ms = crate::cli::parse_moment(&given, crate::cli::DayEdge::End)
            .map_err(|e| WebError::BadRequest(format!("as of: {e}")))?;
        Ok(AsOf { ms, given })
    }
}
