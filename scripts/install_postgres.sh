#!/usr/bin/env bash
# Install the PostgreSQL server (Debian package `postgresql`) that the test suite starts on
# loopback for the shared-study tests (tests/test_search_postgres.py).
#
# Idempotent: does nothing when initdb and pg_ctl are already under /usr/lib/postgresql/*/bin
# or on PATH. Where apt-get is not available (or we are not root and sudo is not set up),
# it prints why and exits 0: those tests then skip with that reason.
set -uo pipefail

have_server() {
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
            echo "PostgreSQL server found in $dir"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        echo "PostgreSQL server found on PATH ($(command -v pg_ctl))"
        return 0
    fi
    return 1
}

if have_server; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_postgres.sh: apt-get is not available; install a PostgreSQL server yourself to run the" \
         "shared-study tests (they skip without one)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_postgres.sh: not root and no passwordless sudo; run 'apt-get install postgresql' as root" \
             "to run the shared-study tests (they skip without a server)"
        exit 0
    fi
fi

echo "installing the PostgreSQL server (apt-get install postgresql) for the shared-study tests"
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }; then
    echo "install_postgres.sh: apt-get could not install postgresql; the shared-study tests will skip"
    exit 0
fi
# The Debian package may create and start a default cluster; the tests use their own
# throw-away cluster on a free port, so the default one is not needed.
have_server || echo "install_postgres.sh: postgresql installed but initdb/pg_ctl not found"
exit 0
