//! Reviewers' accounts: roles, argon2id password hashes, session and API-token secrets, and
//! sign-in throttling. The web page and the JSON API authenticate through here.

use std::collections::HashMap;
use std::sync::Mutex;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};
use ring::rand::{SecureRandom, SystemRandom};

use crate::store::{Store, StoreError, UserRow};

/// What a person may do. Each role can do everything the one before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything, changes nothing (auditors).
    Viewer,
    /// Also moves corrective actions through their lifecycle.
    Reviewer,
    /// Also creates enrolment tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Reviewer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// The shortest password `user add` accepts.
pub const MIN_PASSWORD_CHARS: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A signed-in person, whichever way they proved it.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: i64,
    pub name: String,
    pub role: Role,
}

impl Principal {
    fn of(user: &UserRow) -> Option<Principal> {
        Some(Principal {
            user_id: user.id,
            name: user.name.clone(),
            role: Role::parse(&user.role)?,
        })
    }
}

/// Hashes a password with argon2id and a fresh salt, in PHC string form.
pub fn hash_password(password: &str) -> Result<String, AccountError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| AccountError::Invalid(format!("cannot hash the password: {e}")))
}

/// Creates an account after checking its name and password.
pub fn add_user(
    store: &Store,
    name: &str,
    role: Role,
    password: &str,
    now_ms: i64,
) -> Result<i64, AccountError> {
    let name = name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c))
    {
        return Err(AccountError::Invalid(format!(
            "user name {name:?} is not allowed: use 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )));
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AccountError::Invalid(format!(
            "the password is too short: use at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let hash = hash_password(password)?;
    store
        .add_user(name, role.as_str(), &hash, now_ms)?
        .ok_or_else(|| AccountError::Invalid(format!("user {name:?} already exists")))
}

/// A hash of a fixed password, verified when the user does not exist, so that a missing user
/// takes as long to refuse as a wrong password and names cannot be probed by timing.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

/// Checks a name and password; `None` for any refusal (unknown, disabled, wrong password).
pub fn authenticate(
    store: &Store,
    name: &str,
    password: &str,
) -> Result<Option<Principal>, StoreError> {
    let user = store.user_by_name(name.trim())?;
    let hash_text = user
        .as_ref()
        .map_or_else(|| dummy_hash().to_owned(), |u| u.password_hash.clone());
    let matches = PasswordHash::new(&hash_text)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false);
    Ok(user
        .filter(|u| matches && u.disabled_at_ms.is_none())
        .as_ref()
        .and_then(Principal::of))
}

/// A fresh random secret (256 bits, hex) for a session cookie, CSRF token or API token.
pub fn new_secret() -> Result<String, AccountError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AccountError::Invalid("the system random generator failed".into()))?;
    Ok(hex::encode(bytes))
}

/// What is stored of a secret: its SHA-256, so the database alone cannot be used to sign in.
pub fn secret_digest(secret: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// Constant-time comparison of two secrets.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The principal an API token stands for.
pub fn api_principal(
    store: &Store,
    token: &str,
    now_ms: i64,
) -> Result<Option<Principal>, StoreError> {
    Ok(store
        .api_token_user(&secret_digest(token), now_ms)?
        .as_ref()
        .and_then(Principal::of))
}

/// Creates an API token for a user; the token is shown once and stored only as a digest.
pub fn create_api_token(
    store: &Store,
    name: &str,
    label: &str,
    now_ms: i64,
    expires_at_ms: i64,
) -> Result<String, AccountError> {
    let user = store
        .user_by_name(name)?
        .filter(|u| u.disabled_at_ms.is_none())
        .ok_or_else(|| {
            AccountError::Invalid(format!(
                "no enabled user {name:?}: add one with `evident-collector user add`"
            ))
        })?;
    let token = format!("eva_{}", new_secret()?);
    store.add_api_token(
        &secret_digest(&token),
        user.id,
        label,
        now_ms,
        expires_at_ms,
    )?;
    Ok(token)
}

/// Failed attempts allowed in a row before each further attempt must wait.
const FREE_FAILURES: u32 = 5;
/// The longest wait between attempts.
const MAX_LOCKOUT_MS: i64 = 15 * 60 * 1000;

/// Slows guessing: after `FREE_FAILURES` failures in a row for one key (a user name, an
/// address), each further attempt waits twice as long as the one before, from a first wait up
/// to 15 minutes, whether it would succeed or not. Kept in memory: a restart forgives, which
/// costs an attacker a collector restart per few guesses.
#[derive(Debug)]
pub struct Throttle {
    first_wait_ms: i64,
    failures: Mutex<HashMap<String, (u32, i64)>>,
}

impl Throttle {
    /// For passwords, which people choose: 30 s after five failures, then 1, 2, 4 … minutes.
    pub fn for_passwords() -> Throttle {
        Throttle::with_first_wait(30_000)
    }

    /// For API tokens, 256-bit random secrets nobody guesses: the wait only keeps wrong tokens
    /// from flooding the audit log, so it starts at 1 s.
    pub fn for_tokens() -> Throttle {
        Throttle::with_first_wait(1_000)
    }

    fn with_first_wait(first_wait_ms: i64) -> Throttle {
        Throttle {
            first_wait_ms,
            failures: Mutex::default(),
        }
    }

    /// How long until `keys` may try again; 0 when they may now.
    pub fn wait_ms(&self, keys: &[String], now_ms: i64) -> i64 {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|key| failures.get(key))
            .map(|(count, last_ms)| (last_ms + lockout_ms(self.first_wait_ms, *count)) - now_ms)
            .max()
            .unwrap_or(0)
            .max(0)
    }

    pub fn failed(&self, keys: &[String], now_ms: i64) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        // Forget keys whose lockout has long passed, so the map cannot grow without end.
        if failures.len() > 10_000 {
            failures.retain(|_, (_, last)| now_ms - *last < MAX_LOCKOUT_MS);
        }
        for key in keys {
            let entry = failures.entry(key.clone()).or_insert((0, now_ms));
            entry.0 = entry.0.saturating_add(1);
            entry.1 = now_ms;
        }
    }

    pub fn succeeded(&self, keys: &[String]) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            failures.remove(key);
        }
    }
}

