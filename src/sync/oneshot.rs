//! A single-use reply slot between two threads: one value, sent once from any thread, awaited
//! once by a task on another.
//!
//! Owns: the cross-shard reply. The shard that owns a batch's keys answers through the
//! [`Sender`]; the connection's shard awaits the [`Receiver`]. One `Arc` allocation per channel.
//!
//! Must never: block a thread; let one side touch the value or the waker while the other side
//! owns it; lose a wake-up; drop the value twice or not at all; clone a waker it does not need
//! (glommio 0.9 counts a task's waker clones in an `i16`).
//!
//! # Protocol
//! The shared `Inner` holds a state byte and two cells. The sender only ever sets `COMPLETE`,
//! the receiver only ever sets `CLOSED` and sets or clears `WAKER_SET`, and the byte says who owns
//! each cell at any moment:
//! - The value cell is the sender's until it sets `COMPLETE`. After that it is the receiver's,
//!   unless the receiver had set `CLOSED` first: then the sender takes its value back and returns
//!   it from [`Sender::send`].
//! - The waker cell is the receiver's while `WAKER_SET` is clear. The receiver publishes a waker by
//!   setting `WAKER_SET`, and takes the cell back by clearing it before touching it again. If the
//!   sender's `COMPLETE` finds `WAKER_SET` set and `CLOSED` clear, the cell is the sender's for
//!   good: it takes the waker and wakes it.
//!
//! No wake-up is lost because the sender and the receiver each learn, from the one atomic
//! operation that publishes their own half, whether the other half was already there: whichever
//! of the two comes second does the completing (the sender wakes, or the receiver takes the value
//! without waiting).
//!
//! Under `cfg(corekv_mutant = "...")` a few lines are deliberately weakened so that
//! `loom-tests/mutants.sh` can show each loom model fails without them; no normal build sets it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::shim::{Arc, AtomicU8, Ordering, UnsafeCell};

/// The receiver has stored a waker that the sender may take. Set and cleared by the receiver.
const WAKER_SET: u8 = 0b001;
/// The sender is finished: it either wrote the value or was dropped. Set once, by the sender.
const COMPLETE: u8 = 0b010;
/// The receiver was dropped and will never read the value. Set once, by the receiver.
const CLOSED: u8 = 0b100;

/// Ordering of the sender's `COMPLETE`: Release publishes the value written just before it to the
/// receiver that observes `COMPLETE`; Acquire makes the waker the receiver published with
/// `WAKER_SET` visible before the sender takes it.
const COMPLETE_ORDERING: Ordering = if cfg!(corekv_mutant = "oneshot_relaxed_publish") {
    Ordering::Acquire
} else {
    Ordering::AcqRel
};

/// Ordering of the receiver's first look at the state in [`Receiver::poll`]: Acquire pairs with
/// the sender's Release so that the value is fully written before the receiver reads it.
const OBSERVE_ORDERING: Ordering = if cfg!(corekv_mutant = "oneshot_relaxed_observe") {
    Ordering::Relaxed
} else {
    Ordering::Acquire
};

/// Ordering of the receiver's `WAKER_SET`: Release publishes the waker written just before it to
/// the sender; Acquire lets the receiver read the value if it finds `COMPLETE` already set.
const WAKER_SET_ORDERING: Ordering = if cfg!(corekv_mutant = "oneshot_relaxed_waker") {
    Ordering::Acquire
} else {
    Ordering::AcqRel
};

/// Creates a reply slot: the [`Sender`] goes to the thread that computes the answer, the
/// [`Receiver`] stays with the task that awaits it.
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: AtomicU8::new(0),
        value: UnsafeCell::new(None),
        waker: UnsafeCell::new(None),
    });
    let sender = Sender {
        inner: Some(inner.clone()),
    };
    let receiver = Receiver { inner: Some(inner) };
    (sender, receiver)
}

/// The sending half: [`send`](Sender::send) consumes it; dropping it unsent resolves the
/// [`Receiver`] to [`Canceled`].
pub struct Sender<T> {
    /// The shared slot; `None` only once `send` has taken it, so that `Drop` does nothing more.
    inner: Option<Arc<Inner<T>>>,
}

