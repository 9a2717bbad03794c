//! Scopes remembered by auth token. A service that forwards nothing but its token (OpenStack)
//! passes on the token it saw, which cheops had stripped of its `!SCOPE!` suffix: its next call
//! gets the scope back from here. Entries expire, and the table is bounded. Tokens are bearer
//! credentials: only their SHA-256 digest is kept, so the agent's memory (a core dump, a heap
//! read) gives no one a token to replay.
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use hyper::HeaderMap;

use super::carriers;
use crate::config::CarrierSettings;

/// How long a token keeps its scope after its last scoped request.
const KEEP_FOR: Duration = Duration::from_secs(600);
/// The most tokens remembered: past it, new tokens are not remembered until old ones expire.
const MAX_TOKENS: usize = 10_000;

/// A token's SHA-256 digest: what the table is keyed by, never the token itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(token: &str) -> TokenDigest {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest.as_ref());
        TokenDigest(bytes)
    }
}

#[derive(Default)]
pub struct TokenScopes {
    scopes: Mutex<HashMap<TokenDigest, (dsl::Scope, Instant)>>,
}

impl TokenScopes {
    pub fn remember(&self, token: &str, scope: dsl::Scope) {
        let token = TokenDigest::of(token);
        let mut scopes = self.scopes.lock().unwrap();
        let now = Instant::now();
        if scopes.len() >= MAX_TOKENS {
            scopes.retain(|_, (_, at)| now.duration_since(*at) < KEEP_FOR);
        }
        if scopes.len() < MAX_TOKENS || scopes.contains_key(&token) {
            scopes.insert(token, (scope, now));
        }
    }

    /// Binds the token of a request about to reach this site's instance to the scope the
    /// request passes on (`carriers::token_with_scope`, which strips a token's suffix): the
    /// service forwards nothing but its token, so its next calls get the scope back here.
    pub fn remember_passed_on(&self, headers: &mut HeaderMap, settings: &CarrierSettings) {
        if let Some((token, scope)) = carriers::token_with_scope(headers, settings) {
            if let Ok(scope) = dsl::parse(&scope) {
                self.remember(&token, scope);
            }
        }
    }

    pub fn scope_of(&self, token: &str) -> Option<dsl::Scope> {
        let scopes = self.scopes.lock().unwrap();
        let (scope, at) = scopes.get(&TokenDigest::of(token))?;
        (at.elapsed() < KEEP_FOR).then(|| scope.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_token_gives_its_scope_back() {
        let tokens = TokenScopes::default();
        tokens.remember("t0k", dsl::parse("{catalog: B}").unwrap());
        assert_eq!(tokens.scope_of("t0k").unwrap().to_string(), "{catalog: B}");
        assert!(tokens.scope_of("other").is_none());
    }

    #[test]
    fn only_the_digest_of_a_token_is_kept() {
        let tokens = TokenScopes::default();
        tokens.remember("gAAAAAsecret-bearer", dsl::parse("{catalog: B}").unwrap());
        let table = tokens.scopes.lock().unwrap();
        let (key, _) = table.iter().next().unwrap();
        // The key is the token's SHA-256 (`sha256sum` of it starts so), nothing else of it.
        let hex: String = key.0[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "d60794009d8adf2b");
        assert_ne!(*key, TokenDigest::of("gAAAAAsecret-bearex"));
    }
}
