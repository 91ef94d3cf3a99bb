#!/usr/bin/env bash
# Install and start what the test suite needs, on Debian 12. Idempotent and fast:
# it checks before it acts, prints one line per thing it did, and nothing at all
# when everything is already in place.
#
# Usage: scripts/test-prereqs.sh [GROUP...]          (no GROUP means: core)
#
#   core     Python's venv module; the IMAP servers the tests run their own copies of
#            (Dovecot IMAP + LMTP; Courier-IMAP; GNU Mailutils imap4d + putmail) and
#            the unprivileged `vmail` user that owns their mail; PostgreSQL and Redis
#            answering on 127.0.0.1: used as found, else installed and started here.
#            Debian declares courier-imap in conflict with any other IMAP server
#            (Conflicts: imap-server), so next to Dovecot its package is unpacked,
#            not installed: into $SIGHTLINE_TEST_STATE_DIR/courier-imap (what it
#            needs from courier-base and courier-authdaemon is installed).
#   browser  headless Chromium and its WebDriver, with metric-compatible fonts.
#   office   LibreOffice without a GUI, for `soffice --headless --convert-to pdf`, and
#            bubblewrap, the private filesystem view it converts in.
#   bench    nginx and wrk, for the benchmarks under bench/.
#
# To add packages, extend group_packages() below; a new group is one more line.
#
# Environment:
#   SIGHTLINE_TEST_PG_PORT     port where the tests expect PostgreSQL (default 5432)
#   SIGHTLINE_TEST_REDIS_PORT  port where the tests expect Redis (default 6379)
#   SIGHTLINE_TEST_STATE_DIR   data and logs of the servers this script starts, and
#                              postgres.url / redis.url saying where they listen
#                              (default /var/tmp/sightline-test-<uid>)
#
# Servers started here listen on 127.0.0.1 only. PostgreSQL gets its own data
# directory with trust authentication and fsync off (test data only: it never
# touches Debian's `main` cluster); Redis keeps nothing on disk. Both keep running
# after this script exits, so the next run finds them answering and does nothing.
#
# Debian's packaged daemons are never started system-wide on install: a temporary
# /usr/sbin/policy-rc.d refuses them (an existing policy-rc.d is left as it is).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

PG_PORT="${SIGHTLINE_TEST_PG_PORT:-5432}"
REDIS_PORT="${SIGHTLINE_TEST_REDIS_PORT:-6379}"
STATE_DIR="${SIGHTLINE_TEST_STATE_DIR:-/var/tmp/sightline-test-$(id -u)}"
POLICY_RC_D=/usr/sbin/policy-rc.d

group_packages() {
    case "$1" in
        # python3-venv: Debian ships `python3 -m venv` (ensurepip) separately.
        # courier-*: couriertcpd, authdaemond, makeuserdb, deliverquota (courier-imap itself
        # is unpacked by unpack_courier_imap); mailutils-mda brings putmail.
        core) echo "python3-venv dovecot-imapd dovecot-lmtpd courier-base courier-authdaemon" \
            "courier-authlib-userdb mailutils-imap4d mailutils-mda" ;;
        browser) echo "chromium chromium-driver fonts-liberation" ;;
        office) echo "libreoffice-writer-nogui libreoffice-impress-nogui fonts-liberation" \
            "bubblewrap" ;;
        bench) echo "nginx-light wrk" ;;
        *) return 1 ;;
    esac
}