/// The receiving half: a future that resolves to the sent value, or to [`Canceled`] if the
/// [`Sender`] was dropped without sending. Dropping it makes a later `send` hand the value back.
/// Polling it again after it resolved is a programmer error, and panics.
pub struct Receiver<T> {
    /// The shared slot; `None` once the future has completed, so that it releases the slot at
    /// once and a poll after completion is caught.
    inner: Option<Arc<Inner<T>>>,
}

/// The [`Sender`] was dropped without sending a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Canceled;

impl fmt::Display for Canceled {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("the reply's sender was dropped without sending a value")
    }
}

impl std::error::Error for Canceled {}

/// The slot both halves share; see the module docs for which side owns which cell when.
struct Inner<T> {
    /// `WAKER_SET | COMPLETE | CLOSED`: the only field both threads touch without owning it.
    state: AtomicU8,
    /// The value, written once by the sender and taken once by whoever owns it after `COMPLETE`.
    value: UnsafeCell<Option<T>>,
    /// The waker of the task polling the receiver, kept across polls so that it is cloned only
    /// when the task polls with a waker that would not wake the same task.
    waker: UnsafeCell<Option<Waker>>,
}

// SAFETY: `Inner` is shared between exactly two threads, and the state byte's protocol (module
// docs) gives each cell one owner at a time, handing it over only through an AcqRel or
// Release/Acquire pair on `state`. So no cell is ever accessed from two threads at once, and a `T`
// only ever moves between threads, which `T: Send` allows; no `&T` is shared, so `T: Sync` is not
// needed. `Waker` is `Send + Sync`.
unsafe impl<T: Send> Sync for Inner<T> {}

impl<T> Inner<T> {
    /// Sets `COMPLETE` and, if the receiver is waiting, wakes it. Returns the state before.
    fn complete(&self) -> u8 {
        let before = self.state.fetch_or(COMPLETE, COMPLETE_ORDERING);
        if before & (WAKER_SET | CLOSED) == WAKER_SET {
            // SAFETY: `COMPLETE` found `WAKER_SET` set and `CLOSED` clear, so the waker cell is
            // now this sender's for good: the receiver reads it again only after clearing
            // `WAKER_SET`, which tells it `COMPLETE` is set and it must not touch the cell. The
            // Acquire half of `COMPLETE_ORDERING` makes the receiver's write of the waker visible.
            let waker = self.waker.with_mut(|waker| unsafe { (*waker).take() });
            waker
                .expect("the receiver stores a waker before it sets WAKER_SET")
                .wake();
        }
        before
    }

    /// Takes the value out of its cell.
    ///
    /// # Safety
    /// The caller must own the value cell: it is the receiver and has observed `COMPLETE` with
    /// Acquire ordering, or it is the sender and has observed `CLOSED` when setting `COMPLETE`.
    unsafe fn take_value(&self) -> Option<T> {
        // SAFETY: the caller owns the cell (see above), so no other access can overlap this one.
        self.value.with_mut(|value| unsafe { (*value).take() })
    }
}

