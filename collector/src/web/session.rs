//! Signing in and out, the session behind every page, and the CSRF token of every form.
//!
//! The session cookie holds a random secret (only its SHA-256 is stored), is `HttpOnly`,
//! `Secure`, `SameSite=Strict` and `__Host-` prefixed (so no subdomain can set it). A session
//! ends after 30 idle minutes or 12 hours. Sign-in attempts are throttled per name and per
//! address, and every attempt is in the audit log.

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Query, State};
use axum::http::{HeaderMap, header, request::Parts};
use axum::response::{AppendHeaders, Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{AppState, AsOf, WebError};
use crate::accounts::{self, Principal, Role};
use crate::model::now_unix_ms;
use crate::store::AuditEntry;

pub const SESSION_COOKIE: &str = "__Host-evident-session";
/// A nonce set with the sign-in form and echoed by it: sign-in is a form like any other.
pub const LOGIN_COOKIE: &str = "__Host-evident-login";
const IDLE_MS: i64 = 30 * 60 * 1000;
const LIFETIME_MS: i64 = 12 * 3600 * 1000;
/// A session's last-seen time is written at most this often.
const TOUCH_EVERY_MS: i64 = 60 * 1000;

/// A signed-in person on a page: who, their session's CSRF token, and the page's moment.
#[derive(Debug, Clone)]
pub struct Signed {
    pub who: Principal,
    pub csrf: String,
}

impl Signed {
    /// Refuses a person whose role is below `role`.
    pub fn require(&self, role: Role, doing: &str) -> Result<(), WebError> {
        if self.who.role >= role {
            Ok(())
        } else {
            Err(WebError::Forbidden(format!(
                "{doing} needs the {} role; you are signed in as {} ({})",
                role.as_str(),
                self.who.name,
                self.who.role.as_str()
            )))
        }
    }

    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, given: &str) -> Result<(), WebError> {
        if accounts::same_secret(given, &self.csrf) {
            Ok(())
        } else {
            Err(WebError::Forbidden(
                "the form's security token does not match your session: reload the page and try again"
                    .into(),
            ))
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, WebError> {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let sign_in = || WebError::SignIn { next: next.clone() };
        let Some(secret) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(sign_in());
        };
        let digest = accounts::secret_digest(secret);
        let now = now_unix_ms();
        let found = state
            .db(move |store| {
                let Some(session) = store.session(&digest)? else {
                    return Ok(None);
                };
                let alive = session.user.disabled_at_ms.is_none()
                    && session.expires_at_ms > now
                    && session.last_seen_ms + IDLE_MS > now;
                if !alive {
                    store.delete_session(&digest)?;
                    return Ok(None);
                }
                if now - session.last_seen_ms > TOUCH_EVERY_MS {
                    store.touch_session(&digest, now)?;
                }
                Ok(Some(session))
            })
            .await?;
        let session = found.ok_or_else(sign_in)?;
        let role = Role::parse(&session.user.role).ok_or_else(|| {
            WebError::Internal(format!("user {} has an unknown role", session.user.name))
        })?;
        Ok(Signed {
            who: Principal {
                user_id: session.user.id,
                name: session.user.name,
                role,
            },
            csrf: session.csrf_token,
        })
    }
}

/// What the frame of every page needs.
#[derive(Debug, Clone)]
pub struct Layout {
    pub user: String,
    pub role: &'static str,
    pub csrf: String,
    pub as_of: AsOf,
    /// This page's path, for the date picker's form.
    pub path: String,
    pub section: &'static str,
    pub is_admin: bool,
}

impl Layout {
    pub fn new(
        signed: &Signed,
        as_of: &AsOf,
        path: impl Into<String>,
        section: &'static str,
    ) -> Layout {
        Layout {
            user: signed.who.name.clone(),
            role: signed.who.role.as_str(),
            csrf: signed.csrf.clone(),
            as_of: as_of.clone(),
            path: path.into(),
            section,
            is_admin: signed.who.role >= Role::Admin,
        }
    }

    /// `?as_of=…` for links, or empty.
    pub fn q(&self) -> String {
        let query = self.as_of.query();
        if query.is_empty() {
            query
        } else {
            format!("?{query}")
        }
    }

    /// `&as_of=…` for links that already have a query, or empty.
    pub fn and_q(&self) -> String {
        let query = self.as_of.query();
        if query.is_empty() {
            query
        } else {
            format!("&{query}")
        }
    }
}

#[derive(Template)]
#[template(path = "web/login.html")]
struct LoginPage {
    nonce: String,
    next: String,
    message: String,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

fn safe_next(next: Option<&str>) -> String {
    // Only a path on this site: never `//elsewhere` or `https://elsewhere`.
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

fn login_form(next: String, message: String) -> Result<Response, WebError> {
    let nonce = accounts::new_secret().map_err(|e| WebError::Internal(e.to_string()))?;
    let page = LoginPage {
        nonce: nonce.clone(),
        next,
        message,
    };
    let html = page
        .render()
        .map_err(|e| WebError::Internal(e.to_string()))?;
    Ok((
        AppendHeaders([(
            header::SET_COOKIE,
            format!(
                "{LOGIN_COOKIE}={nonce}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=3600"
            ),
        )]),
        Html(html),
    )
        .into_response())
}

pub async fn login_page(Query(query): Query<LoginQuery>) -> Result<Response, WebError> {
    login_form(safe_next(query.next.as_deref()), String::new())
}

#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    nonce: String,
    next: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let next = safe_next(form.next.as_deref());
    let nonce_ok =
        cookie(&headers, LOGIN_COOKIE).is_some_and(|c| accounts::same_secret(c, &form.nonce));
    if !nonce_ok {
        return Err(WebError::Forbidden(
            "the sign-in form's security token does not match: open the sign-in page again".into(),
        ));
    }
    let name = form.name.trim().to_owned();
    let address = peer.ip().to_string();
    let keys = vec![
        format!("user:{}", name.to_lowercase()),
        format!("addr:{address}"),
    ];
    let now = now_unix_ms();
    let wait = state.inner.passwords.wait_ms(&keys, now);
    let audit = |ok: bool, detail: String, role: Option<&'static str>| {
        let (name, address) = (name.clone(), address.clone());
        move |store: &crate::store::Store| {
            store.append_audit(&AuditEntry {
                at_ms: now,
                actor: &name,
                role,
                channel: "web",
                action: "sign-in",
                target: &name,
                ok,
                detail: &detail,
                remote_addr: Some(&address),
            })?;
            Ok(())
        }
    };
    if wait > 0 {
        state
            .db(audit(
                false,
                format!("throttled for {} s", (wait + 999) / 1000),
                None,
            ))
            .await?;
        return Err(WebError::TooMany(format!(
            "too many failed sign-ins for this name or address: wait {} seconds, then try again",
            (wait + 999) / 1000
        )));
    }
    let (check_name, password) = (name.clone(), form.password);
    let who = state
        .db(move |store| Ok(accounts::authenticate(store, &check_name, &password)?))
        .await?;
    let Some(who) = who else {
        state.inner.passwords.failed(&keys, now);
        state
            .db(audit(false, "wrong name or password".into(), None))
            .await?;
        return login_form(next, "Wrong name or password.".into());
    };
    state.inner.passwords.succeeded(&keys);
    let secret = accounts::new_secret().map_err(|e| WebError::Internal(e.to_string()))?;
    let csrf = accounts::new_secret().map_err(|e| WebError::Internal(e.to_string()))?;
    let digest = accounts::secret_digest(&secret);
    let user_id = who.user_id;
    let record = audit(true, "signed in".into(), Some(who.role.as_str()));
    state
        .db(move |store| {
            store.create_session(&digest, user_id, &csrf, now, now + LIFETIME_MS)?;
            record(store)
        })
        .await?;
    Ok((
        AppendHeaders([
            (
                header::SET_COOKIE,
                format!("{SESSION_COOKIE}={secret}; Path=/; Secure; HttpOnly; SameSite=Strict"),
            ),
            (
                header::SET_COOKIE,
                format!("{LOGIN_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
        ]),
        Redirect::to(&next),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    signed: Signed,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    signed.check_csrf(&form.csrf)?;
    let digest = cookie(&headers, SESSION_COOKIE).map(accounts::secret_digest);
    let who = signed.who.clone();
    let address = peer.ip().to_string();
    state
        .db(move |store| {
            if let Some(digest) = digest {
                store.delete_session(&digest)?;
            }
            store.append_audit(&AuditEntry {
                at_ms: now_unix_ms(),
                actor: &who.name,
                role: Some(who.role.as_str()),
                channel: "web",
                action: "sign-out",
                target: &who.name,
                ok: true,
                detail: "signed out",
                remote_addr: Some(&address),
            })?;
            Ok(())
        })
        .await?;
    Ok((
        AppendHeaders([(
            header::SET_COOKIE,
            format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"),
        )]),
        Redirect::to("/login"),
    )
        .into_response())
}
