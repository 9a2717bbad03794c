//! Caps on what one workload may hold at once (connections, requests in flight): past its cap
//! a workload is refused at once, so one noisy client cannot take slots or memory from the
//! others. (A peer's cap is a semaphore of its link, in `peer/`.)
use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, PoisonError},
};

use hyper::{header::HeaderValue, Response, StatusCode};

use crate::http::{error_response, ProxyBody};

/// How long a refused client is asked to wait before trying again, in seconds.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// A request refused because a cap is reached: `503`, `Retry-After`, the sentence.
pub fn refused(message: String) -> Response<ProxyBody> {
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, message);
    response.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        HeaderValue::from(RETRY_AFTER_SECONDS),
    );
    response
}

/// A connection refused because its workload holds `max` already, as HTTP/1.1 bytes: the
/// connection is refused before any HTTP is served on it.
pub fn refused_connection_bytes(service: &str, max: usize) -> Vec<u8> {
    let body = format!(
        "cheops: service '{service}': this workload holds {max} connections already \
         (`proxy.max_connections_per_workload`); retry later\n"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nretry-after: {RETRY_AFTER_SECONDS}\r\n\
         content-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Up to `max` slots per key.
pub struct Slots<K: Eq + Hash + Clone> {
    max: usize,
    held: Mutex<HashMap<K, usize>>,
}

/// One slot, given back when dropped.
pub struct Slot<K: Eq + Hash + Clone> {
    slots: Arc<Slots<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Slots<K> {
    pub fn new(max: usize) -> Arc<Slots<K>> {
        Arc::new(Slots {
            max,
            held: Mutex::default(),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot for `key`, unless it holds `max` already.
    pub fn try_take(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: self.clone(),
            key,
        })
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            // Keys come and go (cgroups): none is kept once it holds nothing.
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_its_own_slots_given_back_when_dropped() {
        let slots = Slots::new(2);
        let a1 = slots.try_take(1u64).unwrap();
        let _a2 = slots.try_take(1u64).unwrap();
        assert!(slots.try_take(1u64).is_none(), "a third slot past the cap");
        let _b = slots.try_take(2u64).expect("another key is not held back");
        drop(a1);
        assert!(slots.try_take(1u64).is_some(), "a slot given back is free");
    }

    #[test]
    fn a_key_holding_nothing_is_forgotten() {
        let slots = Slots::new(1);
        drop(slots.try_take(7u64).unwrap());
        assert!(slots.held.lock().unwrap().is_empty());
    }
}