impl<T> Sender<T> {
    /// Sends `value` to the receiver and wakes it. Returns `Err(value)` if the receiver was
    /// dropped, so that the caller can dispose of it (for example on its own thread).
    pub fn send(mut self, value: T) -> Result<(), T> {
        let inner = self
            .inner
            .take()
            .expect("a Sender holds its slot until send or drop, and both consume it");
        // SAFETY: this sender has not set `COMPLETE` yet, so the value cell is still its own.
        inner.value.with_mut(|slot| unsafe { *slot = Some(value) });
        let before = inner.complete();
        if before & CLOSED != 0 && !cfg!(corekv_mutant = "oneshot_ignore_closed") {
            // SAFETY: the receiver set `CLOSED` before this `COMPLETE`, so it has left without
            // touching the value cell and never will: the cell is this sender's again.
            let value = unsafe { inner.take_value() };
            return Err(value.expect("the value was written just above"));
        }
        Ok(())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // Completing without a value is how the receiver learns that no value will come.
        if let Some(inner) = self.inner.take()
            && !cfg!(corekv_mutant = "oneshot_sender_drop_no_wake")
        {
            inner.complete();
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, Canceled>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let inner = this
            .inner
            .as_ref()
            .expect("a oneshot::Receiver must not be polled after it completed");

        let mut state = inner.state.load(OBSERVE_ORDERING);
        if state & COMPLETE == 0 && state & WAKER_SET != 0 {
            // Polled again while a waker is published: the sender may take it at any moment, so
            // take the cell back before reading it. Acquire in case `COMPLETE` is set meanwhile.
            state = inner.state.fetch_and(!WAKER_SET, Ordering::AcqRel);
        }
        if state & COMPLETE == 0 {
            inner.waker.with_mut(|waker| {
                // SAFETY: `WAKER_SET` is clear, so the waker cell is this receiver's alone.
                let waker = unsafe { &mut *waker };
                // Clone only when the stored waker would wake another task: glommio counts a
                // task's waker clones in an `i16`.
                if !waker.as_ref().is_some_and(|stored| stored.will_wake(context.waker())) {
                    *waker = Some(context.waker().clone());
                }
            });
            state = inner.state.fetch_or(WAKER_SET, WAKER_SET_ORDERING);
            // If the sender completed before it could see the waker, it will not wake anyone:
            // take the value now rather than wait for a wake-up that never comes.
            if state & COMPLETE == 0 || cfg!(corekv_mutant = "oneshot_no_recheck") {
                return Poll::Pending;
            }
        }

        // SAFETY: this receiver observed `COMPLETE` with Acquire ordering and has not set
        // `CLOSED`, so the value cell is its own from now on.
        let value = unsafe { inner.take_value() };
        // Completed: release the slot now, so a waker the sender may still hold is the only thing
        // left to it, and a later poll panics instead of reporting a false `Canceled`.
        this.inner = None;
        Poll::Ready(value.ok_or(Canceled))
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        // The cells need no ordering from this operation (the reasoning below rests on which
        // bits were set, not on data they publish), but AcqRel keeps every transition of the state
        // byte a synchronising one, at no cost worth saving on this cold path.
        let before = inner.state.fetch_or(CLOSED, Ordering::AcqRel);
        if before & (COMPLETE | WAKER_SET) != (COMPLETE | WAKER_SET) {
            // Free the waker now rather than when the sender lets go of the slot, which may be
            // much later on another thread.
            // SAFETY: the sender owns the waker cell only if its `COMPLETE` found `WAKER_SET` set
            // and `CLOSED` clear. Here either `COMPLETE` was not set yet, so the sender will find
            // `CLOSED` set, or `COMPLETE` found `WAKER_SET` clear (only this receiver sets it).
            drop(inner.waker.with_mut(|waker| unsafe { (*waker).take() }));
        }
        // A value the sender already delivered is dropped with the slot, by whichever side lets
        // go of it last.
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Receiver").finish_non_exhaustive()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::shim::block_on;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;
    use std::thread;

    /// Counts its drops, to prove that a value is dropped exactly once whatever the two sides do.
    struct Tracked(std::sync::Arc<AtomicUsize>);

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A waker that counts how often it was woken.
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn drops() -> (std::sync::Arc<AtomicUsize>, Tracked) {
        let count = std::sync::Arc::new(AtomicUsize::new(0));
        let tracked = Tracked(count.clone());
        (count, tracked)
    }

    // Goal: a value sent from another thread reaches a receiver that is already waiting.
    #[test]
    fn value_sent_from_another_thread_arrives() {
        for round in 0..1_000u32 {
            let (sender, receiver) = channel();
            let sending = thread::spawn(move || sender.send(round));
            assert_eq!(block_on(receiver), Ok(round));
            assert_eq!(sending.join().unwrap(), Ok(()));
        }
    }

    // Goal: a value sent before the first poll is returned by that first poll.
    #[test]
    fn value_sent_before_poll_is_ready_at_once() {
        let (sender, mut receiver) = channel();
        assert_eq!(sender.send("reply"), Ok(()));
        let mut context = Context::from_waker(Waker::noop());
        assert_eq!(Pin::new(&mut receiver).poll(&mut context), Poll::Ready(Ok("reply")));
    }

    // Goal: a sender dropped without sending resolves the receiver to Canceled, across threads.
    #[test]
    fn dropped_sender_cancels() {
        for _ in 0..1_000 {
            let (sender, receiver) = channel::<u64>();
            let dropping = thread::spawn(move || drop(sender));
            assert_eq!(block_on(receiver), Err(Canceled));
            dropping.join().unwrap();
        }
        assert!(!Canceled.to_string().is_empty());
    }

    // Goal: sending to a dropped receiver hands the value back, and it is dropped exactly once.
    #[test]
    fn send_to_dropped_receiver_returns_value() {
        let (count, tracked) = drops();
        let (sender, receiver) = channel();
        drop(receiver);
        let returned = sender.send(tracked).expect_err("the receiver was dropped");
        assert_eq!(count.load(Ordering::SeqCst), 0);
        drop(returned);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    // Goal: a delivered value is dropped exactly once whichever side lets go of the slot last,
    // including a receiver dropped after the send but before it polled.
    #[test]
    fn unreceived_value_is_dropped_once() {
        for _ in 0..1_000 {
            let (count, tracked) = drops();
            let (sender, receiver) = channel();
            // Either the send wins and the slot drops the value when the last side lets go, or
            // the drop wins and the value comes back as `Err`, dropped on the sending thread.
            let sending = thread::spawn(move || drop(sender.send(tracked)));
            drop(receiver);
            sending.join().unwrap();
            assert_eq!(count.load(Ordering::SeqCst), 1);
        }
    }

    // Goal: a received value belongs to the receiver, and is dropped once, by it.
    #[test]
    fn received_value_is_dropped_once() {
        let (count, tracked) = drops();
        let (sender, receiver) = channel();
        assert!(sender.send(tracked).is_ok(), "the receiver is alive");
        let value = block_on(receiver).expect("the value was sent");
        assert_eq!(count.load(Ordering::SeqCst), 0);
        drop(value);
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    // Goal: polling again with a different waker makes the send wake the new one, not the old,
    // and polling again with the same waker does not clone it.
    #[test]
    fn repoll_with_another_waker_wakes_the_latest() {
        let first = std::sync::Arc::new(CountingWaker(AtomicUsize::new(0)));
        let second = std::sync::Arc::new(CountingWaker(AtomicUsize::new(0)));
        let first_waker = Waker::from(first.clone());
        let second_waker = Waker::from(second.clone());
        let (sender, mut receiver) = channel();

        let mut context = Context::from_waker(&first_waker);
        assert!(Pin::new(&mut receiver).poll(&mut context).is_pending());
        assert!(Pin::new(&mut receiver).poll(&mut context).is_pending());
        // The waker itself, its `Waker`, and one stored clone.
        assert_eq!(std::sync::Arc::strong_count(&first), 3);

        let mut context = Context::from_waker(&second_waker);
        assert!(Pin::new(&mut receiver).poll(&mut context).is_pending());
        assert_eq!(std::sync::Arc::strong_count(&first), 2);

        sender.send(7).unwrap();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert_eq!(Pin::new(&mut receiver).poll(&mut context), Poll::Ready(Ok(7)));
    }

    // Goal: a waiting receiver that is dropped frees its waker at once, and the send fails.
    #[test]
    fn dropped_waiting_receiver_frees_its_waker() {
        let counting = std::sync::Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counting.clone());
        let (sender, mut receiver) = channel();
        let mut context = Context::from_waker(&waker);
        assert!(Pin::new(&mut receiver).poll(&mut context).is_pending());
        drop(receiver);
        assert_eq!(std::sync::Arc::strong_count(&counting), 2);
        assert_eq!(sender.send(1), Err(1));
        assert_eq!(counting.0.load(Ordering::SeqCst), 0);
    }

    // Goal: a poll after completion is a programmer error, caught loudly.
    #[test]
    #[should_panic(expected = "polled after it completed")]
    fn poll_after_completion_panics() {
        let (sender, mut receiver) = channel();
        sender.send(()).unwrap();
        let mut context = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut receiver).poll(&mut context).is_ready());
        let _ = Pin::new(&mut receiver).poll(&mut context);
    }

    // Goal: both halves can cross threads whenever the value can.
    #[test]
    fn halves_are_send() {
        fn assert_send<S: Send>() {}
        assert_send::<Sender<Vec<u8>>>();
        assert_send::<Receiver<Vec<u8>>>();
    }
}
