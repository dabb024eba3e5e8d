//! Who calls the API (an API token, never a cookie), how it says what it wants (extractors that
//! answer a bad request in JSON), and how it is told what went wrong.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tracing::error;

use crate::accounts::{self, Principal};
use crate::model::now_unix_ms;
use crate::store::AuditEntry;
use crate::web::{AppState, AsOf, WebError};

/// Why a request was not answered, as `{"error": "..."}` with its status. The message says what
/// was wrong and what to do; an internal error's cause goes to the log, not to the caller.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    /// No usable API token; answered with `WWW-Authenticate: Bearer`.
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    MethodNotAllowed(String),
    /// The resource's state does not allow the request.
    Conflict(String),
    TooMany {
        message: String,
        retry_after_secs: i64,
    },
    Internal(String),
}

#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.as_str()),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m.as_str()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m.as_str()),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m.as_str()),
            ApiError::MethodNotAllowed(m) => (StatusCode::METHOD_NOT_ALLOWED, m.as_str()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, m.as_str()),
            ApiError::TooMany { message, .. } => (StatusCode::TOO_MANY_REQUESTS, message.as_str()),
            ApiError::Internal(m) => {
                error!(error = %m, "api request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the collector could not answer; its log says why",
                )
            }
        };
        let mut response = (status, Json(ErrorBody { error: message })).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"evident\""),
                );
            }
            ApiError::TooMany {
                retry_after_secs, ..
            } => {
                if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    headers.insert(header::RETRY_AFTER, value);
                }
            }
            _ => {}
        }
        response
    }
}

impl From<WebError> for ApiError {
    fn from(e: WebError) -> Self {
        match e {
            WebError::NotFound(m) => ApiError::NotFound(m),
            WebError::BadRequest(m) => ApiError::BadRequest(m),
            WebError::Forbidden(m) => ApiError::Forbidden(m),
            WebError::TooMany(m) => ApiError::TooMany {
                message: m,
                retry_after_secs: 1,
            },
            WebError::SignIn { .. } => ApiError::Unauthorized(NO_TOKEN.into()),
            WebError::Internal(m) => ApiError::Internal(m),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::status::StatusError> for ApiError {
    fn from(e: crate::status::StatusError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

const NO_TOKEN: &str = "no API token: send `Authorization: Bearer eva_…`; an administrator creates one with `evident-collector user token NAME`";

/// The person an API token stands for, and where the request came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Principal,
    pub address: Option<String>,
}

/// The bearer token of `Authorization`, if the header holds one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip().to_string());
        let token = bearer(&parts.headers)
            .ok_or_else(|| ApiError::Unauthorized(NO_TOKEN.into()))?
            .to_owned();
        // Tokens are 256 random bits, so guessing is hopeless anyway; the throttle is there so
        // that wrong tokens from one address cannot fill the append-only audit log.
        let keys = vec![format!("api:{}", address.as_deref().unwrap_or("unknown"))];
        let now = now_unix_ms();
        let wait_ms = state.token_throttle().wait_ms(&keys, now);
        if wait_ms > 0 {
            let secs = (wait_ms + 999) / 1000;
            return Err(ApiError::TooMany {
                message: format!(
                    "too many requests with a wrong API token from this address: wait {secs} seconds, then try again with a valid token"
                ),
                retry_after_secs: secs,
            });
        }
        let from = address.clone();
        let found = state
            .db(move |store| {
                let found = accounts::api_principal(store, &token, now)?;
                if found.is_none() {
                    store.append_audit(&AuditEntry {
                        at_ms: now,
                        actor: "(unknown)",
                        role: None,
                        channel: "api",
                        action: "api.authenticate",
                        target: "api token",
                        ok: false,
                        detail: "the token is unknown, expired, or its user is disabled",
                        remote_addr: from.as_deref(),
                    })?;
                }
                Ok(found)
            })
            .await?;
        match found {
            Some(who) => {
                state.token_throttle().succeeded(&keys);
                Ok(Caller { who, address })
            }
            None => {
                state.token_throttle().failed(&keys, now);
                Err(ApiError::Unauthorized(
                    "the API token is unknown, expired, or its user is disabled: ask an administrator for a new one (`evident-collector user token NAME`)"
                        .into(),
                ))
            }
        }
    }
}

/// The moment asked for with `as_of`, as the web page reads it.
#[derive(Debug, Clone)]
pub struct Moment(pub AsOf);

impl<S: Send + Sync> FromRequestParts<S> for Moment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Ok(Moment(AsOf::from_request_parts(parts, state).await?))
    }
}

/// Query parameters; a malformed one is a JSON 400 naming it.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| ApiError::BadRequest(format!("the query string: {}", e.body_text())))
    }
}

/// Path segments; one that does not parse (e.g. a sequence that is not a number) is a JSON 400.
#[derive(Debug)]
pub struct Segments<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segments<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Segments(p.0))
            .map_err(|e| ApiError::BadRequest(format!("the path: {}", e.body_text())))
    }
}

/// A JSON request body; a missing content type or a wrong field is a JSON 400 naming it.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Json::<T>::from_request(request, state)
            .await
            .map(|j| Body(j.0))
            .map_err(|e| ApiError::BadRequest(format!("the request body: {}", e.body_text())))
    }
}
