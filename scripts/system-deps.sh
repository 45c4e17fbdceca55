#!/usr/bin/env bash
# System packages the test suite needs, installed once (what `make test` and .ci/run call):
#   chromium    the chat page's browser test (tests/server/test_browser.py; Playwright drives Debian's chromium)
#   postgresql  the session-store tests (tests/pgserver.py starts a throw-away server from initdb/pg_ctl)
# Idempotent: a no-op when both are there. Installs with apt-get as root, or through sudo; otherwise it says what
# to run and exits 1.   --check: only report what is missing (exit 1 when something is).
set -euo pipefail

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

have_chromium() { command -v chromium >/dev/null 2>&1; }
have_postgres() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

missing=()
have_chromium || missing+=(chromium)
have_postgres || missing+=(postgresql)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$check_only" = 1 ]; then
  echo "system-deps: missing ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: ${missing[*]} missing and this is not a Debian/Ubuntu system (no apt-get)." >&2
  echo "  how to fix: install ${missing[*]} with your package manager (the test suite needs chromium on PATH and" >&2
  echo "  PostgreSQL's initdb/pg_ctl), or run the tests without them: make test SYSTEM_DEPS=0" >&2
  exit 1
fi
if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "system-deps: ${missing[*]} missing, and installing system packages needs root (not root, no sudo)." >&2
  echo "  how to fix: ask an administrator to run" >&2
  echo "    apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
  echo "  then run make test again (or make test SYSTEM_DEPS=0 to run without them: their tests then fail)" >&2
  exit 1
fi
echo "system-deps: installing ${missing[*]} (apt-get)" >&2
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
