//! A box for a request's state whose memory block, once the state is dropped, is kept by its
//! thread for the next request's (as `buffers` keeps the buffers): a request costs no
//! allocation of it, and an idle connection's task still holds no state of a request (a task
//! that did would be as large, and the memory idle connections keep would more than double).
//! One block is kept per thread, of the last layout given back.
use std::{
    alloc::{self, Layout},
    cell::Cell,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    ptr::NonNull,
    task::{Context, Poll},
};

/// A block kept for the next `KeptBox` of its layout on this thread; freed with the thread.
struct Spare(Cell<Option<(Layout, NonNull<u8>)>>);

impl Drop for Spare {
    fn drop(&mut self) {
        if let Some((layout, block)) = self.0.take() {
            // SAFETY: the block was allocated with this layout, and nothing else holds it.
            unsafe { alloc::dealloc(block.as_ptr(), layout) };
        }
    }
}

thread_local! {
    static SPARE: Spare = const { Spare(Cell::new(None)) };
}

/// A value in a block of memory of its own (so that it is pinned, as a `Box`'s), taken from
/// this thread's spare block when that is of its layout, and kept there once it is dropped.
pub struct KeptBox<T> {
    value: NonNull<T>,
    /// It owns a `T`, which it drops.
    owns: PhantomData<T>,
}

// SAFETY: a `KeptBox` owns its value as a `Box` does; the block is only memory, which any
// thread may free or keep.
unsafe impl<T: Send> Send for KeptBox<T> {}

impl<T> KeptBox<T> {
    /// The value `make` gives, made once its block is there (so that it can be written in it
    /// directly rather than moved there whole).
    #[inline(always)]
    pub fn new_with(make: impl FnOnce() -> T) -> KeptBox<T> {
        const { assert!(size_of::<T>() > 0, "a value of no size needs no block") };
        let layout = Layout::new::<T>();
        let spare = SPARE
            .try_with(|spare| match spare.0.take() {
                Some((kept, block)) if kept == layout => Some(block),
                other => {
                    spare.0.set(other);
                    None
                }
            })
            .ok()
            .flatten();
        let block = spare.unwrap_or_else(|| {
            // SAFETY: the layout is not of size 0 (asserted above).
            let block = unsafe { alloc::alloc(layout) };
            NonNull::new(block).unwrap_or_else(|| alloc::handle_alloc_error(layout))
        });
        let value = block.cast::<T>();
        // SAFETY: the block is of `T`'s layout, and holds no value.
        unsafe { value.as_ptr().write(make()) };
        KeptBox {
            value,
            owns: PhantomData,
        }
    }
}

impl<T> Drop for KeptBox<T> {
    fn drop(&mut self) {
        // SAFETY: the value is there, and dropped once, in place (it never moved: pinned).
        unsafe { self.value.as_ptr().drop_in_place() };
        let layout = Layout::new::<T>();
        let block = self.value.cast::<u8>();
        let replaced = SPARE.try_with(|spare| spare.0.replace(Some((layout, block))));
        let freed = match replaced {
            Ok(previous) => previous,
            // The thread's spare is gone (the thread is ending): this block goes too.
            Err(_) => Some((layout, block)),
        };
        if let Some((layout, block)) = freed {
            // SAFETY: a block allocated with this layout, which nothing holds any more.
            unsafe { alloc::dealloc(block.as_ptr(), layout) };
        }
    }
}

impl<F: Future> Future for KeptBox<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the value stays where it is until it is dropped, however the box moves.
        let value = unsafe { Pin::new_unchecked(&mut *self.value.as_ptr()) };
        value.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::{rc::Rc, sync::Arc};

    use super::*;

    #[test]
    fn a_block_given_back_is_the_next_one_of_its_layout_and_every_value_is_dropped() {
        let dropped = Arc::new(());
        let first = KeptBox::new_with(|| (dropped.clone(), [1u8; 100]));
        let at = first.value.as_ptr() as usize;
        drop(first);
        assert_eq!(Arc::strong_count(&dropped), 1);
        let again = KeptBox::new_with(|| (dropped.clone(), [2u8; 100]));
        assert_eq!(again.value.as_ptr() as usize, at);
        // SAFETY: the value is there until `again` is dropped.
        assert_eq!(unsafe { again.value.as_ref() }.1, [2; 100]);
        // Another layout takes a block of its own, and leaves this one kept.
        let other = KeptBox::new_with(|| Rc::new(3u64));
        assert_ne!(other.value.as_ptr() as usize, at);
        drop(again);
        drop(other);
        assert_eq!(Arc::strong_count(&dropped), 1);
    }

    #[tokio::test]
    async fn a_future_in_a_kept_box_runs_to_its_end() {
        let answer = KeptBox::new_with(|| async {
            tokio::task::yield_now().await;
            42
        });
        assert_eq!(answer.await, 42);
    }
}
