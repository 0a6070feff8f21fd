//! Loom models of `corekv::sync::latch`, the readiness, shutdown and drain latch.
//!
//! Each model plays one of the server's uses of the latch with loom threads as shards, asserts
//! its property in every interleaving loom explores, and names the outcomes its executions must
//! reach between them, so that a search that skipped the interesting case fails instead of
//! passing. `mutants.sh` shows each model fails when the line it guards is weakened. Loom adds
//! its own checks: a cell accessed by two threads with no happens-before edge between them panics
//! ("causality violation"), and a `block_on` that no thread will ever wake panics ("deadlock").

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Wake, Waker};

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use loom_tests::sync::latch::Latch;
use loom_tests::{block_on_noting_first_poll, model};

/// The two ways a wait can complete; a model that reaches only one is vacuous.
const READY_OR_WOKEN: &[&str] = &["ready at first poll", "pending at first poll"];

// Property (drained): every waiter on every thread is released once all N shards counted down,
// and each then sees the latch open. Each shard counts down and then waits for the others, as a
// shard's cross-shard serving task does. Bitten by `latch_no_recheck`: a shard that registers
// just after the last count-down took the waiters waits for ever (`block_on` reports a
// deadlock).
#[test]
fn every_waiter_released_after_n_count_downs() {
    model(READY_OR_WOKEN, |outcomes| {
        let drained = Arc::new(Latch::new(2));
        let shards: Vec<_> = (0..2)
            .map(|_| {
                let drained = drained.clone();
                thread::spawn(move || {
                    drained.count_down();
                    let ((), first_poll) = block_on_noting_first_poll(drained.wait());
                    assert!(drained.is_open());
                    first_poll
                })
            })
            .collect();
        for shard in shards {
            outcomes.record(shard.join().unwrap().outcome());
        }
        assert!(drained.is_open());
        assert_eq!(drained.remaining(), 0);
    });
}

// Property (shutdown): one count-down from the signal thread is seen by every shard: each
// shard's wait completes, whether it started waiting before or after the signal. Bitten by
// `latch_wake_one` (the opener wakes one waiter and forgets the others) and `latch_no_recheck`.
#[test]
fn shutdown_seen_by_every_shard() {
    model(READY_OR_WOKEN, |outcomes| {
        let shutdown = Arc::new(Latch::new(1));
        let shards: Vec<_> = (0..2)
            .map(|_| {
                let shutdown = shutdown.clone();
                thread::spawn(move || block_on_noting_first_poll(shutdown.wait()).1)
            })
            .collect();

        // The signal thread.
        shutdown.count_down();
        for shard in shards {
            outcomes.record(shard.join().unwrap().outcome());
        }
        assert!(shutdown.is_open());
    });
}

// Property (readiness): the latch is never observed open before every shard is ready, and is
// open once they all are. Each shard marks itself ready (a relaxed store, as a shard's own state
// would be) and then counts down; the readiness handler, on another thread, may look at any
// moment, and whenever it sees the latch open it must also see every shard's mark. Bitten by
// `latch_relaxed_open` and by `latch_relaxed_is_open`: either one lets the handler see "open"
// and a stale, unready shard.
#[test]
fn readiness_never_observed_open_early() {
    model(&["observed open", "observed closed"], |outcomes| {
        let readiness = Arc::new(Latch::new(2));
        let ready = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
        let shards: Vec<_> = (0..2)
            .map(|shard| {
                let (readiness, ready) = (readiness.clone(), ready.clone());
                thread::spawn(move || {
                    ready[shard].store(true, Ordering::Relaxed);
                    readiness.count_down();
                })
            })
            .collect();

        // The `/v1/readiness` handler.
        if readiness.is_open() {
            outcomes.record("observed open");
            assert!(ready[0].load(Ordering::Relaxed), "open before shard 0 was ready");
            assert!(ready[1].load(Ordering::Relaxed), "open before shard 1 was ready");
        } else {
            outcomes.record("observed closed");
        }
        for shard in shards {
            shard.join().unwrap();
        }
        assert!(readiness.is_open(), "open once every shard counted down");
    });
}

