//! Where a request's scope comes from and how it travels on: the `X-Scope` header, the `scope`
//! member of W3C `baggage`, a `!SCOPE!<scope>` suffix on the auth token, the scope remembered
//! for the token a validation names (`X-Subject-Token`), or the caller's workload default.
//! Pure functions over headers, so that they are tested without a network.
use hyper::{
    header::{HeaderName, HeaderValue},
    HeaderMap,
};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use crate::config::{Carrier, CarrierSettings};

pub const SCOPE_HEADER: HeaderName = HeaderName::from_static("x-scope");
const BAGGAGE: HeaderName = HeaderName::from_static("baggage");
const BAGGAGE_KEY: &str = "scope";
const TOKEN_SUFFIX: &str = "!SCOPE!";
/// Where Keystone's token validation (`GET /v3/auth/tokens`) names the token it checks; the
/// caller's own token (a service's) is in the token header.
const SUBJECT_TOKEN: HeaderName = HeaderName::from_static("x-subject-token");

/// The headers a scope may come in besides the auth token's (whose name is configured).
pub static CARRIER_HEADERS: [HeaderName; 3] = [SCOPE_HEADER, BAGGAGE, SUBJECT_TOKEN];

/// What W3C baggage values may not hold unencoded (anything outside `baggage-octet`).
const BAGGAGE_ESCAPED: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b',')
    .add(b';')
    .add(b'\\')
    .add(b'%');

/// A request's scope and the carrier it came in.
#[derive(Debug, Clone)]
pub struct Found {
    pub scope: dsl::Scope,
    pub carrier: Carrier,
}

#[derive(Debug, thiserror::Error)]
pub enum CarrierError {
    #[error("the scope in {carrier} is not valid: {error}")]
    Malformed {
        carrier: String,
        error: Box<dsl::ScopeError>,
    },
    #[error("the {carrier} is not text")]
    NotText { carrier: String },
}

impl Carrier {
    fn describe(self, settings: &CarrierSettings) -> String {
        match self {
            Carrier::Header => "header X-Scope".into(),
            Carrier::Baggage => "the `scope` member of header baggage".into(),
            Carrier::Token => format!("the token suffix of header {}", settings.token_header),
            Carrier::Subject => "the scope of the token in header X-Subject-Token".into(),
            Carrier::Workload => "the workload's default scope".into(),
        }
    }
}

/// What the proxy knows besides the headers: the default scope of the caller's cgroup, and
/// the scopes of tokens seen before with a suffix.
pub struct Known<'a> {
    pub workload_default: Option<&'a dsl::Scope>,
    pub token_scope: &'a dyn Fn(&str) -> Option<dsl::Scope>,
}

/// The scope of a request: from the first of the configured carriers that holds one.
pub fn extract(
    headers: &HeaderMap,
    known: &Known<'_>,
    settings: &CarrierSettings,
) -> Result<Option<Found>, CarrierError> {
    let workload_default = known.workload_default;
    let carried = carries_any(headers, settings);
    for &carrier in &settings.read {
        if !carried && carrier != Carrier::Workload {
            // No carrier's header to read (most requests, and the fast path's that carry
            // none): only the workload's default can be found, told without looking for each
            // header.
            continue;
        }
        let text = match carrier {
            Carrier::Header => header_text(headers, &SCOPE_HEADER, carrier, settings)?,
            Carrier::Baggage => baggage_scope(headers, carrier, settings)?,
            Carrier::Token => {
                let token = header_text(headers, settings.token_header_name(), carrier, settings)?;
                match token.as_deref().map(split_token) {
                    Some(Some((_, scope))) => Some(scope),
                    Some(None) => {
                        let remembered = token.as_deref().and_then(known.token_scope);
                        if let Some(scope) = remembered {
                            return Ok(Some(Found { scope, carrier }));
                        }
                        None
                    }
                    None => None,
                }
            }
            Carrier::Subject => {
                let subject = header_text(headers, &SUBJECT_TOKEN, carrier, settings)?;
                if let Some(scope) = subject.as_deref().and_then(known.token_scope) {
                    return Ok(Some(Found { scope, carrier }));
                }
                None
            }
            Carrier::Workload => {
                if let Some(scope) = workload_default {
                    return Ok(Some(Found {
                        scope: scope.clone(),
                        carrier,
                    }));
                }
                None
            }
        };
        if let Some(text) = text {
            let scope = dsl::parse(&text).map_err(|error| CarrierError::Malformed {
                carrier: carrier.describe(settings),
                error: Box::new(error),
            })?;
            return Ok(Some(Found { scope, carrier }));
        }
    }
    Ok(None)
}

