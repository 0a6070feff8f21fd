//! A count-down latch that threads await: it opens once counted down to zero, and stays open.
//!
//! Owns: the server's three meeting points between shards. *Readiness* (count = shards; each shard
//! counts down once it serves, and `/v1/readiness` answers 200 once open), *shutdown* (count 1,
//! counted down by the signal thread; every shard's accept loop races [`Latch::wait`]) and
//! *drained* (count = shards; each shard counts down once its connections are finished, and keeps
//! serving other shards' requests until the latch opens).
//!
//! Must never: reopen or close again (the count only falls, and saturates at zero); lose a
//! wake-up; keep the waker of a wait that was dropped; hold its lock while waking a task.
//!
//! Not on a hot path: counting down and waiting go through one mutex; only [`Latch::is_open`] is
//! lock-free.
//!
//! # Why a mutex holds the count
//! The count and the waiters live under one lock, so a wait's "still closed? then register" and
//! the opening count-down's "now open: take every waiter" can never interleave, which is what rules
//! out a lost wake-up. A separate flag, stored once with Release by the opener, lets
//! [`Latch::is_open`] answer without locking. Keeping the count out of the atomics also keeps
//! every atomic access a single load or a single store: loom's search tracks only the last access
//! to each atomic, and misses interleavings when a thread loads an atomic and then updates it (as
//! a compare-and-swap loop does), so that shape would leave the models blind.
//!
//! Under `cfg(corekv_mutant = "...")` a few lines are deliberately weakened so that
//! `loom-tests/mutants.sh` can show each loom model fails without them; no normal build sets it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::shim::{AtomicBool, Mutex, Ordering, lock};

/// Ordering of the opener's store to `open`: Release, so that whoever sees the latch open with
/// Acquire also sees everything every counting thread did before its count-down (each count-down
/// passed through the lock, which the opener took after them).
const OPEN_STORE_ORDERING: Ordering = if cfg!(corekv_mutant = "latch_relaxed_open") {
    Ordering::Relaxed
} else {
    Ordering::Release
};

/// Ordering of the load in [`Latch::is_open`]: Acquire, pairing with [`OPEN_STORE_ORDERING`].
const OPEN_LOAD_ORDERING: Ordering = if cfg!(corekv_mutant = "latch_relaxed_is_open") {
    Ordering::Relaxed
} else {
    Ordering::Acquire
};

/// Opens after a given number of [`count_down`](Latch::count_down)s, from any threads, and
/// releases every [`wait`](Latch::wait) on every thread. Share it with the shim's `Arc`.
pub struct Latch {
    /// Whether the count has reached zero: written once, to `true`, by the count-down that opens
    /// the latch while it holds the lock; read without the lock by [`Latch::is_open`].
    open: AtomicBool,
    /// The count and the waiting tasks, under one lock.
    state: Mutex<State>,
}

/// What the latch's lock guards.
struct State {
    /// Count-downs still needed; the latch opens at zero. It only ever falls, and never below
    /// zero, so "open" is final.
    remaining: usize,
    /// The id the next registered wait gets; ids are never reused, so a stale id removes nothing.
    next_id: u64,
    /// One entry per pending [`Wait`], under the id it removes itself by if dropped. Few (about
    /// one per shard), so a linear search is fine. Emptied, and never filled again, by the
    /// count-down that opens the latch.
    waiters: Vec<(u64, Waker)>,
}

impl Latch {
    /// A latch that opens after `count` count-downs; `Latch::new(0)` is open from the start.
    pub fn new(count: usize) -> Latch {
        Latch {
            open: AtomicBool::new(count == 0),
            state: Mutex::new(State {
                remaining: count,
                next_id: 0,
                waiters: Vec::new(),
            }),
        }
    }

    /// Counts down by one, from any thread. The count-down that reaches zero wakes every waiter;
    /// one on an open latch does nothing, so it is safe to count down more than `count` times.
    pub fn count_down(&self) {
        let woken = {
            let mut state = lock(&self.state);
            if cfg!(corekv_mutant = "latch_wrapping_count_down") {
                state.remaining = state.remaining.wrapping_sub(1);
            } else if state.remaining == 0 {
                return;
            } else {
                state.remaining -= 1;
            }
            if state.remaining != 0 {
                return;
            }
            self.open.store(true, OPEN_STORE_ORDERING);
            if cfg!(corekv_mutant = "latch_wake_one") {
                state.waiters.pop().into_iter().collect()
            } else {
                std::mem::take(&mut state.waiters)
            }
        };
        // Wake outside the lock: waking a task of another executor queues work there.
        for (_, waker) in woken {
            waker.wake();
        }
    }

