#!/usr/bin/env bash
# System packages that the tests need beyond Python: Prometheus and promtool (Debian's
# `prometheus` package) for the operations tests (tests/ops), PostgreSQL (`postgresql`) for
# the database tests, Chromium and its driver (`chromium`, `chromium-driver`) for the
# browser tests (tests/web). Idempotent: installs only
# what is missing. Needs root (or sudo) and the Debian archive.
#
# Exit status: 0 when everything is there afterwards. When something cannot be installed:
# with CI=true it exits 1 (CI must not silently skip the ops tests); otherwise it prints a
# warning and exits 0, and the tests that need the tool skip with the reason.
set -uo pipefail

in_ci() { case "${CI:-}" in 1|true|TRUE|yes) return 0 ;; *) return 1 ;; esac; }
note() { echo "install-system-deps: $*" >&2; }

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
SUDO=
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    note "not root and no password-less sudo: cannot install $packages"
    if in_ci; then exit 1; fi
    exit 0
  fi
fi

if ! command -v apt-get >/dev/null 2>&1; then
  note "no apt-get on this machine: install $packages by hand (it provides promtool)"
  if in_ci; then exit 1; fi
  exit 0
fi

note "installing $packages (Debian's packages)"
export DEBIAN_FRONTEND=noninteractive
# The package's service must not start on install: the tests run their own Prometheus.
policy_created=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  policy_created=1
fi
ok=1
$SUDO apt-get update -q >&2 || ok=0
if [ $ok -eq 1 ]; then
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q --no-install-recommends $packages >&2 || ok=0
fi
if [ -n "$policy_created" ]; then
  $SUDO rm -f /usr/sbin/policy-rc.d
fi

if [ $ok -eq 1 ] && command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 \
  && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -x /usr/bin/chromium ]; then
  exit 0
fi
note "could not install $packages; the tests that need them (tests/ops, tests/db, tests/web) cannot run"
if in_ci; then exit 1; fi
exit 0
