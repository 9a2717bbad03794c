//! The buffers a thread's requests are served with (the bytes read of a client, the head sent
//! to the instance, the instance's answer, the head the client gets), given back after each
//! request for the next: a request costs no allocation of them, and an idle connection still
//! holds none. Buffers past the size of a common request are not kept, nor more than a
//! request takes at once, so that a thread keeps little.
use std::cell::RefCell;

/// At most as many buffers kept per thread: as many as one request holds at once.
const KEPT: usize = 4;
/// The least a buffer holds, so that any kept one serves any use without growing: what a
/// client's or an instance's connection is read with.
const LEAST: usize = 8 * 1024;
/// The largest buffer kept; a larger one (a large body's) is freed.
const LARGEST_KEPT: usize = 16 * 1024;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer of at least `capacity` bytes: one given back on this thread if any.
pub fn take(capacity: usize) -> Vec<u8> {
    let spare = SPARE.with(|spare| spare.borrow_mut().pop());
    match spare {
        Some(mut buffer) => {
            buffer.reserve(capacity);
            buffer
        }
        None => Vec::with_capacity(capacity.max(LEAST)),
    }
}

/// Keeps `buffer` for a next `take` on this thread, unless it is too large or enough are kept.
pub fn give_back(mut buffer: Vec<u8>) {
    if buffer.capacity() == 0 || buffer.capacity() > LARGEST_KEPT {
        return;
    }
    buffer.clear();
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < KEPT {
            spare.push(buffer);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty_and_a_large_one_is_not_kept() {
        let mut buffer = take(100);
        assert!(buffer.capacity() >= LEAST);
        buffer.extend_from_slice(b"a head");
        let at = buffer.as_ptr();
        give_back(buffer);
        let again = take(10);
        assert_eq!((again.as_ptr(), again.len()), (at, 0));
        give_back(again);
        give_back(take(LARGEST_KEPT + 1));
        assert!(take(10).capacity() < LARGEST_KEPT);
    }
}
