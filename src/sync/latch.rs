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
//! Not on a hot path: waiting goes through a mutex, and only [`Latch::is_open`] is lock-free.
//!
//! Under `cfg(corekv_mutant = "...")` a few lines are deliberately weakened so that
//! `loom-tests/mutants.sh` can show each loom model fails without them; no normal build sets it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::shim::{AtomicUsize, Mutex, Ordering, lock};

/// Ordering of the decrement in [`Latch::count_down`]: Release, so that whoever sees the latch
/// open with Acquire also sees everything every counting thread did before its count-down (each
/// decrement is a read-modify-write, so it continues the release sequence of the ones before it).
const COUNT_DOWN_ORDERING: Ordering = if cfg!(corekv_mutant = "latch_relaxed_count_down") {
    Ordering::Relaxed
} else {
    Ordering::Release
};

/// Ordering of the load in [`Latch::is_open`]: Acquire, pairing with [`COUNT_DOWN_ORDERING`].
const OPEN_ORDERING: Ordering = if cfg!(corekv_mutant = "latch_relaxed_is_open") {
    Ordering::Relaxed
} else {
    Ordering::Acquire
};

/// Opens after a given number of [`count_down`](Latch::count_down)s, from any threads, and
/// releases every [`wait`](Latch::wait) on every thread. Share it with the shim's `Arc`.
pub struct Latch {
    /// Count-downs still needed; the latch is open at zero. It only ever falls, and never below
    /// zero, so "open" is final.
    count: AtomicUsize,
    /// The tasks waiting for the latch to open. Emptied, and never filled again, by the
    /// count-down that opens it.
    waiters: Mutex<Waiters>,
}

/// The waiting tasks, each under the id its [`Wait`] removes it by if dropped while waiting.
struct Waiters {
    /// The id the next registered wait gets; ids are never reused, so a stale id removes nothing.
    next_id: u64,
    /// One entry per pending [`Wait`]: few (about one per shard), so a linear search is fine.
    list: Vec<(u64, Waker)>,
}

impl Latch {
    /// A latch that opens after `count` count-downs; `Latch::new(0)` is open from the start.
    pub fn new(count: usize) -> Latch {
        Latch {
            count: AtomicUsize::new(count),
            waiters: Mutex::new(Waiters {
                next_id: 0,
                list: Vec::new(),
            }),
        }
    }

    /// Counts down by one, from any thread. The count-down that reaches zero wakes every waiter;
    /// one on an open latch does nothing, so it is safe to count down more than `count` times.
    pub fn count_down(&self) {
        let opened = if cfg!(corekv_mutant = "latch_wrapping_count_down") {
            self.count.fetch_sub(1, COUNT_DOWN_ORDERING) == 1
        } else {
            // Failure ordering Relaxed: a failed update publishes nothing and reads nothing.
            let update = self
                .count
                .fetch_update(COUNT_DOWN_ORDERING, Ordering::Relaxed, |count| {
                    count.checked_sub(1)
                });
            update == Ok(1)
        };
        if opened {
            self.wake_all();
        }
    }

    /// Whether the latch has opened. When it returns `true`, everything each thread did before
    /// its count-down is visible to the caller.
    pub fn is_open(&self) -> bool {
        self.count.load(OPEN_ORDERING) == 0
    }

    /// Count-downs still needed before the latch opens; zero once open.
    pub fn remaining(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// A future that resolves once the latch is open. Any number may wait, on any threads; one
    /// that is dropped before it resolves forgets its waker, so it is safe to race in `select`.
    pub fn wait(&self) -> Wait<'_> {
        Wait {
            latch: self,
            id: None,
        }
    }

    /// Wakes and forgets every waiter; called once, by the count-down that opened the latch.
    fn wake_all(&self) {
        // Taking the list under the lock orders this after every registration that checked the
        // count under the lock before the count reached zero; a registration after it sees zero
        // under the same lock and does not register. Wake outside the lock: waking may run
        // arbitrary code, such as a foreign executor's queueing.
        let woken: Vec<(u64, Waker)> = if cfg!(corekv_mutant = "latch_wake_one") {
            lock(&self.waiters).list.pop().into_iter().collect()
        } else {
            std::mem::take(&mut lock(&self.waiters).list)
        };
        for (_, waker) in woken {
            waker.wake();
        }
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
            // The count-down that opened the latch empties the list, and so drops any entry of
            // this wait's; there is nothing to remove.
            this.id = None;
            return Poll::Ready(());
        }

        let mut waiters = lock(&this.latch.waiters);
        // Check again under the lock: the count-down that opens the latch takes this lock to
        // empty the list after the count reaches zero, so either it has not emptied the list yet
        // and will wake the entry made below, or the count is already zero here.
        if this.latch.is_open() && !cfg!(corekv_mutant = "latch_no_recheck") {
            this.id = None;
            return Poll::Ready(());
        }
        let entry = this.id.and_then(|id| {
            waiters
                .list
                .iter_mut()
                .find(|(entry_id, _)| *entry_id == id)
        });
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
                let id = waiters.next_id;
                waiters.next_id += 1;
                waiters.list.push((id, waker));
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
            let mut waiters = lock(&self.latch.waiters);
            if let Some(index) = waiters
                .list
                .iter()
                .position(|(entry_id, _)| *entry_id == id)
            {
                let (_, waker) = waiters.list.swap_remove(index);
                // Drop the waker after unlocking: dropping a foreign task's waker may queue work.
                drop(waiters);
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
        assert_eq!(lock(&latch.waiters).list.len(), 1);

        latch.count_down();
        assert_eq!(dropped.0.load(Ordering::SeqCst), 0);
        assert_eq!(kept.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&mut kept_wait, &kept_waker), Poll::Ready(()));
        assert!(lock(&latch.waiters).list.is_empty());
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
        assert_eq!(lock(&latch.waiters).list.len(), 1);

        latch.count_down();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_once(&mut wait, &second_waker), Poll::Ready(()));
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
