#!/usr/bin/env bash
# The whole suite: install what the tests need, lint, type-check, test. README's second command.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages the tests drive for real: pgbouncer (the transaction-mode pooler Supabase uses)
# and chromium (the dashboard's browser test; Playwright's own browser download fails offline).
missing=()
command -v pgbouncer >/dev/null 2>&1 || missing+=(pgbouncer)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Supabase CLI (npm, exact version in package.json), for the `supabase db push` test.
if command -v npm >/dev/null 2>&1 && [ ! -x node_modules/.bin/supabase ]; then
  npm install --no-package-lock --no-audit --no-fund --loglevel=error >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check -e ".[test]"
python3 -m ruff check .
python3 -m mypy
python3 -m pytest -q "$@"