    /// Whether the latch has opened. When it returns `true`, everything each thread did before
    /// its count-down is visible to the caller.
    pub fn is_open(&self) -> bool {
        self.open.load(OPEN_LOAD_ORDERING)
    }

    /// Count-downs still needed before the latch opens; zero once open.
    pub fn remaining(&self) -> usize {
        lock(&self.state).remaining
    }

    /// A future that resolves once the latch is open. Any number may wait, on any threads; one
    /// that is dropped before it resolves forgets its waker, so it is safe to race in `select`.
    pub fn wait(&self) -> Wait<'_> {
        Wait { latch: self, id: None }
    }
}

impl std::fmt::Debug for Latch {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Latch")
            .field("remaining", &self.remaining())
            .finish_non_exhaustive()
    }
}

/// The future returned by [`Latch::wait`].
#[must_use = "a Wait does nothing unless awaited"]
pub struct Wait<'a> {
    /// The latch this waits for.
    latch: &'a Latch,
    /// This wait's entry in the latch's waiters, once it has registered a waker.
    id: Option<u64>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.latch.is_open() {
            // The count-down that opened the latch sets `open` and takes every waiter in one
            // critical section, so an entry of this wait's is gone or about to be: nothing to
            // remove.
            this.id = None;
            return Poll::Ready(());
        }

        let mut state = lock(&this.latch.state);
        // Check again under the lock: the count-down that opens the latch takes every waiter
        // under this same lock, so either it has not run yet and will wake the entry made below,
        // or the count is already zero here.
        if state.remaining == 0 && !cfg!(corekv_mutant = "latch_no_recheck") {
            this.id = None;
            return Poll::Ready(());
        }
        let entry = this
            .id
            .and_then(|id| state.waiters.iter_mut().find(|(entry_id, _)| *entry_id == id));
        match entry {
            // Clone only when the stored waker would wake another task: glommio counts a task's
            // waker clones in an `i16`.
            Some((_, stored)) => {
                if !stored.will_wake(context.waker()) {
                    *stored = context.waker().clone();
                }
            }
            None => {
                let waker = context.waker().clone();
                let id = state.next_id;
                state.next_id += 1;
                state.waiters.push((id, waker));
                this.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        // A wait dropped while registered removes its waker, so the list never holds wakers of
        // tasks that stopped waiting (a shard's accept loop races the shutdown latch on every
        // accept).
        if let Some(id) = self.id
            && !cfg!(corekv_mutant = "latch_cancel_keeps_waker")
        {
            let mut state = lock(&self.latch.state);
            if let Some(index) = state.waiters.iter().position(|(entry_id, _)| *entry_id == id) {
                let (_, waker) = state.waiters.swap_remove(index);
                // Drop the waker after unlocking: dropping a foreign task's waker may queue work.
                drop(state);
                drop(waker);
            }
        }
    }
}

