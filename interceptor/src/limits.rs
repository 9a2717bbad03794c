//! Caps on what one workload may hold at once (connections, requests in flight): past its cap
//! a workload is refused at once, so one noisy client cannot take slots or memory from the
//! others. (A peer's cap is a semaphore of its link, in `peer/`.)
use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, PoisonError, Weak,
    },
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

/// Up to `max` slots per key. A connection takes its key's `KeySlots` once; its requests then
/// take and give back slots with one atomic operation each, no lock nor hashing per request.
pub struct Slots<K: Eq + Hash + Clone> {
    max: usize,
    /// The keys held now; an entry goes when the last holder of its `KeySlots` does.
    held: Mutex<HashMap<K, Weak<KeySlots<K>>>>,
}

/// One key's slots, shared by whoever holds them (its connections, its slots taken).
pub struct KeySlots<K: Eq + Hash + Clone> {
    slots: Arc<Slots<K>>,
    key: K,
    taken: AtomicUsize,
}

/// One slot, given back when dropped.
pub struct Slot<K: Eq + Hash + Clone> {
    of: Arc<KeySlots<K>>,
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

    /// The slots of `key`, shared with every other holder of them.
    pub fn of(self: &Arc<Self>, key: K) -> Arc<KeySlots<K>> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = held.get(&key).and_then(Weak::upgrade) {
            return shared;
        }
        let shared = Arc::new(KeySlots {
            slots: self.clone(),
            key: key.clone(),
            taken: AtomicUsize::new(0),
        });
        held.insert(key, Arc::downgrade(&shared));
        shared
    }

    /// A slot for `key`, unless it holds `max` already.
    pub fn try_take(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        self.of(key).try_take()
    }
}

impl<K: Eq + Hash + Clone> KeySlots<K> {
    pub fn max(&self) -> usize {
        self.slots.max
    }

    /// A slot, unless `max` are taken already.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot<K>> {
        let max = self.slots.max;
        self.taken
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |taken| {
                (taken < max).then_some(taken + 1)
            })
            .ok()?;
        Some(Slot { of: self.clone() })
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        self.of.taken.fetch_sub(1, Ordering::Release);
    }
}

impl<K: Eq + Hash + Clone> Drop for KeySlots<K> {
    /// Keys come and go (cgroups): none is kept once nobody holds it. A holder that came for
    /// the same key meanwhile made an entry of its own, which stays.
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if held.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
            held.remove(&self.key);
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

    #[test]
    fn holders_of_a_key_share_its_slots_and_it_is_forgotten_after_the_last() {
        let slots = Slots::new(2);
        let (first, second) = (slots.of(3u64), slots.of(3u64));
        let taken = first.try_take().unwrap();
        let also = second.try_take().unwrap();
        assert!(first.try_take().is_none(), "a third slot past the cap");
        drop(taken);
        assert!(
            second.try_take().is_some(),
            "a slot given back is free to all"
        );
        drop((first, second));
        assert!(
            !slots.held.lock().unwrap().is_empty(),
            "a slot taken holds its key"
        );
        drop(also);
        assert!(slots.held.lock().unwrap().is_empty());
    }
}
