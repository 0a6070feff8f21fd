//! The one switch between `std` and `loom`: every type the [`super`] primitives share across
//! threads comes from here.
//!
//! Owns: the choice of implementation. A normal build gets `std`'s atomics, `Arc` and `Mutex`, and
//! an [`UnsafeCell`] wrapper with loom's closure API; a `--cfg loom` build (only ever made by
//! `loom-tests/`, which compiles these very files) gets loom's checked versions, so each model
//! explores every interleaving of the production code itself.
//!
//! Must never: hold logic of its own beyond matching the two APIs, or be bypassed. A primitive
//! in [`super`] that imports `std::sync` directly escapes the loom models without anyone
//! noticing.

#[cfg(loom)]
pub use loom::cell::UnsafeCell;
#[cfg(loom)]
pub use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
#[cfg(loom)]
pub use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub use std::sync::{Arc, Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning.
///
/// A panic while the lock was held cannot leave the primitives' guarded data half-updated: each
/// critical section in [`super`] finishes every step that can panic (such as cloning a waker)
/// before it changes the data. Carrying on therefore beats spreading one thread's panic to every
/// other thread that shares the primitive.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `std::cell::UnsafeCell` behind loom's API, so that code written once runs under both.
///
/// Loom cannot hand out a bare pointer, because it must see where each access starts and ends to
/// check it against the other threads: it lends the pointer to a closure instead. This wrapper
/// does the same with no checking and no cost, so the primitives' accesses read the same in both
/// builds.
#[cfg(not(loom))]
#[derive(Debug, Default)]
pub struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    /// Wraps `data`.
    pub const fn new(data: T) -> UnsafeCell<T> {
        UnsafeCell(std::cell::UnsafeCell::new(data))
    }

    /// Calls `f` with a shared pointer to the contents; the caller's protocol must rule out a
    /// concurrent `with_mut`.
    #[inline(always)]
    pub fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Calls `f` with an exclusive pointer to the contents; the caller's protocol must rule out
    /// any concurrent access.
    #[inline(always)]
    pub fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Drives `future` to completion on the calling thread, parking between polls: the std twin of
/// `loom::future::block_on`, for the primitives' unit tests.
#[cfg(all(test, not(loom)))]
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};

    /// Wakes the blocked thread by unparking it.
    struct ThreadWaker(std::thread::Thread);

    impl Wake for ThreadWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }

    let waker = Waker::from(std::sync::Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            // A wake-up that came before the park leaves the thread's token set, so this park
            // returns at once instead of losing it; a spurious return only costs one more poll.
            Poll::Pending => std::thread::park(),
        }
    }
}
