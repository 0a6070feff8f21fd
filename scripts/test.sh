#!/usr/bin/env bash
# Every test corekv has, in the order a failure is cheapest to see: formatting, lints (all
# targets, benches included), unit and integration tests (the real server over TCP, the
# README's commands among them), schemathesis against docs/openapi.yaml on a live server, then
# the loom models of the cross-thread primitives and their mutants (each mutant must be caught).
set -euo pipefail
cd "$(dirname "$0")/.."
# schemathesis (and curl) on PATH, installed when missing.
source scripts/tools.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
(cd loom-tests && cargo fmt --all -- --check)

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --all-targets -- -D warnings

step "unit and integration tests (tests/readme.rs runs the README's commands)"
cargo test

step "schemathesis: a live server against docs/openapi.yaml (bounded; see scripts/schemathesis.sh)"
./scripts/schemathesis.sh

step "loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:=3})"
(cd loom-tests && RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS="$LOOM_MAX_PREEMPTIONS" cargo test --release)

step "loom mutants: every weakened primitive must fail its model"
./loom-tests/mutants.sh