/// Whether `headers` holds a header that a scope may come in: one look at the names present
/// (a request has few) costs less than a lookup (a hash and a probe) of each carrier's.
fn carries_any(headers: &HeaderMap, settings: &CarrierSettings) -> bool {
    let token = settings.token_header_name();
    headers
        .keys()
        .any(|name| name == token || CARRIER_HEADERS.contains(name))
}

/// Rewrites the carrier so that the scope travels on without the entry `service` used (the
/// site that executes `service` consumes it). A scope that no header carries (a workload's
/// default, a validated token's) is put in `X-Scope` so that the services called downstream
/// still see it.
pub fn pass_on(headers: &mut HeaderMap, found: &Found, service: &str, settings: &CarrierSettings) {
    let rest = found.scope.consume(service);
    let text = (!rest.is_empty()).then(|| rest.to_string());
    match found.carrier {
        Carrier::Header | Carrier::Subject | Carrier::Workload => {
            match text.and_then(|t| value(&t)) {
                Some(value) => {
                    headers.insert(SCOPE_HEADER, value);
                }
                None => {
                    headers.remove(SCOPE_HEADER);
                }
            }
        }
        Carrier::Baggage => {
            let members = text.map(|t| utf8_percent_encode(&t, BAGGAGE_ESCAPED).to_string());
            rewrite_baggage(headers, members.as_deref());
        }
        Carrier::Token => {
            let name = settings.token_header_name();
            let Some(token) = headers.get(name).and_then(|v| v.to_str().ok()) else {
                return;
            };
            let token = split_token(token).map_or(token, |(t, _)| t);
            let token = match text {
                Some(text) => format!("{token}{TOKEN_SUFFIX}{text}"),
                None => token.to_owned(),
            };
            if let Some(value) = value(&token) {
                headers.insert(name.clone(), value);
            }
        }
    }
}

/// The bare auth token a service is about to see and the scope travelling on with its request,
/// when it has both: the token's suffix (stripped here: the service must see its own token),
/// else `X-Scope` or baggage. A service that forwards nothing but its token (OpenStack) passes
/// the bare token on, so its next calls get that scope back by the token, or, when they
/// validate it, by `X-Subject-Token`.
pub fn token_with_scope(
    headers: &mut HeaderMap,
    settings: &CarrierSettings,
) -> Option<(String, String)> {
    if headers.is_empty() {
        // No token (the fast path's requests that carry no scope): told without a lookup.
        return None;
    }
    if let Some(stripped) = strip_token_suffix(headers, settings) {
        return Some(stripped);
    }
    let token = headers.get(settings.token_header_name())?.to_str().ok()?;
    let scope = header_text(headers, &SCOPE_HEADER, Carrier::Header, settings)
        .ok()
        .flatten()
        .or_else(|| {
            baggage_scope(headers, Carrier::Baggage, settings)
                .ok()
                .flatten()
        })?;
    Some((token.to_owned(), scope))
}

