//! Test tooling, never used by the server: a linearizability checker for histories of a
//! key-value store, recorded by tests against a running cluster (issue #13).
//!
//! Owns the search and nothing else: it never does I/O and never reads a clock; the caller
//! records each operation's invoke and return times (any monotonic nanosecond count) and hands
//! the whole history over.
//!
//! # Model
//! Every key is an independent register that starts absent. `get` observes a value or absent,
//! `put(value)` sets it, `delete` makes it absent, and `create(value)` (a conditional put, e.g.
//! `If-None-Match: *`) sets it only when it is absent: it is `Done` when it did, `Refused` when
//! a value was there (then it changed nothing, like a read that saw "some value"). Because keys are independent, a history is
//! linearizable exactly when each key's sub-history is (P-compositionality, Horn & Kroening
//! 2015), so [`check`] checks key by key and the search only ever sees one key's operations.
//!
//! # Search
//! Wing & Gong's algorithm with Lowe's memoization, as in Porcupine: the history becomes a
//! linked list of call and return entries in time order; the search linearizes the first call
//! it can (its effect fits the register's state), lifts it and its return out of the list, and
//! backtracks when it meets a return whose operation is not yet linearized. A set of
//! (linearized operations, register state) pairs already explored prunes repeats. Each step is
//! counted; past `states_max` ([`SEARCH_STATES_MAX`] by default) the answer is
//! [`Verdict::Unknown`], never a hang and never a guess.
//!
//! # Time
//! Operation A precedes B when A returned strictly before B was invoked. Equal times count as
//! overlapping (calls sort before returns), which is the lenient reading: a checker must not
//! reject a correct system because two clocks reads tied.
//!
//! # Operations that never returned
//! A timeout, a closed connection, a crash, or an error after the request may have reached the
//! leader (a 503 from a node that might have proposed it) must be recorded as
//! [`Output::Pending`]: it may have taken effect at any moment after its invocation, or never.
//! The search gives it an infinitely late return, and stops successfully once every completed
//! operation is linearized, so a pending write is free to be placed late or left out. A pending
//! `get` observed nothing and is ignored.

use std::collections::{HashMap, HashSet};

/// How many linearization steps the search of one key may take before it answers
/// [`Verdict::Unknown`]. Each step costs a hash-set insert of a bitset of the key's
/// operations; a million takes about a second in a debug build.
pub const SEARCH_STATES_MAX: u64 = 1_000_000;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Read the key.
    Get,
    /// Set the key to this value.
    Put(Vec<u8>),
    /// Remove the key.
    Delete,
    /// Set the key to this value only if it is absent.
    Create(Vec<u8>),
}

/// What the client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// A `get`'s answer: the value, or `None` for absent (404).
    Value(Option<Vec<u8>>),
    /// A `put`, `delete` or `create` was acknowledged (a `create`: it set the value).
    Done,
    /// A `create` found the key present and changed nothing.
    Refused,
    /// No answer the client can trust (see the module docs): may or may not have taken effect.
    Pending,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The key it touched; operations on different keys never constrain each other.
    pub key: Vec<u8>,
    /// What was asked.
    pub input: Input,
    /// What was answered.
    pub output: Output,
    /// When the client sent it (nanoseconds on any monotonic clock shared by the history).
    pub invoked_ns: u64,
    /// When the client had the answer; ignored for [`Output::Pending`].
    pub returned_ns: u64,
}

impl Operation {
    /// A completed `get` that observed `value` (`None`: absent).
    pub fn get(key: &[u8], value: Option<&[u8]>, invoked_ns: u64, returned_ns: u64) -> Self {
        let output = Output::Value(value.map(<[u8]>::to_vec));
        Self::new(key, Input::Get, output, invoked_ns, returned_ns)
    }

    /// An acknowledged `put`.
    pub fn put(key: &[u8], value: &[u8], invoked_ns: u64, returned_ns: u64) -> Self {
        Self::new(key, Input::Put(value.to_vec()), Output::Done, invoked_ns, returned_ns)
    }

