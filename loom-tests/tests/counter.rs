//! Loom model of `corekv::sync::counter::Counter`, the locked design's hit and miss counts.
//!
//! Two executors add while a stats reader reads twice: no increment may be lost, and the reader's
//! second read may never be below its first. `mutants.sh` shows the model fails when `add` is a
//! separate load and store (`counter_load_store`).

use loom::sync::Arc;
use loom::thread;
use loom_tests::model;
use loom_tests::sync::counter::Counter;

/// The reader must see the count both still and rising across executions, or the search never
/// interleaved it with the adds.
const READER_OUTCOMES: &[&str] = &["count steady between reads", "count rose between reads"];

// Property: counters never go backwards and never lose an increment. Each of two executors adds
// 1 twice; a reader reads twice. Bitten by `counter_load_store` ("lost an increment").
#[test]
fn counter_never_loses_an_increment_nor_goes_backwards() {
    model(READER_OUTCOMES, |outcomes| {
        let counter = Arc::new(Counter::default());
        let adders: Vec<_> = (0..2)
            .map(|_| {
                let counter = counter.clone();
                thread::spawn(move || {
                    counter.add(1);
                    counter.add(1);
                })
            })
            .collect();
        let first = counter.get();
        let second = counter.get();
        assert!(second >= first, "the count went backwards: {first} then {second}");
        outcomes.record(if second == first {
            "count steady between reads"
        } else {
            "count rose between reads"
        });
        for adder in adders {
            adder.join().unwrap();
        }
        assert_eq!(counter.get(), 4, "lost an increment");
    });
}
