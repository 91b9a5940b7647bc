//! HTTP basic authentication against the bcrypt hashes of `basic_auth_users`.
//!
//! bcrypt is slow on purpose (milliseconds at cost 10, far more in a debug build), and Prometheus sends the
//! same credentials every scrape. As exporter-toolkit does, a successful verification is cached so that
//! scrapes after the first cost an HMAC, not a bcrypt round. Unlike exporter-toolkit, failures are not cached:
//! a cache of failures grows with every password an attacker tries. The cache holds one entry per configured
//! user (an HMAC tag of the last password that verified, under a key made at start-up), so it is bounded and
//! never holds a password. bcrypt runs on a blocking thread, one at a time, so a flood of wrong passwords
//! costs at most one core.

use std::{collections::HashMap, sync::Mutex};

use base64::Engine as _;
use ring::{hmac, rand::SystemRandom};
use tokio::sync::Semaphore;

use crate::metrics::webconfig::PasswordHash;

/// The outcome of checking a request's `Authorization` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No `Authorization` header, or not a well-formed `Basic` one.
    Missing,
    /// Well-formed credentials that do not match (unknown user or wrong password).
    Denied,
}

/// Checks basic-auth credentials; shared by all connections.
pub struct BasicAuth {
    users: HashMap<String, PasswordHash>,
    /// Verified unknown users' passwords against this (a configured hash) so that an unknown user takes as
    /// long as a wrong password and user names cannot be found by timing.
    decoy: PasswordHash,
    /// Per user, the HMAC of the last password that verified.
    cache: Mutex<HashMap<String, hmac::Tag>>,
    cache_key: hmac::Key,
    bcrypt_slots: Semaphore,
}

/// Why the authenticator cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no basic auth users are configured")]
    NoUsers,
    #[error("cannot generate the credential cache key")]
    Random,
}

impl BasicAuth {
    pub fn new(users: impl IntoIterator<Item = (String, PasswordHash)>) -> Result<Self, AuthError> {
        let users: HashMap<String, PasswordHash> = users.into_iter().collect();
        let decoy = users.values().next().cloned().ok_or(AuthError::NoUsers)?;
        let cache_key = hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).map_err(|_| AuthError::Random)?;
        Ok(Self { users, decoy, cache: Mutex::new(HashMap::new()), cache_key, bcrypt_slots: Semaphore::new(1) })
    }

    /// Checks an `Authorization` header value (`None` when the request has none).
    pub async fn check(&self, authorization: Option<&[u8]>) -> Verdict {
        let Some((user, password)) = authorization.and_then(parse_basic) else {
            return Verdict::Missing;
        };
        let known = std::str::from_utf8(&user).ok().and_then(|u| self.users.get_key_value(u));
        let Some((user, hash)) = known else {
            // Same work as a wrong password for a known user; the result does not matter.
            let _ = self.bcrypt(password, self.decoy.clone()).await;
            return Verdict::Denied;
        };
        let tag_input = cache_input(user, &password);
        if let Some(tag) = self.cached(user)
            && hmac::verify(&self.cache_key, &tag_input, tag.as_ref()).is_ok()
        {
            return Verdict::Allowed;
        }
        if self.bcrypt(password, hash.clone()).await {
            let tag = hmac::sign(&self.cache_key, &tag_input);
            self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(user.clone(), tag);
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }

    fn cached(&self, user: &str) -> Option<hmac::Tag> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(user).copied()
    }

    /// Runs bcrypt on a blocking thread, one at a time; any failure (a malformed hash cannot happen: they are
    /// checked when the file is read) counts as a mismatch.
    async fn bcrypt(&self, password: Vec<u8>, hash: PasswordHash) -> bool {
        // The semaphore is never closed, so acquire only fails if it were; deny in that case.
        let Ok(_slot) = self.bcrypt_slots.acquire().await else {
            return false;
        };
        match tokio::task::spawn_blocking(move || bcrypt::verify(&password, hash.as_str())).await {
            Ok(Ok(matches)) => matches,
            Ok(Err(error)) => {
                tracing::error!(error = %error, "bcrypt verification failed");
                false
            }
            Err(error) => {
                tracing::error!(error = %error, "bcrypt verification thread failed");
                false
            }
        }
    }
}

/// The user and password of a `Basic` credential (RFC 7617): scheme case-insensitive, base64 of
/// `user:password`, split at the first colon.
fn parse_basic(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim_start()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// What the cache's HMAC covers: the user's length and name, then the password, so no two (user, password)
/// pairs share an input.
fn cache_input(user: &str, password: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(8 + user.len() + password.len());
    input.extend_from_slice(&(user.len() as u64).to_be_bytes());
    input.extend_from_slice(user.as_bytes());
    input.extend_from_slice(password);
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> Vec<u8> {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))).into_bytes()
    }

    fn auth() -> BasicAuth {
        let hash = bcrypt::hash("s3cret", 4).expect("hash");
        BasicAuth::new([("prom".to_owned(), PasswordHash::parse(&hash).expect("bcrypt"))]).expect("auth")
    }

    #[test]
    fn parses_basic_credentials() {
        assert_eq!(parse_basic(&header("prom", "a:b")), Some((b"prom".to_vec(), b"a:b".to_vec())));
        assert_eq!(parse_basic(b"bAsIc cHJvbTpw"), Some((b"prom".to_vec(), b"p".to_vec())));
        assert_eq!(parse_basic(b"Bearer cHJvbTpw"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(b"Basic cHJvbQ=="), None, "no colon");
        assert_eq!(parse_basic(b"Basic"), None);
        assert_eq!(parse_basic(b"\xff\xfe"), None);
    }

    #[test]
    fn cache_inputs_differ_when_the_split_differs() {
        assert_ne!(cache_input("ab", b"c"), cache_input("a", b"bc"));
    }

    #[tokio::test]
    async fn verdicts() {
        let auth = auth();
        assert_eq!(auth.check(None).await, Verdict::Missing);
        assert_eq!(auth.check(Some(b"Basic")).await, Verdict::Missing);
        assert_eq!(auth.check(Some(&header("prom", "wrong"))).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&header("nobody", "s3cret"))).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&header("prom", "s3cret"))).await, Verdict::Allowed);
        assert!(auth.cached("prom").is_some(), "a success is cached");
        // The cache only answers for the exact password that verified.
        assert_eq!(auth.check(Some(&header("prom", "s3cret2"))).await, Verdict::Denied);
        assert_eq!(auth.check(Some(&header("prom", "s3cret"))).await, Verdict::Allowed);
    }

    #[tokio::test]
    async fn cached_success_skips_bcrypt() {
        let auth = auth();
        assert_eq!(auth.check(Some(&header("prom", "s3cret"))).await, Verdict::Allowed);
        // With the only bcrypt slot taken, a check that needed bcrypt would wait forever; a cached one does not.
        let _slot = auth.bcrypt_slots.acquire().await.expect("slot");
        let credentials = header("prom", "s3cret");
        let checked = tokio::time::timeout(std::time::Duration::from_secs(10), auth.check(Some(&credentials)));
        assert_eq!(checked.await.expect("cached check must not wait for bcrypt"), Verdict::Allowed);
    }

    #[test]
    fn no_users_is_an_error() {
        assert!(matches!(BasicAuth::new([]), Err(AuthError::NoUsers)));
    }
}