    /// An acknowledged `delete`.
    pub fn delete(key: &[u8], invoked_ns: u64, returned_ns: u64) -> Self {
        Self::new(key, Input::Delete, Output::Done, invoked_ns, returned_ns)
    }

    /// A `create` that set the value.
    pub fn create(key: &[u8], value: &[u8], invoked_ns: u64, returned_ns: u64) -> Self {
        Self::new(
            key,
            Input::Create(value.to_vec()),
            Output::Done,
            invoked_ns,
            returned_ns,
        )
    }

    /// A `create` refused because the key was present.
    pub fn create_refused(key: &[u8], value: &[u8], invoked_ns: u64, returned_ns: u64) -> Self {
        Self::new(
            key,
            Input::Create(value.to_vec()),
            Output::Refused,
            invoked_ns,
            returned_ns,
        )
    }

    /// A `create` that was sent at `invoked_ns` and never answered.
    pub fn create_pending(key: &[u8], value: &[u8], invoked_ns: u64) -> Self {
        Self::new(
            key,
            Input::Create(value.to_vec()),
            Output::Pending,
            invoked_ns,
            u64::MAX,
        )
    }

    /// A `put` that was sent at `invoked_ns` and never answered.
    pub fn put_pending(key: &[u8], value: &[u8], invoked_ns: u64) -> Self {
        Self::new(key, Input::Put(value.to_vec()), Output::Pending, invoked_ns, u64::MAX)
    }

    /// A `delete` that was sent at `invoked_ns` and never answered.
    pub fn delete_pending(key: &[u8], invoked_ns: u64) -> Self {
        Self::new(key, Input::Delete, Output::Pending, invoked_ns, u64::MAX)
    }

    fn new(key: &[u8], input: Input, output: Output, invoked_ns: u64, returned_ns: u64) -> Self {
        Operation {
            key: key.to_vec(),
            input,
            output,
            invoked_ns,
            returned_ns,
        }
    }
}

/// The checker's answer for a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's operations have a legal order that respects real time.
    Linearizable,
    /// This key's operations have none. `linearized_max` is the longest legal prefix found, of
    /// `operations` (both count only the key's operations that matter: pending gets excluded).
    Violation {
        key: Vec<u8>,
        linearized_max: usize,
        operations: usize,
    },
    /// The search of this key took `states_max` steps without an answer.
    Unknown { key: Vec<u8>, states_explored: u64 },
}

/// Checks `history` with the default bound, [`SEARCH_STATES_MAX`] steps per key.
pub fn check(history: &[Operation]) -> Verdict {
    check_with_limit(history, SEARCH_STATES_MAX)
}

/// Checks `history` key by key, at most `states_max` search steps per key. A violation on any
/// key wins over an unknown on another; keys are visited in byte order, so the answer is
/// deterministic.
///
/// # Panics
/// On a malformed history (a programmer error in the test that recorded it): a `get` answered
/// `Done`, a write answered with a value, or a completed operation returning before its call.
pub fn check_with_limit(history: &[Operation], states_max: u64) -> Verdict {
    let mut by_key: HashMap<&[u8], Vec<&Operation>> = HashMap::new();
    for operation in history {
        assert_well_formed(operation);
        by_key.entry(&operation.key).or_default().push(operation);
    }
    let mut keys: Vec<&[u8]> = by_key.keys().copied().collect();
    keys.sort_unstable();
    let mut unknown = None;
    for key in keys {
        match check_key(key, &by_key[key], states_max) {
            Verdict::Linearizable => {}
            violation @ Verdict::Violation { .. } => return violation,
            first @ Verdict::Unknown { .. } => {
                unknown.get_or_insert(first);
            }
        }
    }
    unknown.unwrap_or(Verdict::Linearizable)
}