/// Removes the scope suffix from the auth token, since the service must see its own token;
/// gives back the bare token and the suffix.
fn strip_token_suffix(
    headers: &mut HeaderMap,
    settings: &CarrierSettings,
) -> Option<(String, String)> {
    let name = settings.token_header_name();
    let token = headers.get(name)?.to_str().ok()?;
    let (bare, scope) = split_token(token)?;
    let bare = bare.to_owned();
    headers.insert(name.clone(), value(&bare)?);
    Some((bare, scope))
}

/// The suffix as clients that percent-encode header values send it (glanceclient does).
const TOKEN_SUFFIX_ENCODED: &str = "%21SCOPE%21";

/// `(bare token, scope text)` of a token with a `!SCOPE!` suffix, literal or percent-encoded
/// (then the scope is decoded; the bare token is left as the client sent it, so the service
/// sees what the client meant it to see).
fn split_token(token: &str) -> Option<(&str, String)> {
    if let Some((bare, scope)) = token.split_once(TOKEN_SUFFIX) {
        return Some((bare, scope.to_owned()));
    }
    let at = token.to_ascii_uppercase().find(TOKEN_SUFFIX_ENCODED)?;
    let scope = &token[at + TOKEN_SUFFIX_ENCODED.len()..];
    let scope = percent_decode_str(scope).decode_utf8_lossy().into_owned();
    Some((&token[..at], scope))
}

fn value(text: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(text).ok()
}

fn header_text(
    headers: &HeaderMap,
    name: &HeaderName,
    carrier: Carrier,
    settings: &CarrierSettings,
) -> Result<Option<String>, CarrierError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| CarrierError::NotText {
                    carrier: carrier.describe(settings),
                })
        })
        .transpose()
}

