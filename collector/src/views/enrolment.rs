//! Enrolment tokens people create (web page and API): checked, stored and audited in one place,
//! so both ways in refuse the same things and leave the same trail.

use serde::Serialize;

use super::actions::Origin;
use crate::accounts::{Principal, Role};
use crate::model::format_unix_ms;
use crate::store::{AuditEntry, Store, StoreError};
use crate::token::Token;

/// The most agents one token may enrol.
pub const MAX_USES: u32 = 10_000;
/// The longest a token made by a person stays valid.
pub const MAX_HOURS: u32 = 24 * 30;

/// A token just created; `token` is shown once and stored only as a digest.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedToken {
    pub id: i64,
    pub token: String,
    pub uses: u32,
    pub expires_at: String,
    pub expires_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A field is out of range: the person can fix it.
    #[error("{0}")]
    Invalid(String),
    #[error(
        "your role ({0}) cannot create enrolment tokens: ask an administrator for the admin role"
    )]
    Forbidden(&'static str),
    #[error("create a random token: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Creates a token for `uses` agents valid for `hours`, by `who`, and records the attempt
/// (created or refused) in the audit log.
pub fn create_token(
    store: &Store,
    who: &Principal,
    origin: Origin<'_>,
    uses: u32,
    hours: u32,
    now_ms: i64,
) -> Result<CreatedToken, TokenError> {
    let result = decide(store, who, uses, hours, now_ms);
    let (target, detail) = match &result {
        Ok(created) => (
            format!("token {}", created.id),
            format!("for {uses} agent(s), valid until {}", created.expires_at),
        ),
        Err(e) => ("token".to_owned(), e.to_string()),
    };
    store.append_audit(&AuditEntry {
        at_ms: now_ms,
        actor: &who.name,
        role: Some(who.role.as_str()),
        channel: origin.channel,
        action: "enrolment-token.create",
        target: &target,
        ok: result.is_ok(),
        detail: &detail,
        remote_addr: origin.remote_addr,
    })?;
    result
}

fn decide(
    store: &Store,
    who: &Principal,
    uses: u32,
    hours: u32,
    now_ms: i64,
) -> Result<CreatedToken, TokenError> {
    if who.role < Role::Admin {
        return Err(TokenError::Forbidden(who.role.as_str()));
    }
    if !(1..=MAX_USES).contains(&uses) {
        return Err(TokenError::Invalid(format!(
            "uses is {uses}: a token may enrol 1 to {MAX_USES} agents"
        )));
    }
    if !(1..=MAX_HOURS).contains(&hours) {
        return Err(TokenError::Invalid(format!(
            "valid for {hours} hours: choose 1 to {MAX_HOURS}"
        )));
    }
    let token = Token::generate().map_err(|e| TokenError::Random(format!("{e:#}")))?;
    let expires_at_ms = now_ms + i64::from(hours) * 3_600_000;
    let id = store.create_token(&token.hash(), now_ms, expires_at_ms, uses)?;
    Ok(CreatedToken {
        id,
        token: token.expose().to_owned(),
        uses,
        expires_at: format_unix_ms(expires_at_ms),
        expires_at_ms,
    })
}