fn assert_well_formed(operation: &Operation) {
    let fits = matches!(
        (&operation.input, &operation.output),
        (_, Output::Pending)
            | (Input::Get, Output::Value(_))
            | (Input::Put(_) | Input::Delete | Input::Create(_), Output::Done)
            | (Input::Create(_), Output::Refused)
    );
    assert!(
        fits,
        "malformed operation: {:?} answered {:?}",
        operation.input, operation.output
    );
    assert!(
        operation.output == Output::Pending || operation.invoked_ns <= operation.returned_ns,
        "operation returned ({}) before it was invoked ({})",
        operation.returned_ns,
        operation.invoked_ns
    );
}

/// One key's operation in the search's terms: values interned as `u32`, 0 meaning absent.
#[derive(Clone, Copy, Debug)]
enum Step {
    Get(u32),
    Put(u32),
    Delete,
    /// A `create` that set its value: only from absent.
    Create(u32),
    /// A `create` refused: only from a present value, which it keeps.
    CreateRefused,
}

impl Step {
    /// The register's state after this step from `state`, or `None` when it cannot happen there.
    fn apply(self, state: u32) -> Option<u32> {
        match self {
            Step::Get(observed) => (observed == state).then_some(state),
            Step::Put(value) => Some(value),
            Step::Delete => Some(ABSENT),
            Step::Create(value) => (state == ABSENT).then_some(value),
            Step::CreateRefused => (state != ABSENT).then_some(state),
        }
    }
}

/// The interned "no value" state every register starts in.
const ABSENT: u32 = 0;

/// Interns one key's operations. Returns the steps with their pending flags and intervals, or
/// `None` when some `get` observed a value no `put` of this key ever wrote (no order can
/// explain it, so the search need not run).
#[allow(clippy::type_complexity)]
fn intern(operations: &[&Operation]) -> Option<Vec<(Step, bool, u64, u64)>> {
    let mut ids: HashMap<&[u8], u32> = HashMap::new();
    for operation in operations {
        if let Input::Put(value) | Input::Create(value) = &operation.input {
            let next = ids.len() as u32 + 1;
            ids.entry(value).or_insert(next);
        }
    }
    let mut steps = Vec::with_capacity(operations.len());
    for operation in operations {
        let pending = operation.output == Output::Pending;
        let step = match (&operation.input, &operation.output) {
            (Input::Get, Output::Pending) => continue,
            (Input::Get, Output::Value(None)) => Step::Get(ABSENT),
            (Input::Get, Output::Value(Some(value))) => Step::Get(*ids.get(value.as_slice())?),
            (Input::Put(value), _) => Step::Put(ids[value.as_slice()]),
            (Input::Delete, _) => Step::Delete,
            (Input::Create(_), Output::Refused) => Step::CreateRefused,
            (Input::Create(value), _) => Step::Create(ids[value.as_slice()]),
            (Input::Get, Output::Done | Output::Refused) => unreachable!("rejected by assert_well_formed"),
        };
        let returned_ns = if pending { u64::MAX } else { operation.returned_ns };
        steps.push((step, pending, operation.invoked_ns, returned_ns));
    }
    Some(steps)
}

/// A fixed-size set of operation indices, hashed as a whole into the search's cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }
    fn set(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }
    fn clear(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }
}

/// The history of one key as a doubly linked list of entries in time order: entry `2 * n` is
/// the head sentinel; every other entry is the call or the return of operation `operation[e]`.
struct Entries {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For a call entry, its return entry; for a return entry, `usize::MAX`.
    matching: Vec<usize>,
    operation: Vec<usize>,
    head: usize,
}

impl Entries {
    fn new(steps: &[(Step, bool, u64, u64)]) -> Self {
        // (time, 0 = call / 1 = return, operation): calls before returns at equal times.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(steps.len() * 2);
        for (index, &(_, _, invoked_ns, returned_ns)) in steps.iter().enumerate() {
            events.push((invoked_ns, 0, index));
            events.push((returned_ns, 1, index));
        }
        events.sort_unstable();
        let head = events.len();
        let mut entries = Entries {
            next: (1..=head + 1).collect(),
            prev: Vec::with_capacity(head + 1),
            matching: vec![usize::MAX; head + 1],
            operation: events.iter().map(|&(_, _, operation)| operation).collect(),
            head,
        };
        entries.next[head - 1] = head;
        entries.next[head] = 0;
        entries.prev.push(head);
        entries.prev.extend(0..head);
        let mut call_of = vec![usize::MAX; steps.len()];
        for (entry, &(_, kind, operation)) in events.iter().enumerate() {
            if kind == 0 {
                call_of[operation] = entry;
            } else {
                entries.matching[call_of[operation]] = entry;
            }
        }
        entries
    }

