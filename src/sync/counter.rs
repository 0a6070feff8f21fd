//! A statistics counter that several threads add to and any thread reads: the `--design
//! locked` store's hit and miss counts, bumped by every executor under the shared read lock.
//!
//! Owns that counter only. `Relaxed` is enough and deliberate: a read-modify-write never loses
//! an increment, and coherence keeps each reader's successive reads from going backwards; the
//! counter publishes no other data, so it needs no happens-before edge.

use super::shim::{AtomicUsize, Ordering};

/// A monotonic counter shared across threads.
#[derive(Debug)]
pub struct Counter(AtomicUsize);

impl Default for Counter {
    fn default() -> Self {
        Counter(AtomicUsize::new(0))
    }
}

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: usize) {
        if cfg!(corekv_mutant = "counter_load_store") {
            // Mutant: a separate load and store loses increments made in between.
            let seen = self.0.load(Ordering::Relaxed);
            self.0.store(seen + n, Ordering::Relaxed);
        } else {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The current count.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn increments_from_many_threads_all_count() {
        let counter = Arc::new(Counter::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || (0..10_000).for_each(|_| counter.add(1)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(counter.get(), 40_000);
    }
}
