#!/usr/bin/env bash
# Sourced by scripts/test.sh (and so by .ci/run): puts the tools the suite needs on PATH,
# installing them on a fresh machine (as root: apt-get; schemathesis from PyPI into a
# virtualenv under target/). Nothing here runs a test.

# curl drives the README test and some integration tests.
if ! command -v curl >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq curl >/dev/null
fi

# schemathesis fuzzes a live server against docs/openapi.yaml; this version is the one checked
# with Python 3.11 here.
SCHEMATHESIS_VERSION=4.32.5
SCHEMATHESIS_VENV="$PWD/target/ci-venv"
if ! schemathesis --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    if ! "$SCHEMATHESIS_VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
        if ! python3 -m venv --help >/dev/null 2>&1; then
            apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
        fi
        python3 -m venv "$SCHEMATHESIS_VENV"
        "$SCHEMATHESIS_VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
    fi
    export PATH="$SCHEMATHESIS_VENV/bin:$PATH"
fi
