//! Loom models of `corekv::sync::oneshot`, the cross-shard reply slot.
//!
//! Each model runs the production code on loom threads, asserts one property in every
//! interleaving loom explores, and names the outcomes its executions must reach between them, so
//! that a search that skipped the interesting case fails instead of passing. `mutants.sh` shows
//! each model fails when the line it guards is weakened. Loom adds three checks to every model: a
//! cell accessed by two threads with no happens-before edge between them panics ("causality
//! violation"), a `block_on` that no thread will ever wake panics ("deadlock"), and a leaked
//! `Arc` panics.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::thread;
use loom_tests::sync::oneshot::{Canceled, channel};
use loom_tests::{FirstPoll, block_on_noting_first_poll, model};

/// The two ways a waiting receiver can complete; a model that reaches only one is vacuous.
const READY_OR_WOKEN: &[&str] = &["ready at first poll", "pending at first poll"];

/// A reply that counts its drops, so a model can assert it is dropped exactly once.
struct Reply {
    /// The payload, checked on arrival.
    value: u32,
    /// Shared with the model: how many times a `Reply` holding it was dropped.
    drops: Arc<AtomicUsize>,
}

impl Reply {
    fn new(value: u32) -> (Reply, Arc<AtomicUsize>) {
        let drops = Arc::new(AtomicUsize::new(0));
        let reply = Reply {
            value,
            drops: drops.clone(),
        };
        (reply, drops)
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

// Property: a value sent on one thread is received on another exactly once, intact, and dropped
// exactly once, by its receiver; whether the receiver polled before or after the send. Bitten by
// `oneshot_relaxed_publish`: the receiver then takes the value out of its cell with no
// happens-before edge from the sender's write into it.
#[test]
fn value_delivered_exactly_once() {
    model(READY_OR_WOKEN, |outcomes| {
        let (reply, drops) = Reply::new(42);
        let (sender, receiver) = channel();
        let sending = thread::spawn(move || sender.send(reply).is_ok());

        let (received, first_poll) = block_on_noting_first_poll(receiver);
        outcomes.record(first_poll.outcome());
        let received = received.expect("the sender sends");
        assert_eq!(received.value, 42);
        assert!(sending.join().unwrap(), "the receiver was alive");
        assert_eq!(drops.load(Ordering::SeqCst), 0, "delivered, not dropped");
        drop(received);
        assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped exactly once");
    });
}

// Property: no wake-up is lost. The receiver first polls with one waker and then waits with
// another (as a glommio task may be polled again with a new waker), while the sender sends on
// another thread; in every interleaving the waiting receiver is woken and completes (otherwise
// `block_on` reports a deadlock). Bitten by `oneshot_no_recheck` (a receiver that stores its
// waker just after the send waits for ever) and by `oneshot_relaxed_waker` (the sender takes the
// waker out of its cell with no happens-before edge from the receiver's write into it).
#[test]
fn no_lost_wakeup() {
    const OUTCOMES: &[&str] = &[
        "ready at once",
        "ready at the second waker's first poll",
        "woken through the second waker",
    ];
    model(OUTCOMES, |outcomes| {
        let (sender, mut receiver) = channel();
        let sending = thread::spawn(move || sender.send(7u32).is_ok());

        let first = Pin::new(&mut receiver).poll(&mut Context::from_waker(Waker::noop()));
        let value = match first {
            Poll::Ready(value) => {
                outcomes.record("ready at once");
                value
            }
            Poll::Pending => {
                // `block_on` polls with its own waker, which replaces the no-op one.
                let (value, first_poll) = block_on_noting_first_poll(receiver);
                outcomes.record(match first_poll {
                    FirstPoll::Ready => "ready at the second waker's first poll",
                    FirstPoll::Pending => "woken through the second waker",
                });
                value
            }
        };
        assert_eq!(value, Ok(7));
        assert!(sending.join().unwrap(), "the receiver was alive");
    });
}

// Property: a reply is never read before it is written. The sending shard fills a buffer (a loom
// cell, so every access is checked) and then sends; the receiving shard reads it once the reply
// arrived. Bitten by `oneshot_relaxed_publish` (the send no longer releases) and by
// `oneshot_relaxed_observe` (the receiver no longer acquires when it finds the reply there).
#[test]
fn reply_never_read_before_written() {
    model(READY_OR_WOKEN, |outcomes| {
        let buffer = Arc::new(UnsafeCell::new(0u64));
        let (sender, receiver) = channel();
        let sending = {
            let buffer = buffer.clone();
            thread::spawn(move || {
                // SAFETY: the receiving side reads the buffer only after the reply arrived,
                // which is the very ordering this model checks.
                buffer.with_mut(|buffer| unsafe { *buffer = 0xC0FFEE });
                sender.send(()).is_ok()
            })
        };

        let (reply, first_poll) = block_on_noting_first_poll(receiver);
        outcomes.record(first_poll.outcome());
        assert_eq!(reply, Ok(()));
        // SAFETY: the sender wrote the buffer before sending and never touches it again.
        let read = buffer.with(|buffer| unsafe { *buffer });
        assert_eq!(read, 0xC0FFEE);
        assert!(sending.join().unwrap(), "the receiver was alive");
    });
}

// Property: a receiver dropped before the send makes `send` hand the value back, and whatever the
// interleaving the value is dropped exactly once. The receiver polls once before it is dropped,
// so that its waker and the sender's completion race too. Bitten by `oneshot_ignore_closed`
// (`send` then claims success to a receiver that is gone).
#[test]
fn dropped_receiver_hands_the_value_back() {
    const OUTCOMES: &[&str] = &[
        "received before the drop",
        "delivered, then dropped unread",
        "handed back",
    ];
    model(OUTCOMES, |outcomes| {
        let (reply, drops) = Reply::new(5);
        let (sender, mut receiver) = channel();
        let receiver_gone = Arc::new(AtomicBool::new(false));
        let receiving = {
            let receiver_gone = receiver_gone.clone();
            thread::spawn(move || {
                let poll = Pin::new(&mut receiver).poll(&mut Context::from_waker(Waker::noop()));
                let received = poll.is_ready();
                // A received reply is dropped here; otherwise the receiver goes unsatisfied.
                drop(poll);
                drop(receiver);
                receiver_gone.store(true, Ordering::SeqCst);
                received
            })
        };

        let gone_before_send = receiver_gone.load(Ordering::SeqCst);
        let handed_back = match sender.send(reply) {
            Ok(()) => {
                assert!(!gone_before_send, "sent to a receiver already dropped");
                false
            }
            Err(returned) => {
                assert_eq!(returned.value, 5, "the value comes back intact");
                assert_eq!(drops.load(Ordering::SeqCst), 0, "returned, not dropped");
                true
            }
        };
        let received = receiving.join().unwrap();
        outcomes.record(match (received, handed_back) {
            (true, false) => "received before the drop",
            (false, false) => "delivered, then dropped unread",
            (false, true) => "handed back",
            (true, true) => panic!("the value was both received and handed back"),
        });
        assert_eq!(drops.load(Ordering::SeqCst), 1, "dropped exactly once");
    });
}

// Property: a sender dropped without sending resolves a receiver on another thread to
// `Canceled`, whether it was already waiting or not (a waiting one is woken, not left waiting for
// ever). Bitten by `oneshot_sender_drop_no_wake` (`block_on` then reports a deadlock).
#[test]
fn dropped_sender_cancels() {
    model(READY_OR_WOKEN, |outcomes| {
        let (sender, receiver) = channel::<u32>();
        let dropping = thread::spawn(move || drop(sender));

        let (reply, first_poll) = block_on_noting_first_poll(receiver);
        outcomes.record(first_poll.outcome());
        assert_eq!(reply, Err(Canceled));
        dropping.join().unwrap();
    });
}
