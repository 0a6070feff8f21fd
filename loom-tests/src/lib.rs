//! The production `corekv::sync` module tree, compiled here against loom so that the models in
//! `tests/` explore every interleaving of the real code, and the few helpers those models share.
//!
//! Owns: the re-homing of `../src/sync/`, the bound every model runs under, and the record of
//! which outcomes a model reached. It must never carry a copy of a primitive: a model of a copy
//! proves nothing about the server.

#[cfg(not(loom))]
compile_error!(
    "loom-tests must be built with RUSTFLAGS=\"--cfg loom\" (see README.md); without it the \
     primitives would use std and every model would prove nothing"
);

// The very file `corekv` compiles as `crate::sync`; its children (`shim`, `oneshot`, `latch`)
// resolve beside it in `../src/sync/`, so both crates build the same source.
#[path = "../../src/sync/mod.rs"]
pub mod sync;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The preemption bound used when `LOOM_MAX_PREEMPTIONS` is not set.
///
/// Every bug the mutants plant shows within two preemptions, and three keeps the whole suite to
/// seconds on two cores; an unbounded search of the three-thread models takes far longer.
pub const PREEMPTIONS_DEFAULT: usize = 3;

/// The outcomes a model reached, gathered over every execution loom ran.
///
/// Loom explores interleavings by a partial-order search that is known to skip some (it tracks
/// only the last access to each atomic), so a model that passes might simply never have reached
/// the case it guards. Each model therefore names the outcomes it must reach (the latch found
/// open at once, and found closed and waited for, say), records the one each execution reaches,
/// and [`model`] fails if any named outcome never happened.
///
/// It lives outside loom's world on purpose: a `std` mutex, touched only between loom's steps,
/// is invisible to the search and adds no interleavings.
pub struct Outcomes {
    /// The outcomes the model must reach, as named by the model.
    expected: &'static [&'static str],
    /// The outcomes reached so far.
    reached: std::sync::Mutex<BTreeSet<&'static str>>,
}

impl Outcomes {
    /// Records that this execution reached `outcome`, which must be one the model named.
    pub fn record(&self, outcome: &'static str) {
        assert!(
            self.expected.contains(&outcome),
            "outcome {outcome:?} is not among the model's {:?}",
            self.expected
        );
        self.reached
            .lock()
            .expect("no model panics while recording")
            .insert(outcome);
    }
}

/// Runs `model` under loom, once for each interleaving within the preemption bound
/// (`LOOM_MAX_PREEMPTIONS`, or [`PREEMPTIONS_DEFAULT`] when unset), then fails unless the
/// executions between them reached every outcome in `expected`.
pub fn model<F>(expected: &'static [&'static str], model: F)
where
    F: Fn(&Outcomes) + Sync + Send + 'static,
{
    let outcomes = std::sync::Arc::new(Outcomes {
        expected,
        reached: std::sync::Mutex::new(BTreeSet::new()),
    });
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(PREEMPTIONS_DEFAULT);
    }
    let recorder = outcomes.clone();
    builder.check(move || model(&recorder));

    let reached = outcomes.reached.lock().expect("the model has finished");
    let missed: Vec<_> = expected.iter().filter(|outcome| !reached.contains(*outcome)).collect();
    assert!(
        missed.is_empty(),
        "the search never reached {missed:?} (reached {reached:?}): the model is vacuous there"
    );
}

/// Drives `future` to completion with `loom::future::block_on` (which reports a wake-up that
/// never comes as a deadlock), and says whether it was ready at the first poll.
pub fn block_on_noting_first_poll<F: Future + Unpin>(future: F) -> (F::Output, FirstPoll) {
    /// Wraps the future to count its polls.
    struct Counting<F> {
        future: F,
        polls: usize,
    }

    impl<F: Future + Unpin> Future for Counting<F> {
        type Output = (F::Output, FirstPoll);

        fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
            self.polls += 1;
            let first = if self.polls == 1 {
                FirstPoll::Ready
            } else {
                FirstPoll::Pending
            };
            Pin::new(&mut self.future).poll(context).map(|output| (output, first))
        }
    }

    loom::future::block_on(Counting { future, polls: 0 })
}

/// How a future driven by [`block_on_noting_first_poll`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstPoll {
    /// It was ready at once: the event it awaited had already happened.
    Ready,
    /// It was pending first, so it registered its waker and was polled again later.
    Pending,
}

impl FirstPoll {
    /// The outcome name models record for this case.
    pub fn outcome(self) -> &'static str {
        match self {
            FirstPoll::Ready => "ready at first poll",
            FirstPoll::Pending => "pending at first poll",
        }
    }
}
