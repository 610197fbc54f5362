#!/usr/bin/env bash
# Runs the example clients against real billingd processes (make examples-test):
#   1. billingd serve --stripe-sim with a caller token: examples/go (charge,
#      replay, decline) and examples/node (the same, decoding
#      grpc-status-details-bin), both sending the token;
#   2. billingd serve --stripe-sim, open (loopback), with Stripe faults injected: examples/go
#      -scenario outage, whose retries must end in exactly one PaymentIntent
#      per request_id.
# Needs Go, Node 20+ and npm; expects bin/billingd (make build). Every billingd
# started here is stopped by its PID and the temp dir removed, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

billingd=${BILLINGD:-bin/billingd}
if [[ ! -x $billingd ]]; then
	echo "run.sh: $billingd not found: run make build (or make examples-test)" >&2
	exit 1
fi
for tool in go node npm; do
	command -v "$tool" >/dev/null || { echo "run.sh: $tool not found" >&2; exit 1; }
done
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
	{ echo "run.sh: Node 20 or newer needed, found $(node --version)" >&2; exit 1; }

# A caller's environment must not reconfigure the servers or the clients.
for v in $(compgen -e); do
	case $v in BILLINGD_* | BILLING_AUTH_*) unset "$v" ;; esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/billingd-examples.XXXXXX")
pids=()

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local pid
	for pid in "${pids[@]}"; do
		stop "$pid"
	done
	if ((rc != 0)); then
		local log
		for log in "$work"/*.log; do
			[[ -e $log ]] || continue
			echo "== $log (last 30 lines)" >&2
			tail -n 30 "$log" >&2
		done
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop sends SIGTERM to one billingd and waits up to 15 s for it to drain,
# then kills it.
stop() {
	local pid=$1 i
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 150; i++)); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	echo "run.sh: billingd $pid still running 15s after SIGTERM: killing it" >&2
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

free_port() {
	node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# start NAME [serve flags...] starts billingd on a free loopback port with a
# fresh database and sets $addr once it reports SERVING (30 s at most).
start() {
	local name=$1 try port pid deadline
	shift
	for try in 1 2 3; do
		port=$(free_port)
		"$billingd" serve --stripe-sim --listen "127.0.0.1:$port" --db "$work/$name.db" \
			--log-format text --shutdown-grace 5s "$@" >"$work/$name.log" 2>&1 &
		pid=$!
		pids+=("$pid")
		deadline=$((SECONDS + 30))
		until "$billingd" healthcheck --addr "127.0.0.1:$port" --timeout 1s >/dev/null 2>&1; do
			if ! kill -0 "$pid" 2>/dev/null; then
				# Another process took the port between free_port and listen.
				grep -q 'address already in use' "$work/$name.log" && continue 2
				echo "run.sh: billingd ($name) exited before serving" >&2
				return 1
			fi
			if ((SECONDS >= deadline)); then
				echo "run.sh: billingd ($name) not SERVING within 30s" >&2
				return 1
			fi
			sleep 0.1
		done
		addr=127.0.0.1:$port
		echo "== billingd ($name) SERVING on $addr: $("$billingd" version)"
		return 0
	done
	echo "run.sh: no free port for billingd ($name)" >&2
	return 1
}

echo "== npm ci (examples/node)"
(cd examples/node && npm ci --ignore-scripts --no-audit --no-fund)

echo "== go build ./examples/go"
go build -o "$work/example-go" ./examples/go

# The first billingd authenticates one caller by bearer token, which both
# clients send (BILLINGD_TOKEN); the health probe needs none.
token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
BILLING_AUTH_TOKENS="examples:$token" start plain
echo "== examples/go against $addr"
BILLINGD_TOKEN=$token "$work/example-go" -addr "$addr"
echo "== examples/node against $addr"
BILLINGD_TOKEN=$token node examples/node/client.js --addr "$addr"

# Stripe fails most calls (503 before processing, or the answer lost after
# processing). billingd's own retries absorb most; the rest reach the client
# as UNAVAILABLE, which its retryPolicy resends with the same request_id. The
# seed fixes which calls fail, so the run is reproducible.
start outage --stripe-sim-faults unavailable=0.5,drop_after=0.1 --stripe-sim-seed 7
echo "== examples/go -scenario outage against $addr"
"$work/example-go" -addr "$addr" -scenario outage

echo "== examples: ok"