// Property: whatever each thread wrote before its count-down is visible to a task that waited
// for the latch, whether it found it open at once or was woken. Each shard writes its own loom
// cell, so a read with no happens-before edge from the write panics. Bitten by
// `latch_relaxed_open` (opening no longer releases) and `latch_relaxed_is_open` (a wait that
// finds the latch open acquires nothing).
#[test]
fn count_down_publishes_prior_writes() {
    model(READY_OR_WOKEN, |outcomes| {
        let latch = Arc::new(Latch::new(2));
        let cells = Arc::new([UnsafeCell::new(0u32), UnsafeCell::new(0u32)]);
        let shards: Vec<_> = (0..2)
            .map(|shard| {
                let (latch, cells) = (latch.clone(), cells.clone());
                thread::spawn(move || {
                    // SAFETY: only this thread writes this cell, and it is read only after the
                    // latch opened, which is the ordering this model checks.
                    cells[shard].with_mut(|cell| unsafe { *cell = 1 });
                    latch.count_down();
                })
            })
            .collect();

        let ((), first_poll) = block_on_noting_first_poll(latch.wait());
        outcomes.record(first_poll.outcome());
        for cell in cells.iter() {
            // SAFETY: every writer counted down after writing, and the latch is open.
            assert_eq!(cell.with(|cell| unsafe { *cell }), 1);
        }
        for shard in shards {
            shard.join().unwrap();
        }
    });
}

// Property: the count never goes backwards and never underflows: an observer reading it twice
// never sees it rise nor exceed its start, an open latch never closes again, and extra
// count-downs (three on a latch of two) leave it at zero and open. Bitten by
// `latch_wrapping_count_down`: the third count-down wraps the count round to `usize::MAX`.
#[test]
fn count_never_goes_backwards_nor_underflows() {
    const OUTCOMES: &[&str] = &["observed 2", "observed 1", "observed 0"];
    model(OUTCOMES, |outcomes| {
        let latch = Arc::new(Latch::new(2));
        let counters: Vec<_> = [2, 1]
            .into_iter()
            .map(|count_downs| {
                let latch = latch.clone();
                thread::spawn(move || {
                    for _ in 0..count_downs {
                        latch.count_down();
                    }
                })
            })
            .collect();

        let first = latch.remaining();
        let was_open = latch.is_open();
        let second = latch.remaining();
        assert!(first <= 2, "the count rose above its start: {first}");
        assert!(second <= first, "the count went back from {first} to {second}");
        if was_open {
            assert!(latch.is_open(), "the latch closed again");
        }
        outcomes.record(match first {
            2 => "observed 2",
            1 => "observed 1",
            _ => "observed 0",
        });
        for counter in counters {
            counter.join().unwrap();
        }
        assert_eq!(latch.remaining(), 0, "the count did not stop at zero");
        assert!(latch.is_open(), "the count reached zero but the latch is closed");
    });
}

/// A waker that does nothing; its `Arc`'s strong count tells how many clones are still alive.
struct Probe;

impl Wake for Probe {
    fn wake(self: std::sync::Arc<Self>) {}
}

// Property: a wait dropped before the latch opens forgets its waker (the accept loop drops its
// shutdown wait on every accept), while another thread counts down. Bitten by
// `latch_cancel_keeps_waker`: the waker's clone then stays in the latch for ever.
#[test]
fn dropped_wait_forgets_its_waker() {
    const OUTCOMES: &[&str] = &["dropped before the count-down", "dropped after it"];
    model(OUTCOMES, |outcomes| {
        let latch = Arc::new(Latch::new(2));
        let counted = Arc::new(AtomicBool::new(false));
        let counting = {
            let (latch, counted) = (latch.clone(), counted.clone());
            thread::spawn(move || {
                latch.count_down();
                counted.store(true, Ordering::SeqCst);
            })
        };

        let probe = std::sync::Arc::new(Probe);
        let waker = Waker::from(probe.clone());
        let mut wait = latch.wait();
        let poll = Pin::new(&mut wait).poll(&mut Context::from_waker(&waker));
        assert!(poll.is_pending(), "one count-down of two cannot open the latch");
        drop(wait);
        outcomes.record(if counted.load(Ordering::SeqCst) {
            "dropped after it"
        } else {
            "dropped before the count-down"
        });
        drop(waker);
        counting.join().unwrap();
        assert_eq!(
            std::sync::Arc::strong_count(&probe),
            1,
            "a clone of the dropped wait's waker is still held"
        );
        assert_eq!(latch.remaining(), 1);
    });
}
