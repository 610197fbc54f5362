#!/usr/bin/env bash
# Runs the example clients against real billingd processes (make examples-test):
#   1. billingd serve --stripe-sim with a caller token: examples/go, examples/python
#      and examples/ts (charge, replay, decline with its google.rpc.ErrorInfo,
#      3-D Secure), all sending the token;
#   2. billingd serve --stripe-sim, open (loopback), with some Stripe faults
#      injected, and 3. with most Stripe calls failing: each client's outage
#      scenario sends 20 charges, retries with the same request_id, and counts
#      at the simulator (Stripe's search API) exactly one PaymentIntent per
#      request; billingd's metrics must show that it retried at Stripe.
# Needs Go, Node 20+, npm and Debian's python3-grpcio and python3-protobuf;
# expects bin/billingd (make build) and the stubs in clients/ with
# examples/ts/node_modules (make clients). Every billingd started here is
# stopped by its PID and the temp dir removed, also on failure.
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
# Debian's python3, whose dist-packages hold python3-grpcio and python3-protobuf.
python=${PYTHON:-/usr/bin/python3}
"$python" -c 'import grpc, google.protobuf' 2>/dev/null || {
	echo "run.sh: $python cannot import grpc and google.protobuf: apt-get install python3-grpcio python3-protobuf" >&2
	exit 1
}
if [[ ! -d clients/python || ! -d clients/ts || ! -x examples/ts/node_modules/.bin/tsc ]]; then
	echo "run.sh: clients/ or examples/ts/node_modules missing: run make clients (or make examples-test)" >&2
	exit 1
fi
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
# fresh database, its simulator and its metrics on free loopback ports too,
# and sets $addr, $sim (the simulator's URL) and $metrics (the metrics URL)
# once it reports SERVING (30 s at most).
start() {
	local name=$1 try port simport metricsport pid deadline
	shift
	for try in 1 2 3; do
		port=$(free_port)
		simport=$(free_port)
		metricsport=$(free_port)
		"$billingd" serve --stripe-sim --listen "127.0.0.1:$port" --db "$work/$name.db" \
			--stripe-sim-listen "127.0.0.1:$simport" --metrics-listen "127.0.0.1:$metricsport" \
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
		sim=http://127.0.0.1:$simport
		metrics=http://127.0.0.1:$metricsport/metrics
		echo "== billingd ($name) SERVING on $addr: $("$billingd" version)"
		return 0
	done
	echo "run.sh: no free port for billingd ($name)" >&2
	return 1
}

# stripe_retries prints how many Stripe calls billingd retried (its metrics).
stripe_retries() {
	node -e '
		fetch(process.argv[1], { signal: AbortSignal.timeout(5000) })
			.then((r) => r.text())
			.then((t) => console.log(t.split("\n")
				.filter((l) => l.startsWith("billingd_stripe_retries_total"))
				.reduce((n, l) => n + Number(l.split(" ").pop()), 0)));' "$1"
}

# The clients, each in its own directory; the stubs come from clients/ as a
# caller would vendor them (make clients).
echo "== go build ./examples/go"
go build -o "$work/example-go" ./examples/go
echo "== tsc examples/ts (stubs from clients/ts)"
rm -rf examples/ts/gen examples/ts/dist
cp -R clients/ts examples/ts/gen
(cd examples/ts && node_modules/.bin/tsc -p .)
export PYTHONPATH=$PWD/clients/python PYTHONDONTWRITEBYTECODE=1

run_clients() { # scenario [the simulator's URL, to count PaymentIntents there]
	local scenario=$1 go_sim=() sim=()
	if (($# > 1)); then go_sim=(-sim "$2") sim=(--sim "$2"); fi
	echo "== examples/go -scenario $scenario against $addr"
	"$work/example-go" -addr "$addr" -scenario "$scenario" "${go_sim[@]}"
	echo "== examples/python --scenario $scenario against $addr"
	"$python" examples/python/client.py --addr "$addr" --scenario "$scenario" "${sim[@]}"
	echo "== examples/ts --scenario $scenario against $addr"
	node examples/ts/dist/client.js --addr "$addr" --scenario "$scenario" "${sim[@]}"
}

# The first billingd authenticates one caller by bearer token, which every
# client sends (BILLINGD_TOKEN); the health probe needs none.
token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
BILLING_AUTH_TOKENS="examples:$token" start plain
export BILLINGD_TOKEN=$token
run_clients basic
unset BILLINGD_TOKEN

# Some Stripe calls fail (503, rate limits, 500s after processing, answers
# lost after processing). billingd's own retries absorb most; the rest reach
# the clients as UNAVAILABLE (with RetryInfo), which they resend with the same
# request_id. The seed fixes which calls fail, so runs are comparable.
start faults --stripe-sim-faults unavailable=0.1,drop_after=0.05,server_error=0.05,rate_limit=0.05 --stripe-sim-seed 7
run_clients outage "$sim"
retries=$(stripe_retries "$metrics")
echo "== billingd (faults) retried $retries Stripe calls"
((retries > 0)) || { echo "run.sh: billingd retried no Stripe call: were faults injected?" >&2; exit 1; }

# Most Stripe calls fail: more reach the clients, and their retries too.
start outage --stripe-sim-faults unavailable=0.5,drop_after=0.1 --stripe-sim-seed 7
run_clients outage "$sim"
retries=$(stripe_retries "$metrics")
echo "== billingd (outage) retried $retries Stripe calls"
((retries > 0)) || { echo "run.sh: billingd retried no Stripe call: were faults injected?" >&2; exit 1; }

echo "== examples: ok"