/// The `key=value;properties` members of every baggage header.
fn baggage_members(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(BAGGAGE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
}

fn baggage_scope(
    headers: &HeaderMap,
    carrier: Carrier,
    settings: &CarrierSettings,
) -> Result<Option<String>, CarrierError> {
    let Some(encoded) = baggage_members(headers).find_map(|member| {
        let (key, rest) = member.split_once('=')?;
        let value = rest.split(';').next().unwrap_or("");
        (key.trim() == BAGGAGE_KEY).then(|| value.trim())
    }) else {
        return Ok(None);
    };
    percent_decode_str(encoded)
        .decode_utf8()
        .map(|text| Some(text.into_owned()))
        .map_err(|_| CarrierError::NotText {
            carrier: carrier.describe(settings),
        })
}

/// Replaces the value of the `scope` member (keeping its properties), or drops the member.
fn rewrite_baggage(headers: &mut HeaderMap, encoded: Option<&str>) {
    let members: Vec<String> = baggage_members(headers)
        .filter_map(|member| {
            let Some((key, rest)) = member.split_once('=') else {
                return Some(member.to_owned());
            };
            if key.trim() != BAGGAGE_KEY {
                return Some(member.to_owned());
            }
            let properties = rest.split_once(';').map(|(_, p)| p);
            encoded.map(|encoded| match properties {
                Some(properties) => format!("{BAGGAGE_KEY}={encoded};{properties}"),
                None => format!("{BAGGAGE_KEY}={encoded}"),
            })
        })
        .map(|member| member.trim().to_owned())
        .collect();
    headers.remove(BAGGAGE);
    if let Some(joined) = (!members.is_empty())
        .then(|| members.join(","))
        .and_then(|j| value(&j))
    {
        headers.insert(BAGGAGE, joined);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    fn none(_: &str) -> Option<dsl::Scope> {
        None
    }

    fn found(pairs: &[(&str, &str)], default: Option<&str>) -> Option<(String, Carrier)> {
        let default = default.map(|d| dsl::parse(d).unwrap());
        let known = Known {
            workload_default: default.as_ref(),
            token_scope: &none,
        };
        extract(&headers(pairs), &known, &CarrierSettings::default())
            .unwrap()
            .map(|f| (f.scope.to_string(), f.carrier))
    }

    #[test]
    fn carriers_are_read_in_order_and_the_first_found_wins() {
        let all = [
            ("x-scope", "{catalog: B}"),
            ("baggage", "user=1,scope=%7Bcatalog%3A%20C%7D"),
            ("x-auth-token", "t0k!SCOPE!{catalog: A}"),
        ];
        assert_eq!(
            found(&all, Some("{catalog: A}")),
            Some(("{catalog: B}".into(), Carrier::Header))
        );
        assert_eq!(
            found(&all[1..], None),
            Some(("{catalog: C}".into(), Carrier::Baggage))
        );
        assert_eq!(
            found(&all[2..], None),
            Some(("{catalog: A}".into(), Carrier::Token))
        );
        assert_eq!(
            found(&[("x-auth-token", "plain")], Some("{front: B}")),
            Some(("{front: B}".into(), Carrier::Workload))
        );
        assert_eq!(found(&[], None), None);
        assert_eq!(
            found(&[], Some("{front: B}")),
            Some(("{front: B}".into(), Carrier::Workload))
        );
    }

    #[test]
    fn only_the_configured_carriers_are_read() {
        let settings = CarrierSettings {
            read: vec![Carrier::Baggage],
            token_header: "X-Subject-Token".into(),
            ..CarrierSettings::default()
        };
        let h = headers(&[("x-scope", "{catalog: B}")]);
        let default = dsl::parse("{front: B}").ok();
        let known = Known {
            workload_default: default.as_ref(),
            token_scope: &none,
        };
        assert!(extract(&h, &known, &settings).unwrap().is_none());
        // Nor is the workload's default when it is not configured, with no header either.
        assert!(extract(&HeaderMap::new(), &known, &settings)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_malformed_scope_names_its_carrier_and_column() {
        let h = headers(&[("x-scope", "{catalog: B &}")]);
        let known = Known {
            workload_default: None,
            token_scope: &none,
        };
        let err = extract(&h, &known, &CarrierSettings::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("header X-Scope"), "{text}");
        assert!(text.contains("column"), "{text}");
    }

    #[test]
    fn the_scope_travels_on_without_the_executed_entry() {
        let settings = CarrierSettings::default();
        let mut h = headers(&[
            (
                "baggage",
                "a=1, scope=%7Bcatalog%3A%20B%2C%20front%3A%20C%7D;p=1",
            ),
            ("x-auth-token", "t0k!SCOPE!{catalog: B}"),
        ]);
        let scope = dsl::parse("{catalog: B, front: C}").unwrap();
        let baggage = Found {
            scope,
            carrier: Carrier::Baggage,
        };
        pass_on(&mut h, &baggage, "catalog", &settings);
        assert_eq!(h["baggage"], "a=1,scope={front:%20C};p=1");

        let token = Found {
            scope: dsl::parse("{catalog: B}").unwrap(),
            carrier: Carrier::Token,
        };
        pass_on(&mut h, &token, "front", &settings);
        assert_eq!(h["x-auth-token"], "t0k!SCOPE!{catalog: B}");
        pass_on(&mut h, &token, "catalog", &settings);
        assert_eq!(h["x-auth-token"], "t0k");

        let workload = Found {
            scope: dsl::parse("{catalog: B}").unwrap(),
            carrier: Carrier::Workload,
        };
        pass_on(&mut h, &workload, "front", &settings);
        assert_eq!(h["x-scope"], "{catalog: B}");
    }

    #[test]
    fn a_percent_encoded_suffix_is_read_and_stripped_like_a_literal_one() {
        let encoded = "x%21SCOPE%21%7Bimage%3A%20Nantes%7D";
        let (bare, scope) = split_token(encoded).unwrap();
        assert_eq!((bare, scope.as_str()), ("x", "{image: Nantes}"));
        let lower = split_token("x%21scope%21%7Bimage%3A%20Paris%7D").unwrap();
        assert_eq!(lower.1, "{image: Paris}");
        assert_eq!(split_token("x%21SCOPX%21"), None);
        let (text, carrier) = found(&[("x-auth-token", encoded)], None).unwrap();
        assert_eq!(
            (text.as_str(), carrier),
            ("{image: Nantes}", Carrier::Token)
        );
        let mut h = headers(&[("x-auth-token", encoded)]);
        strip_token_suffix(&mut h, &CarrierSettings::default());
        assert_eq!(h["x-auth-token"], "x");
    }

    #[test]
    fn the_service_sees_its_token_without_the_suffix() {
        let mut h = headers(&[("x-auth-token", "t0k!SCOPE!{catalog: B}")]);
        let stripped = strip_token_suffix(&mut h, &CarrierSettings::default());
        assert_eq!(h["x-auth-token"], "t0k");
        assert_eq!(stripped, Some(("t0k".into(), "{catalog: B}".into())));
    }

    #[test]
    fn a_bare_token_seen_before_with_a_scope_brings_it_back() {
        let remembered =
            |token: &str| (token == "t0k").then(|| dsl::parse("{catalog: C}").unwrap());
        let known = Known {
            workload_default: None,
            token_scope: &remembered,
        };
        let h = headers(&[("x-auth-token", "t0k")]);
        let found = extract(&h, &known, &CarrierSettings::default())
            .unwrap()
            .unwrap();
        assert_eq!(found.scope.to_string(), "{catalog: C}");
        assert_eq!(found.carrier, Carrier::Token);
    }

    #[test]
    fn a_token_validation_gets_the_scope_of_the_token_it_names() {
        let remembered =
            |token: &str| (token == "user").then(|| dsl::parse("{identity: Paris}").unwrap());
        let known = Known {
            workload_default: None,
            token_scope: &remembered,
        };
        // keystonemiddleware's call: its own (service) token, and the user's it checks.
        let mut h = headers(&[("x-auth-token", "service"), ("x-subject-token", "user")]);
        let found = extract(&h, &known, &CarrierSettings::default())
            .unwrap()
            .unwrap();
        assert_eq!(found.scope.to_string(), "{identity: Paris}");
        assert_eq!(found.carrier, Carrier::Subject);
        // Consumed by the identity call; nothing written onto the service's token.
        pass_on(&mut h, &found, "identity", &CarrierSettings::default());
        assert_eq!(h["x-auth-token"], "service");
        assert!(!h.contains_key("x-scope"));
        let other = headers(&[("x-auth-token", "service"), ("x-subject-token", "else")]);
        assert!(extract(&other, &known, &CarrierSettings::default())
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_token_is_bound_to_the_scope_its_request_passes_on_in_any_header() {
        let settings = CarrierSettings::default();
        let mut h = headers(&[("x-auth-token", "t0k"), ("x-scope", "{identity: Paris}")]);
        assert_eq!(
            token_with_scope(&mut h, &settings),
            Some(("t0k".into(), "{identity: Paris}".into()))
        );
        let mut h = headers(&[
            ("x-auth-token", "t0k"),
            ("baggage", "scope=%7Bidentity%3A%20Paris%7D"),
        ]);
        assert_eq!(
            token_with_scope(&mut h, &settings).map(|(_, scope)| scope),
            Some("{identity: Paris}".into())
        );
        let mut suffixed = headers(&[("x-auth-token", "t0k!SCOPE!{identity: Nantes}")]);
        assert_eq!(
            token_with_scope(&mut suffixed, &settings),
            Some(("t0k".into(), "{identity: Nantes}".into()))
        );
        assert_eq!(suffixed["x-auth-token"], "t0k");
        assert_eq!(
            token_with_scope(&mut headers(&[("x-auth-token", "t0k")]), &settings),
            None
        );
        assert_eq!(
            token_with_scope(&mut headers(&[("x-scope", "{a: B}")]), &settings),
            None
        );
        assert_eq!(token_with_scope(&mut HeaderMap::new(), &settings), None);
    }
}
