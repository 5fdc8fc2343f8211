#!/usr/bin/env bash
# A local PostgreSQL server for the tests that need one (tests/test_postgres.py), from Debian's
# `postgresql` package: installs it if missing (needs root and apt), starts the default cluster on
# 127.0.0.1, creates the role and database `lrsweep_test` (idempotent), and prints the URL to put
# in LRSWEEP_TEST_POSTGRES_URL:
#
#   export LRSWEEP_TEST_POSTGRES_URL=$(scripts/test_postgres.sh)
#
# The password is a throwaway for a server that listens on 127.0.0.1 only.
set -euo pipefail
PASSWORD=${LRSWEEP_TEST_POSTGRES_PASSWORD:-lrsweep-test-pw}
if ! command -v pg_lsclusters >/dev/null || [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
  echo "test_postgres: installing Debian's postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
read -r VERSION CLUSTER PORT STATUS _ < <(pg_lsclusters -h | head -n 1)
if [ "$STATUS" != "online" ]; then
  echo "test_postgres: starting cluster $VERSION/$CLUSTER on port $PORT" >&2
  pg_ctlcluster "$VERSION" "$CLUSTER" start -- -o "-c listen_addresses=127.0.0.1" >&2
fi
as_postgres() { su postgres -c "$1"; }
as_postgres "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='lrsweep_test'\"" | grep -q 1 ||
  as_postgres "psql -qc \"CREATE ROLE lrsweep_test LOGIN PASSWORD '$PASSWORD'\"" >&2
as_postgres "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='lrsweep_test'\"" | grep -q 1 ||
  as_postgres "createdb -O lrsweep_test lrsweep_test" >&2
echo "postgresql+psycopg2://lrsweep_test:$PASSWORD@127.0.0.1:$PORT/lrsweep_test"
