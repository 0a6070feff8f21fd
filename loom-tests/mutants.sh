#!/usr/bin/env bash
# Shows that the loom models bite: builds src/sync once per mutant (a deliberately weakened line,
# selected by `--cfg corekv_mutant="<name>"`), runs the models that mutant must break, and fails
# unless each of them fails, with the failure that mutant causes (not a build error, and not some
# other panic). The unmutated suite runs first and must pass, so every failure below is the
# mutant's doing. See README.md for what each mutant changes.
#
# Usage: loom-tests/mutants.sh [mutant-name ...]   (default: every mutant)
# Honours LOOM_MAX_PREEMPTIONS (the models default to 3).
set -euo pipefail

cd "$(dirname "$0")"
export RUSTFLAGS="--cfg loom"
export CARGO_TERM_COLOR=never

# mutant | test file | model | text the failure must show
MUTANTS='
oneshot_relaxed_publish     | oneshot | value_delivered_exactly_once               | Causality violation
oneshot_relaxed_publish     | oneshot | reply_never_read_before_written            | Causality violation
oneshot_relaxed_observe     | oneshot | reply_never_read_before_written            | Causality violation
oneshot_relaxed_waker       | oneshot | no_lost_wakeup                             | Causality violation
oneshot_no_recheck          | oneshot | no_lost_wakeup                             | deadlock
oneshot_ignore_closed       | oneshot | dropped_receiver_hands_the_value_back      | sent to a receiver already dropped
oneshot_sender_drop_no_wake | oneshot | dropped_sender_cancels                     | deadlock
latch_relaxed_open          | latch   | readiness_never_observed_open_early        | open before shard
latch_relaxed_open          | latch   | count_down_publishes_prior_writes          | Causality violation
latch_relaxed_is_open       | latch   | readiness_never_observed_open_early        | open before shard
latch_relaxed_is_open       | latch   | count_down_publishes_prior_writes          | Causality violation
latch_no_recheck            | latch   | every_waiter_released_after_n_count_downs  | deadlock
latch_no_recheck            | latch   | shutdown_seen_by_every_shard               | deadlock
latch_wake_one              | latch   | shutdown_seen_by_every_shard               | deadlock
latch_wrapping_count_down   | latch   | count_never_goes_backwards_nor_underflows  | the count
latch_cancel_keeps_waker    | latch   | dropped_wait_forgets_its_waker             | still held
counter_load_store          | counter | counter_never_loses_an_increment_nor_goes_backwards | lost an increment
'

selected=("$@")
for name in "${selected[@]}"; do
    if ! grep -qE "^$name +\|" <<<"$MUTANTS"; then
        echo "FAIL: no mutant is named $name" >&2
        exit 2
    fi
done

log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT
started=$SECONDS
failures=0

echo "== baseline: every model passes unmutated"
COREKV_MUTANT='' cargo test --release --quiet >"$log_dir/baseline.log" 2>&1 || {
    cat "$log_dir/baseline.log"
    echo "FAIL: the unmutated suite must pass before mutants mean anything" >&2
    exit 1
}

built=''
while IFS='|' read -r mutant test_file model expected; do
    mutant="$(echo "$mutant" | xargs)"
    [[ -z "$mutant" ]] && continue
    test_file="$(echo "$test_file" | xargs)"
    model="$(echo "$model" | xargs)"
    expected="$(echo "$expected" | xargs)"
    if ((${#selected[@]} > 0)) && [[ ! " ${selected[*]} " =~ " $mutant " ]]; then
        continue
    fi

    if [[ "$built" != "$mutant" ]]; then
        echo "== mutant $mutant"
        # The mutant must build: a model that "fails" because it no longer compiles proves
        # nothing.
        if ! COREKV_MUTANT="$mutant" cargo test --release --no-run --quiet >"$log_dir/build.log" 2>&1; then
            cat "$log_dir/build.log"
            echo "FAIL: mutant $mutant does not build" >&2
            failures=$((failures + 1))
            continue
        fi
        built="$mutant"
    fi

    model_started=$SECONDS
    log="$log_dir/$mutant.$model.log"
    if COREKV_MUTANT="$mutant" cargo test --release --quiet --test "$test_file" -- \
        --exact "$model" --nocapture --test-threads=1 >"$log" 2>&1; then
        echo "FAIL: $test_file::$model passed with mutant $mutant: the model is vacuous" >&2
        failures=$((failures + 1))
    elif ! grep -qF -- "$expected" "$log"; then
        tail -n 30 "$log"
        echo "FAIL: $test_file::$model failed with mutant $mutant, but not with \"$expected\"" >&2
        failures=$((failures + 1))
    else
        echo "   caught by $test_file::$model ($expected) in $((SECONDS - model_started))s"
    fi
done <<<"$MUTANTS"

# Leave the target directory built unmutated, as the normal test command expects it.
COREKV_MUTANT='' cargo test --release --no-run --quiet >/dev/null 2>&1 || true

echo "== $((SECONDS - started))s in all"
if ((failures > 0)); then
    echo "FAIL: $failures mutant check(s) did not fail as they must" >&2
    exit 1
fi
echo "every mutant was caught"
