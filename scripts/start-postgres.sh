#!/usr/bin/env bash
# Start this machine's PostgreSQL cluster if it is installed and stopped, then wait for it.
# The tests use it at 127.0.0.1:5432 (TOONFORGE_TEST_POSTGRES_URL overrides); without one,
# the PostgreSQL tests are skipped outside CI.
set -u
if command -v pg_lsclusters >/dev/null 2>&1 && ! pg_lsclusters 2>/dev/null | grep -q online; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if command -v pg_isready >/dev/null 2>&1; then
  for _ in $(seq 1 30); do
    pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && exit 0
    sleep 1
  done
  echo "PostgreSQL did not answer on 127.0.0.1:5432" >&2
fi
exit 0