    fn is_call(&self, entry: usize) -> bool {
        self.matching[entry] != usize::MAX
    }

    fn unlink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = entry;
        self.prev[next] = entry;
    }

    /// Takes a linearized call and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.matching[call]);
    }

    /// Puts them back, in the reverse order of [`Entries::lift`] (dancing links).
    fn unlift(&mut self, call: usize) {
        self.relink(self.matching[call]);
        self.relink(call);
    }
}

/// Searches one key's history.
fn check_key(key: &[u8], operations: &[&Operation], states_max: u64) -> Verdict {
    let Some(steps) = intern(operations) else {
        return Verdict::Violation {
            key: key.to_vec(),
            linearized_max: 0,
            operations: operations.len(),
        };
    };
    if steps.is_empty() {
        return Verdict::Linearizable;
    }
    let mut entries = Entries::new(&steps);
    let mut linearized = Bits::new(steps.len());
    let mut cache: HashSet<(Bits, u32)> = HashSet::new();
    // The calls linearized so far, with the state before each.
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let mut state = ABSENT;
    let mut explored = 0u64;
    let mut linearized_max = 0;
    let mut entry = entries.next[entries.head];
    loop {
        if entry == entries.head {
            // The list is empty: every operation is linearized.
            return Verdict::Linearizable;
        }
        let operation = entries.operation[entry];
        if !entries.is_call(entry) {
            // The first return in the list. Pending operations return after every completed
            // one, so reaching one means every completed operation is linearized.
            if steps[operation].1 {
                return Verdict::Linearizable;
            }
            let Some((call, before)) = stack.pop() else {
                let operations = steps.len();
                return Verdict::Violation {
                    key: key.to_vec(),
                    linearized_max,
                    operations,
                };
            };
            state = before;
            linearized.clear(entries.operation[call]);
            entries.unlift(call);
            entry = entries.next[call];
            continue;
        }
        if let Some(after) = steps[operation].0.apply(state) {
            explored += 1;
            if explored > states_max {
                return Verdict::Unknown {
                    key: key.to_vec(),
                    states_explored: explored - 1,
                };
            }
            linearized.set(operation);
            if cache.insert((linearized.clone(), after)) {
                stack.push((entry, state));
                linearized_max = linearized_max.max(stack.len());
                state = after;
                entries.lift(entry);
                entry = entries.next[entries.head];
                continue;
            }
            linearized.clear(operation);
        }
        entry = entries.next[entry];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violates(verdict: &Verdict) -> bool {
        matches!(verdict, Verdict::Violation { .. })
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert_eq!(check(&[]), Verdict::Linearizable);
        let history = [
            Operation::get(b"k", None, 0, 5),
            Operation::put(b"k", b"a", 10, 20),
            Operation::get(b"k", Some(b"a"), 30, 40),
            Operation::delete(b"k", 50, 60),
            Operation::get(b"k", None, 70, 80),
        ];
        assert_eq!(check(&history), Verdict::Linearizable);
    }

    #[test]
    fn a_read_overlapping_a_write_may_see_either_value() {
        for seen in [Some(&b"a"[..]), Some(&b"b"[..])] {
            let history = [
                Operation::put(b"k", b"a", 0, 10),
                Operation::put(b"k", b"b", 20, 40),
                Operation::get(b"k", seen, 25, 30),
            ];
            assert_eq!(check(&history), Verdict::Linearizable, "{seen:?}");
        }
    }

    #[test]
    fn equal_times_count_as_overlapping() {
        // The read was invoked at the very nanosecond the write returned: either order is fine.
        let history = [Operation::put(b"k", b"a", 0, 10), Operation::get(b"k", None, 10, 20)];
        assert_eq!(check(&history), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_rejected() {
        let history = [
            Operation::put(b"k", b"a", 0, 10),
            Operation::put(b"k", b"b", 20, 30),
            Operation::get(b"k", Some(b"a"), 40, 50),
        ];
        let verdict = check(&history);
        assert!(violates(&verdict), "{verdict:?}");
        // Absent is stale too once a write completed.
        let history = [Operation::put(b"k", b"a", 0, 10), Operation::get(b"k", None, 20, 30)];
        assert!(violates(&check(&history)));
    }

    #[test]
    fn two_readers_seeing_writes_in_opposite_orders_are_rejected() {
        // Both writes span the whole history, so each alone could land anywhere; but reader 1
        // sees a then b, and reader 2 later sees b then a: no single order explains both.
        let history = [
            Operation::put(b"k", b"a", 0, 100),
            Operation::put(b"k", b"b", 0, 100),
            Operation::get(b"k", Some(b"a"), 10, 20),
            Operation::get(b"k", Some(b"b"), 30, 40),
            Operation::get(b"k", Some(b"b"), 50, 60),
            Operation::get(b"k", Some(b"a"), 70, 80),
        ];
        let verdict = check(&history);
        assert!(violates(&verdict), "{verdict:?}");
        // Without reader 2's last read it is fine.
        assert_eq!(check(&history[..5]), Verdict::Linearizable);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_rejected() {
        let history = [
            Operation::put(b"k", b"a", 0, 10),
            Operation::get(b"k", Some(b"z"), 0, 10),
        ];
        assert_eq!(
            check(&history),
            Verdict::Violation {
                key: b"k".to_vec(),
                linearized_max: 0,
                operations: 2
            }
        );
        // A value written to another key does not count.
        let history = [
            Operation::put(b"x", b"a", 0, 10),
            Operation::get(b"k", Some(b"a"), 20, 30),
        ];
        assert!(violates(&check(&history)));
    }

    #[test]
    fn a_read_after_a_completed_delete_must_not_see_the_value() {
        let mut history = vec![
            Operation::put(b"k", b"a", 0, 10),
            Operation::delete(b"k", 20, 30),
            Operation::get(b"k", None, 40, 50),
        ];
        assert_eq!(check(&history), Verdict::Linearizable);
        history.push(Operation::get(b"k", Some(b"a"), 60, 70));
        assert!(violates(&check(&history)));
    }

    #[test]
    fn a_pending_write_may_take_effect_late_or_never() {
        let late = [
            Operation::put(b"k", b"a", 0, 10),
            Operation::put_pending(b"k", b"b", 20),
            Operation::get(b"k", Some(b"a"), 30, 40),
            Operation::get(b"k", Some(b"b"), 1_000, 1_010),
        ];
        assert_eq!(check(&late), Verdict::Linearizable);
        let never = [
            Operation::put(b"k", b"a", 0, 10),
            Operation::delete_pending(b"k", 20),
            Operation::get(b"k", Some(b"a"), 1_000, 1_010),
        ];
        assert_eq!(check(&never), Verdict::Linearizable);
    }

    #[test]
    fn a_pending_write_cannot_take_effect_before_it_was_sent_or_twice() {
        // Seen before it was invoked: rejected.
        let early = [
            Operation::get(b"k", Some(b"b"), 0, 10),
            Operation::put_pending(b"k", b"b", 20),
        ];
        assert!(violates(&check(&early)));
        // Once seen, then overwritten by a completed write, it cannot come back.
        let twice = [
            Operation::put_pending(b"k", b"b", 0),
            Operation::get(b"k", Some(b"b"), 10, 20),
            Operation::put(b"k", b"c", 30, 40),
            Operation::get(b"k", Some(b"b"), 50, 60),
        ];
        assert!(violates(&check(&twice)));
    }

    #[test]
    fn a_pending_read_is_ignored() {
        let history = [
            Operation::put(b"k", b"a", 0, 10),
            Operation {
                output: Output::Pending,
                ..Operation::get(b"k", None, 20, 0)
            },
        ];
        assert_eq!(check(&history), Verdict::Linearizable);
    }

    #[test]
    fn keys_are_checked_independently_and_the_violating_key_is_named() {
        let history = [
            Operation::put(b"x", b"a", 0, 10),
            Operation::put(b"y", b"a", 0, 10),
            Operation::get(b"x", Some(b"a"), 20, 30),
            Operation::get(b"y", None, 20, 30),
        ];
        match check(&history) {
            Verdict::Violation { key, .. } => assert_eq!(key, b"y"),
            other => panic!("expected a violation on y, got {other:?}"),
        }
    }

    /// `writers` puts overlapping each other completely, then two reads after all of them that
    /// see different values: a violation that the search can only prove by exhausting every
    /// subset of writes.
    fn exhausting_violation(writers: usize) -> Vec<Operation> {
        let mut history: Vec<Operation> = (0..writers)
            .map(|i| Operation::put(b"k", format!("v{i}").as_bytes(), 0, 1_000))
            .collect();
        history.push(Operation::get(b"k", Some(b"v0"), 2_000, 2_010));
        history.push(Operation::get(b"k", Some(b"v1"), 2_020, 2_030));
        history
    }

    #[test]
    fn the_search_answers_unknown_past_its_bound_instead_of_hanging() {
        let history = exhausting_violation(12);
        match check_with_limit(&history, 1_000) {
            Verdict::Unknown { key, states_explored } => {
                assert_eq!(key, b"k");
                assert_eq!(states_explored, 1_000);
            }
            other => panic!("expected unknown, got {other:?}"),
        }
        // With the default bound the same history is proven wrong.
        assert!(violates(&check(&history)));
    }

    #[test]
    fn a_violation_on_one_key_wins_over_unknown_on_another() {
        let mut history = exhausting_violation(12);
        history.push(Operation::put(b"z", b"a", 0, 10));
        history.push(Operation::get(b"z", None, 20, 30));
        match check_with_limit(&history, 1_000) {
            Verdict::Violation { key, .. } => assert_eq!(key, b"z"),
            other => panic!("expected the violation on z, got {other:?}"),
        }
    }

    #[test]
    #[should_panic(expected = "malformed operation")]
    fn a_get_answered_done_is_a_malformed_history() {
        let history = [Operation {
            output: Output::Done,
            ..Operation::get(b"k", None, 0, 1)
        }];
        check(&history);
    }

    #[test]
    fn a_create_sets_only_an_absent_key_and_a_refused_one_needs_a_value_there() {
        let sequential = [
            Operation::create(b"k", b"a", 0, 10),
            Operation::create_refused(b"k", b"b", 20, 30),
            Operation::get(b"k", Some(b"a"), 40, 50),
            Operation::delete(b"k", 60, 70),
            Operation::create(b"k", b"c", 80, 90),
        ];
        assert_eq!(check(&sequential), Verdict::Linearizable);
        // Two creates both set the key, one after the other, with no delete between.
        let twice = [
            Operation::create(b"k", b"a", 0, 10),
            Operation::create(b"k", b"b", 20, 30),
        ];
        assert!(violates(&check(&twice)), "a second create succeeded on a present key");
        // A create refused while the key was absent (nothing was written before it returned).
        let refused_absent = [
            Operation::create_refused(b"k", b"a", 0, 10),
            Operation::put(b"k", b"b", 20, 30),
        ];
        assert!(
            violates(&check(&refused_absent)),
            "a create was refused on an absent key"
        );
        // Refused while a put overlapped it: the put may have come first.
        let overlapping = [
            Operation::put(b"k", b"b", 0, 30),
            Operation::create_refused(b"k", b"a", 10, 20),
        ];
        assert_eq!(check(&overlapping), Verdict::Linearizable);
    }

    #[test]
    fn a_pending_create_may_explain_a_read_only_if_the_key_was_absent() {
        let from_absent = [
            Operation::create_pending(b"k", b"a", 0),
            Operation::get(b"k", Some(b"a"), 10, 20),
        ];
        assert_eq!(check(&from_absent), Verdict::Linearizable);
        let over_a_value = [
            Operation::put(b"k", b"b", 0, 5),
            Operation::create_pending(b"k", b"a", 10),
            Operation::get(b"k", Some(b"a"), 20, 30),
        ];
        assert!(
            violates(&check(&over_a_value)),
            "a pending create overwrote a present value"
        );
    }

    /// splitmix64: a deterministic generator for the randomized tests (no crate needed).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    /// A history recorded from a real sequential execution over three keys: operation i takes
    /// effect at time 100 * i, and its interval is stretched around that point by up to 300 ns
    /// each way, so it overlaps its neighbours. Some writes are recorded as pending (some of
    /// which took effect, some lost). Linearizable by construction.
    fn random_history(rng: &mut Rng, operations: u64) -> Vec<Operation> {
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut history = Vec::new();
        for i in 0..operations {
            let key = [b'a' + rng.below(3) as u8];
            let point = 1_000 + 100 * i;
            let invoked_ns = point - rng.below(300);
            let returned_ns = point + rng.below(300);
            let roll = rng.below(100);
            let operation = if roll < 45 {
                Operation::get(&key, model.get(&key[..]).map(Vec::as_slice), invoked_ns, returned_ns)
            } else if roll < 85 {
                let value = format!("v{i}").into_bytes();
                model.insert(key.to_vec(), value.clone());
                Operation::put(&key, &value, invoked_ns, returned_ns)
            } else if roll < 93 {
                model.remove(&key[..]);
                Operation::delete(&key, invoked_ns, returned_ns)
            } else if roll < 97 {
                // Took effect, but the client never heard back.
                let value = format!("v{i}").into_bytes();
                model.insert(key.to_vec(), value.clone());
                Operation::put_pending(&key, &value, invoked_ns)
            } else {
                // Lost: never took effect.
                Operation::put_pending(&key, format!("lost{i}").as_bytes(), invoked_ns)
            };
            history.push(operation);
        }
        history
    }

    /// Changes one completed read to observe another value its key held at some other time.
    /// Returns false when the history has no read with an alternative.
    fn corrupt_one_read(rng: &mut Rng, history: &mut [Operation]) -> bool {
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| matches!(history[i].output, Output::Value(_)))
            .collect();
        for _ in 0..16 {
            let read = reads[rng.below(reads.len() as u64) as usize];
            let key = history[read].key.clone();
            let mut candidates: Vec<Option<Vec<u8>>> = vec![None];
            for operation in history.iter().filter(|o| o.key == key && o.output == Output::Done) {
                if let Input::Put(value) = &operation.input {
                    candidates.push(Some(value.clone()));
                }
            }
            candidates.retain(|candidate| Output::Value(candidate.clone()) != history[read].output);
            if !candidates.is_empty() {
                let pick = candidates[rng.below(candidates.len() as u64) as usize].clone();
                history[read].output = Output::Value(pick);
                return true;
            }
        }
        false
    }

    #[test]
    fn random_real_executions_pass_and_a_corrupted_read_mostly_fails() {
        let mut rng = Rng(0x5EED_0013);
        let (mut corrupted, mut rejected) = (0, 0);
        for round in 0..60 {
            let mut history = random_history(&mut rng, 150);
            assert_eq!(check(&history), Verdict::Linearizable, "round {round}");
            if corrupt_one_read(&mut rng, &mut history) {
                corrupted += 1;
                match check(&history) {
                    Verdict::Violation { .. } => rejected += 1,
                    Verdict::Linearizable => {}
                    unknown => panic!("round {round}: {unknown:?}"),
                }
            }
        }
        // Some corruptions stay legal (the substituted value was the register's other value
        // while the read overlapped a write), so not all are caught; with this seed 59 of 60
        // are, and a checker that accepts everything (or rejects too little) fails here.
        assert!(corrupted >= 55, "only {corrupted} histories could be corrupted");
        assert!(rejected * 10 >= corrupted * 9, "rejected {rejected} of {corrupted}");
    }
}