say() { echo "test-prereqs: $*"; }
die() {
    echo "test-prereqs: error: $*" >&2
    exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# Print those of the given packages that dpkg does not report as installed.
missing_packages() {
    local pkg status
    declare -A installed=()
    while read -r pkg status; do
        [[ $status == "install ok installed" ]] && installed[$pkg]=1
    done < <(dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null || true)
    for pkg in "$@"; do
        [[ -n ${installed[$pkg]:-} ]] || echo "$pkg"
    done
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_answers() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

created_policy_rc_d=0
cleanup() {
    if ((created_policy_rc_d)); then
        rm -f "$POLICY_RC_D"
    fi
}
trap cleanup EXIT

refuse_service_starts() {
    if [[ ! -e $POLICY_RC_D ]]; then
        printf '#!/bin/sh\n# Written by sightline scripts/test-prereqs.sh for one apt-get run.\nexit 101\n' \
            >"$POLICY_RC_D"
        chmod 0755 "$POLICY_RC_D"
        created_policy_rc_d=1
    fi
}

apt_updated=0
install_packages() {
    if ! is_root; then
        die "missing Debian packages: $*
  install them as root:  apt-get install --no-install-recommends $*
  (or run this script as root: it installs them itself)"
    fi
    refuse_service_starts
    mkdir -p "$STATE_DIR"
    local log="$STATE_DIR/apt.log"
    local apt=(apt-get -q -y -o DPkg::Lock::Timeout=600
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    if ((!apt_updated)); then
        "${apt[@]}" update >"$log" 2>&1 || { tail -n 20 "$log" >&2; die "apt-get update failed"; }
        apt_updated=1
        say "ran apt-get update"
    fi
    "${apt[@]}" install --no-install-recommends "$@" >"$log" 2>&1 ||
        { tail -n 30 "$log" >&2; die "apt-get install $* failed (full log: $log)"; }
    say "installed $*"
}

ensure_vmail_user() {
    id -u vmail >/dev/null 2>&1 && return 0
    is_root || die "the unprivileged user 'vmail' is missing; create it as root:
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin vmail"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin vmail
    say "created system user vmail"
}

# Unpack Debian's courier-imap (imapd, imaplogin, its default settings) where
# tests/services/courier.py looks for it. It cannot be installed: it conflicts
# with dovecot-imapd. Its libraries come with courier-base.
unpack_courier_imap() {
    local target="$STATE_DIR/courier-imap" work
    [[ -x $target/usr/bin/imapd ]] && return 0
    mkdir -p "$STATE_DIR"
    work=$(mktemp -d "$STATE_DIR/courier-imap.XXXXXX")
    if ! (cd "$work" && apt-get download courier-imap >"$work/download.log" 2>&1); then
        if is_root && ((!apt_updated)); then
            apt-get -q update >"$work/download.log" 2>&1 && apt_updated=1
            (cd "$work" && apt-get download courier-imap >>"$work/download.log" 2>&1) ||
                { tail -n 20 "$work/download.log" >&2; die "apt-get download courier-imap failed"; }
        else
            tail -n 20 "$work/download.log" >&2
            die "apt-get download courier-imap failed (run apt-get update as root first)"
        fi
    fi
    mkdir -p "$work/root"
    dpkg-deb -x "$work"/courier-imap_*.deb "$work/root"
    rm -rf "$target"
    mv "$work/root" "$target"
    rm -rf "$work"
    say "unpacked courier-imap $("$target/usr/bin/imapd" --version 2>/dev/null | head -n 1) into $target"
}

# Run a PostgreSQL server binary as the owner of its data directory.
as_pg_owner() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_bindir() {
    local dirs
    dirs=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -V | tail -n 1)
    [[ -n $dirs ]] || die "PostgreSQL server binaries not found under /usr/lib/postgresql"
    echo "$dirs"
}

start_own_postgres() {
    local bindir data
    bindir=$(pg_bindir)
    data="$STATE_DIR/postgres-$PG_PORT"
    mkdir -p "$STATE_DIR"
    chmod 0755 "$STATE_DIR"
    if [[ ! -f $data/PG_VERSION ]]; then
        mkdir -p "$data"
        chmod 0700 "$data"
        if is_root; then chown postgres:postgres "$data"; fi
        as_pg_owner "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 \
            --locale=C.UTF-8 --no-sync >"$STATE_DIR/initdb-$PG_PORT.log" 2>&1 ||
            { tail -n 20 "$STATE_DIR/initdb-$PG_PORT.log" >&2; die "initdb failed"; }
        say "created a PostgreSQL test cluster in $data"
    fi
    # fsync off: the data is throwaway test data and CREATE DATABASE gets much faster.
    # pg_ctl hands -o to /bin/sh on one line: keep these options free of newlines.
    local options=(-p "$PG_PORT" -c listen_addresses=127.0.0.1
        -c "unix_socket_directories='$data'" -c fsync=off -c synchronous_commit=off
        -c full_page_writes=off -c max_connections=200)
    as_pg_owner "$bindir/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 -s \
        -o "${options[*]}" start ||
        { tail -n 20 "$data/server.log" >&2; die "PostgreSQL did not start"; }
    echo "postgresql://postgres@127.0.0.1:$PG_PORT/postgres" >"$STATE_DIR/postgres.url"
    say "started PostgreSQL on 127.0.0.1:$PG_PORT (data and log in $data)"
}

check_postgres_trust() {
    command -v psql >/dev/null || return 0
    PGCONNECT_TIMEOUT=3 timeout 5 psql -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
        -Atqc "select 1" >/dev/null 2>&1 ||
        die "something answers on 127.0.0.1:$PG_PORT but is not a PostgreSQL that lets user
  postgres in without a password. Either allow it (pg_hba.conf: host all all 127.0.0.1/32 trust), point the
  tests elsewhere with SIGHTLINE_TEST_PG_URL, or let this script start its own server on
  a free port: SIGHTLINE_TEST_PG_PORT=55432 $0"
}

start_own_redis() {
    local redis_server=/usr/bin/redis-server
    mkdir -p "$STATE_DIR"
    "$redis_server" --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
        --save '' --appendonly no --dir "$STATE_DIR" \
        --logfile "$STATE_DIR/redis-$REDIS_PORT.log" --pidfile "$STATE_DIR/redis-$REDIS_PORT.pid"
    local _
    for _ in $(seq 50); do
        port_answers "$REDIS_PORT" && break
        sleep 0.1
    done
    port_answers "$REDIS_PORT" ||
        { tail -n 20 "$STATE_DIR/redis-$REDIS_PORT.log" >&2; die "Redis did not start"; }
    echo "redis://127.0.0.1:$REDIS_PORT" >"$STATE_DIR/redis.url"
    say "started Redis on 127.0.0.1:$REDIS_PORT (nothing kept on disk; log in $STATE_DIR)"
}

main() {
    local groups=("$@") group group_list packages=() need_pg=0 need_redis=0
    ((${#groups[@]})) || groups=(core)
    for group in "${groups[@]}"; do
        group_packages "$group" >/dev/null ||
            die "unknown group '$group' (known: core browser office bench)"
        read -r -a group_list <<<"$(group_packages "$group")"
        packages+=("${group_list[@]}")
        if [[ $group == core ]]; then
            port_answers "$PG_PORT" || need_pg=1
            port_answers "$REDIS_PORT" || need_redis=1
        fi
    done
    if ((need_pg)); then packages+=(postgresql); fi
    if ((need_redis)); then packages+=(redis-server); fi

    local missing
    mapfile -t missing < <(missing_packages "${packages[@]}" | awk '!seen[$0]++')
    ((${#missing[@]} == 0)) || install_packages "${missing[@]}"

    for group in "${groups[@]}"; do
        if [[ $group == core ]]; then
            ensure_vmail_user
            unpack_courier_imap
            if ((need_pg)); then start_own_postgres; else check_postgres_trust; fi
            if ((need_redis)); then start_own_redis; fi
        fi
    done
}

main "$@"