impl std::fmt::Debug for Wait<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Wait")
            .field("latch", self.latch)
            .field("registered", &self.id.is_some())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::shim::{Arc, block_on};
    use std::sync::atomic::AtomicU64;
    use std::task::Wake;
    use std::thread;

    /// A waker that only counts how often it was woken.
    struct CountingWaker(AtomicU64);

    impl Wake for CountingWaker {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_once(wait: &mut Wait<'_>, waker: &Waker) -> Poll<()> {
        Pin::new(wait).poll(&mut Context::from_waker(waker))
    }

    // Goal: the latch opens after exactly N count-downs from N threads, and every waiter on
    // other threads is released.
    #[test]
    fn opens_after_n_count_downs_and_releases_every_waiter() {
        const SHARDS: usize = 4;
        for _ in 0..200 {
            let latch = Arc::new(Latch::new(SHARDS));
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    let latch = latch.clone();
                    thread::spawn(move || {
                        block_on(latch.wait());
                        assert!(latch.is_open());
                    })
                })
                .collect();
            let counters: Vec<_> = (0..SHARDS)
                .map(|_| {
                    let latch = latch.clone();
                    thread::spawn(move || latch.count_down())
                })
                .collect();
            for handle in counters.into_iter().chain(waiters) {
                handle.join().unwrap();
            }
            assert!(latch.is_open());
            assert_eq!(latch.remaining(), 0);
        }
    }

    // Goal: the latch is closed until the last count-down, and stays open after it.
    #[test]
    fn opens_only_on_the_last_count_down() {
        let latch = Latch::new(3);
        for remaining in (1..=3).rev() {
            assert!(!latch.is_open());
            assert_eq!(latch.remaining(), remaining);
            latch.count_down();
        }
        assert!(latch.is_open());
        assert_eq!(latch.remaining(), 0);
    }

    // Goal: extra count-downs saturate at zero instead of wrapping round and closing the latch.
    #[test]
    fn count_down_saturates_at_zero() {
        let latch = Latch::new(1);
        for _ in 0..3 {
            latch.count_down();
        }
        assert!(latch.is_open());
        assert_eq!(latch.remaining(), 0);
        block_on(latch.wait());
    }

    // Goal: a latch made with count 0 is open, and waiting on it resolves at once.
    #[test]
    fn zero_count_is_open() {
        let latch = Latch::new(0);
        assert!(latch.is_open());
        let mut wait = latch.wait();
        assert_eq!(poll_once(&mut wait, Waker::noop()), Poll::Ready(()));
    }

    // Goal: a dropped wait forgets its waker; a kept one is woken exactly once on opening.
    #[test]
    fn dropped_wait_forgets_its_waker() {
        let latch = Latch::new(1);
        let dropped = std::sync::Arc::new(CountingWaker(AtomicU64::new(0)));
        let kept = std::sync::Arc::new(CountingWaker(AtomicU64::new(0)));
        let dropped_waker = Waker::from(dropped.clone());
        let kept_waker = Waker::from(kept.clone());

        let mut dropped_wait = latch.wait();
        let mut kept_wait = latch.wait();
        assert!(poll_once(&mut dropped_wait, &dropped_waker).is_pending());
        assert!(poll_once(&mut kept_wait, &kept_waker).is_pending());
        assert_eq!(std::sync::Arc::strong_count(&dropped), 3);
        drop(dropped_wait);
        assert_eq!(std::sync::Arc::strong_count(&dropped), 2);
        assert_eq!(lock(&latch.state).waiters.len(), 1);

        latch.count_down();
        assert_eq!(dropped.0.load(Ordering::SeqCst), 0);
        assert_eq!(kept.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&mut kept_wait, &kept_waker), Poll::Ready(()));
        assert!(lock(&latch.state).waiters.is_empty());
    }

    // Goal: polling again with the same waker keeps one entry and no extra clone; with another
    // waker, the entry is replaced and the new waker is the one woken.
    #[test]
    fn repoll_replaces_the_waker_only_when_needed() {
        let latch = Latch::new(1);
        let first = std::sync::Arc::new(CountingWaker(AtomicU64::new(0)));
        let second = std::sync::Arc::new(CountingWaker(AtomicU64::new(0)));
        let first_waker = Waker::from(first.clone());
        let second_waker = Waker::from(second.clone());

        let mut wait = latch.wait();
        assert!(poll_once(&mut wait, &first_waker).is_pending());
        assert!(poll_once(&mut wait, &first_waker).is_pending());
        assert_eq!(std::sync::Arc::strong_count(&first), 3);
        assert!(poll_once(&mut wait, &second_waker).is_pending());
        assert_eq!(std::sync::Arc::strong_count(&first), 2);
        assert_eq!(lock(&latch.state).waiters.len(), 1);

        latch.count_down();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&mut wait, &second_waker), Poll::Ready(()));
    }

    // Goal: one latch can be shared by every executor thread.
    #[test]
    fn latch_is_send_and_sync() {
        fn assert_send_sync<S: Send + Sync>() {}
        assert_send_sync::<Latch>();
    }

    // Goal: writes made before a count-down are visible to a thread that sees the latch open.
    #[test]
    fn count_down_publishes_prior_writes() {
        for _ in 0..200 {
            let latch = Arc::new(Latch::new(2));
            let flags: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
            let shards: Vec<_> = (0..2)
                .map(|shard| {
                    let (latch, flags) = (latch.clone(), flags.clone());
                    thread::spawn(move || {
                        flags[shard].store(1, Ordering::Relaxed);
                        latch.count_down();
                    })
                })
                .collect();
            block_on(latch.wait());
            assert!(flags.iter().all(|flag| flag.load(Ordering::Relaxed) == 1));
            for shard in shards {
                shard.join().unwrap();
            }
        }
    }
}