fn lockout_ms(first_wait_ms: i64, failures: u32) -> i64 {
    if failures < FREE_FAILURES {
        return 0;
    }
    let doublings = (failures - FREE_FAILURES).min(20);
    (first_wait_ms << doublings).min(MAX_LOCKOUT_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_waits_after_five_failures_and_forgives_success() {
        let throttle = Throttle::for_tokens();
        let keys = vec!["user:alice".to_owned(), "addr:10.0.0.1".to_owned()];
        for _ in 0..4 {
            throttle.failed(&keys, 1_000);
            assert_eq!(throttle.wait_ms(&keys, 1_000), 0);
        }
        throttle.failed(&keys, 1_000);
        assert_eq!(throttle.wait_ms(&keys, 1_000), 1_000);
        throttle.failed(&keys, 2_000);
        assert_eq!(throttle.wait_ms(&keys, 2_000), 2_000);
        // Another name from the same address waits too.
        assert_eq!(
            throttle.wait_ms(&["addr:10.0.0.1".to_owned()], 2_000),
            2_000
        );
        throttle.succeeded(&keys);
        assert_eq!(throttle.wait_ms(&keys, 2_000), 0);
        assert_eq!(lockout_ms(1_000, 100), MAX_LOCKOUT_MS);
        assert_eq!(lockout_ms(30_000, 5), 30_000, "passwords: 30 s at first");
    }

    #[test]
    fn passwords_are_hashed_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_or_create(&dir.path().join("c.db")).expect("store");
        let short = add_user(&store, "alice", Role::Reviewer, "short", 1).expect_err("short");
        assert!(short.to_string().contains("at least 12"), "{short}");
        let bad = add_user(&store, "<b>", Role::Reviewer, "long enough password", 1)
            .expect_err("bad name");
        assert!(bad.to_string().contains("not allowed"), "{bad}");
        add_user(&store, "alice", Role::Reviewer, "correct horse battery", 1).expect("add");
        let again =
            add_user(&store, "alice", Role::Viewer, "correct horse battery", 1).expect_err("taken");
        assert!(again.to_string().contains("already exists"), "{again}");
        let stored = store.user_by_name("alice").expect("read").expect("there");
        assert!(
            stored.password_hash.starts_with("$argon2id$"),
            "{}",
            stored.password_hash
        );
        assert!(!stored.password_hash.contains("correct horse"));
        let who = authenticate(&store, "alice", "correct horse battery")
            .expect("read")
            .expect("signs in");
        assert_eq!(who.role, Role::Reviewer);
        assert!(
            authenticate(&store, "alice", "wrong")
                .expect("read")
                .is_none()
        );
        assert!(
            authenticate(&store, "bob", "correct horse battery")
                .expect("read")
                .is_none()
        );
        assert!(store.disable_user("alice", 2).expect("disable"));
        assert!(
            authenticate(&store, "alice", "correct horse battery")
                .expect("read")
                .is_none()
        );
    }

    #[test]
    fn api_tokens_are_stored_as_digests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_or_create(&dir.path().join("c.db")).expect("store");
        add_user(&store, "bot", Role::Viewer, "a long password here", 1).expect("add");
        let token = create_api_token(&store, "bot", "ci", 1, 10).expect("token");
        assert!(token.starts_with("eva_"));
        assert_eq!(
            api_principal(&store, &token, 5)
                .expect("read")
                .expect("valid")
                .name,
            "bot"
        );
        assert!(
            api_principal(&store, &token, 10).expect("read").is_none(),
            "expired"
        );
        assert!(
            api_principal(&store, "eva_nope", 5)
                .expect("read")
                .is_none()
        );
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
