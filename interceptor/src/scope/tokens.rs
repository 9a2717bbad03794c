//! Scopes remembered by auth token. A service that forwards nothing but its token (OpenStack)
//! passes on the token it saw, which cheops had stripped of its `!SCOPE!` suffix: its next call
//! gets the scope back from here. Entries expire, and the table is bounded.
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long a token keeps its scope after its last scoped request.
const KEEP_FOR: Duration = Duration::from_secs(600);
/// The most tokens remembered: past it, new tokens are not remembered until old ones expire.
const MAX_TOKENS: usize = 10_000;

#[derive(Default)]
pub struct TokenScopes {
    scopes: Mutex<HashMap<String, (dsl::Scope, Instant)>>,
}

impl TokenScopes {
    pub fn remember(&self, token: &str, scope: dsl::Scope) {
        let mut scopes = self.scopes.lock().unwrap();
        let now = Instant::now();
        if scopes.len() >= MAX_TOKENS {
            scopes.retain(|_, (_, at)| now.duration_since(*at) < KEEP_FOR);
        }
        if scopes.len() < MAX_TOKENS || scopes.contains_key(token) {
            scopes.insert(token.to_owned(), (scope, now));
        }
    }

    pub fn scope_of(&self, token: &str) -> Option<dsl::Scope> {
        let scopes = self.scopes.lock().unwrap();
        let (scope, at) = scopes.get(token)?;
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
}
