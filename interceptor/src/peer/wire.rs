//! What travels between sites besides the requests themselves: the headers that mark a
//! forwarded request, the peer API's own paths, and the heartbeat answer.
use std::collections::BTreeMap;

use hyper::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// Marks a request forwarded by a site (named in the value): the receiver executes it against
/// its local instance and never interprets its scope again.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("x-cheops-forwarded-by");
/// The service a forwarded request is for.
pub const FORWARDED_SERVICE: HeaderName = HeaderName::from_static("x-cheops-service");
/// Set by a site on its answer when its instance could not be reached: the request never got
/// to the service, so a fallback is safe even for a request that is not idempotent.
pub const NOT_DELIVERED: HeaderName = HeaderName::from_static("x-cheops-not-delivered");
/// Marks a forwarded request whose client spoke HTTP/2 to the service (gRPC): the receiving
/// site speaks HTTP/2 to its instance too. Peer links are HTTP/2 whatever the client spoke.
pub const INSTANCE_HTTP2: HeaderName = HeaderName::from_static("x-cheops-instance-http2");
pub const HEARTBEAT_PATH: &str = "/cheops/heartbeat";
/// The peer API path that takes replication messages.
pub const REPLICATION_PATH: &str = "/cheops/replication";
/// The service name that replication messages travel under on peer connections.
pub const REPLICATION_SERVICE: &str = "cheops-replication";

/// What a heartbeat answer holds: the answering site's own measurements.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Heartbeat {
    pub site: String,
    /// Round trips from the answering site to the peers it sees up, in microseconds.
    pub round_trips_us: BTreeMap<String, u64>,
}

/// Site and service names are checked at start-up; a name that is no header value (non-ASCII)
/// travels percent-encoded rather than not at all.
pub fn header_value(text: &str) -> HeaderValue {
    match HeaderValue::from_str(text) {
        Ok(value) if text.is_ascii() => value,
        _ => {
            let encoded =
                percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC);
            HeaderValue::from_str(&encoded.to_string()).unwrap_or(HeaderValue::from_static("?"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_are_no_header_value_are_percent_encoded() {
        assert_eq!(header_value("Paris"), "Paris");
        assert_eq!(header_value("Zürich"), "Z%C3%BCrich");
    }
}
