#!/usr/bin/env bash
# A throwaway PostgreSQL for billingd's tests: loopback only, a non-default
# port, a temporary data directory, password auth on TCP.
#
#   eval "$(.ci/postgres.sh start)"   # installs Debian's postgresql if missing, starts it,
#                                     # exports BILLINGD_TEST_POSTGRES (the DSN) and BILLINGD_PG_DIR
#   .ci/postgres.sh stop              # stops it (by BILLINGD_PG_DIR) and removes the directory
#
# Progress goes to stderr; stdout carries only the export lines. As root the
# server runs as the `postgres` user (PostgreSQL refuses to run as root).
# BILLINGD_PG_PORT picks the port (default: the first free one from 55432).
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

bindir() {
	local d
	for d in /usr/lib/postgresql/*/bin; do
		[ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
	done
	command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/pg_ctl" ] && { pg_config --bindir; return 0; }
	return 1
}

install() {
	log "PostgreSQL not found: installing Debian's postgresql"
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	# No default cluster on port 5432: this script runs its own, in a temporary directory.
	$sudo mkdir -p /etc/postgresql-common/createcluster.d
	echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/billingd-ci.conf >/dev/null
	$sudo apt-get update -qq >&2
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >&2
}

# as runs a command as the database user: `postgres` when we are root.
as() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

free_port() {
	local p
	for p in $(seq 55432 55532); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	log "no free port in 55432-55532"
	return 1
}

start() {
	local bin
	bin=$(bindir) || { install; bin=$(bindir); }
	local dir port pass
	dir=$(mktemp -d /tmp/billingd-pg.XXXXXX)
	chmod 700 "$dir"
	[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
	port=${BILLINGD_PG_PORT:-$(free_port)}
	pass=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
	echo "$pass" >"$dir/pwfile"
	[ "$(id -u)" -eq 0 ] && chown postgres: "$dir/pwfile"
	log "initdb $dir/data ($("$bin/postgres" --version))"
	as "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C \
		--auth-local=trust --auth-host=scram-sha-256 --pwfile="$dir/pwfile" >"$dir/initdb.log" 2>&1 ||
		{ cat "$dir/initdb.log" >&2; return 1; }
	rm -f "$dir/pwfile"
	# Loopback only, no Unix socket outside the temporary directory. fsync stays on:
	# the tests and benchmarks measure durable commits.
	as "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=300" start >&2 ||
		{ cat "$dir/server.log" >&2; return 1; }
	as "$bin/psql" -q -h "$dir" -p "$port" -U postgres -d postgres -c "CREATE DATABASE billingd_test" >&2
	log "serving on 127.0.0.1:$port (data in $dir)"
	echo "export BILLINGD_PG_DIR='$dir'"
	echo "export BILLINGD_TEST_POSTGRES='postgres://postgres:$pass@127.0.0.1:$port/billingd_test?sslmode=disable'"
}

stop() {
	local dir=${BILLINGD_PG_DIR:-}
	if [ -z "$dir" ] || [ ! -d "$dir/data" ]; then
		log "nothing to stop (BILLINGD_PG_DIR=${dir:-unset})"
		return 0
	fi
	local bin
	bin=$(bindir)
	as "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
	rm -rf "$dir"
	log "stopped and removed $dir"
}

case "${1:-}" in
start) start ;;
stop) stop ;;
*)
	echo "usage: $0 start|stop" >&2
	exit 2
	;;
esac
