#!/usr/bin/env bash
# Sourced by the benchmark scripts: `need COMMAND:PACKAGE ...` installs, as root through apt,
# the Debian packages of the commands that are missing, and says which could not be had (the
# caller decides whether it can go on without them).
need() {
  local missing=() spec
  for spec in "$@"; do
    command -v "${spec%%:*}" >/dev/null || missing+=("${spec#*:}")
  done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing ${missing[*]}" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >&2 \
      || echo "note: could not install ${missing[*]}" >&2
  else
    echo "note: ${missing[*]} missing and not root: the runs that need them are skipped" >&2
  fi
}
