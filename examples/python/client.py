#!/usr/bin/python3
"""A billingd client in Python: charges, replays, has a card declined, starts a
3-D Secure charge and reads google.rpc error details, the way a calling
service should. It exits 1 when billingd does not behave as documented, so CI
runs it as a test (make examples-test).

    make clients
    PYTHONPATH=clients/python python3 examples/python/client.py \\
        [--addr 127.0.0.1:50051] [--scenario basic|outage --sim http://127.0.0.1:12111]

It needs Debian's python3-grpcio and python3-protobuf and the stubs that
`make clients` writes to clients/python. With BILLINGD_TOKEN set it sends
"authorization: Bearer <token>" (plaintext only to a loopback address).

--scenario outage sends charges to a billingd whose Stripe simulator injects
faults (--stripe-sim-faults) and then asks the simulator (--sim, its
--stripe-sim-listen address) how many PaymentIntents each request made: one.
"""

import argparse
import ipaddress
import json
import os
import secrets
import sys
import time
import urllib.parse
import urllib.request

import grpc

from billing.v1 import billing_pb2, billing_pb2_grpc
from google.rpc import error_details_pb2, status_pb2

# The recommended client configuration (README, "Client configuration"), as
# in examples/go: the channel retries UNAVAILABLE itself, resending the same
# message and so the same request_id; nothing else is retried by gRPC.
SERVICE_CONFIG = {
    "methodConfig": [{
        "name": [{"service": "billing.v1.BillingService"}],
        "timeout": "15s",
        "retryPolicy": {
            "maxAttempts": 5,
            "initialBackoff": "0.2s",
            "maxBackoff": "3s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}

# The simulator's API key (README, "The simulator"); real Stripe keys never
# belong in a client of billingd.
SIM_KEY = "sk_test_billingd_simulator"


def details(err):
    """Returns the ErrorInfo and RetryInfo of a gRPC error, or None for each.

    grpcio sends the google.rpc.Status as the grpc-status-details-bin
    trailer; Debian does not package grpcio-status, so it is decoded here.
    """
    info, retry = None, None
    if not isinstance(err, grpc.Call):
        return info, retry
    for key, value in err.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        st = status_pb2.Status.FromString(value)
        for any_ in st.details:
            if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                any_.Unpack(info)
            elif any_.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                any_.Unpack(retry)
    return info, retry


def describe(err):
    """An error as a program should read it: the code and the ErrorInfo
    reason and metadata, not the message."""
    if not isinstance(err, grpc.Call):
        return repr(err)
    s = err.code().name
    info, retry = details(err)
    if info is not None:
        s += " " + info.reason
        for k in ("code", "decline_code", "param", "stripe_request_id"):
            if k in info.metadata:
                s += f" {k}={info.metadata[k]}"
    else:
        s += ": " + (err.details() or "")
    if retry is not None:
        s += f" retry_delay={retry.retry_delay.ToTimedelta().total_seconds()}s"
    return s


def retrying(call, *, tries=20, budget=60.0, first_timeout=None):
    """Calls call(timeout) until it has a definitive answer: at most `tries`
    calls within `budget` seconds. With first_timeout, the first call gives
    up after that many seconds: a caller that timed out, whose request may
    or may not have happened.

    The service config's retryPolicy has already retried UNAVAILABLE a few
    times within one call; this loop rides out longer outages. It waits as
    long as RetryInfo asks (else an exponential backoff) and sends the same
    request again. DEADLINE_EXCEEDED is retried the same way: the outcome is
    unknown, and only the same request_id can learn it without risking a
    second charge. Every other code is the answer.
    """
    deadline = time.monotonic() + budget
    backoff = 0.25
    for attempt in range(1, tries + 1):
        timeout = min(15.0, max(deadline - time.monotonic(), 0.1))
        if attempt == 1 and first_timeout is not None:
            timeout = first_timeout
        try:
            return call(timeout)
        except grpc.RpcError as err:
            if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            _, retry = details(err)
            wait = retry.retry_delay.ToTimedelta().total_seconds() if retry is not None else backoff
            backoff = min(2 * backoff, 5.0)
            if attempt == tries or time.monotonic() + wait >= deadline:
                raise
            print(f"  retrying in {wait:.3f}s after {describe(err)}")
            time.sleep(wait)
    raise AssertionError("unreachable")


def loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Client:
    def __init__(self, stub, token, prefix):
        self.stub = stub
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.prefix = prefix
        self.quiet = False
        self.failed = []

    def expect(self, ok, msg):
        """Records a failed expectation without stopping the run."""
        if not ok:
            self.failed.append(msg)
            print("  FAIL:", msg)

    def charge(self, req, first_timeout=None):
        """Sends req until it has a definitive answer (see retrying). Returns
        (response, initial metadata) or raises the final grpc.RpcError."""
        line = f"Charge {req.request_id:<30} {req.payment_method_id:<30}"
        try:
            resp, call = retrying(lambda t: self.stub.Charge.with_call(req, timeout=t, metadata=self.metadata),
                                  first_timeout=first_timeout)
        except grpc.RpcError as err:
            print(f"{line} → {describe(err)}")
            raise
        if not self.quiet:
            print(f"{line} → {resp.payment_intent_id} {resp.status} replayed={resp.replayed}")
        return resp, dict(call.initial_metadata() or ())

    def operation(self, request_id):
        return retrying(lambda t: self.stub.GetOperation(
            billing_pb2.GetOperationRequest(request_id=request_id), timeout=t, metadata=self.metadata))

    def basic(self):
        # A charge, then the same request again: one PaymentIntent, replayed.
        req = billing_pb2.ChargeRequest(
            request_id=f"{self.prefix}-order-1", amount=2000, currency="usd", payment_method_id="pm_card_visa")
        first, _ = self.charge(req)
        self.expect(first.payment_intent_id.startswith("pi_"), f"charge: payment_intent_id {first.payment_intent_id!r}, want pi_…")
        self.expect(first.status == "succeeded", f"charge: status {first.status!r}, want succeeded")
        self.expect(first.payment_status == billing_pb2.PAYMENT_STATUS_SUCCEEDED,
                    f"charge: payment_status {billing_pb2.PaymentStatus.Name(first.payment_status)}")
        self.expect(not first.replayed, "charge: replayed = true on the first call")
        self.expect(first.amount == 2000 and first.currency == "usd", f"charge: {first.amount} {first.currency}, want 2000 usd")

        again, header = self.charge(req)
        self.expect(again.payment_intent_id == first.payment_intent_id,
                    f"replay: payment_intent_id {again.payment_intent_id}, want {first.payment_intent_id}")
        self.expect(again.replayed, "replay: replayed = false, want true")
        self.expect(header.get("idempotent-replayed") == "true",
                    f"replay: header idempotent-replayed = {header.get('idempotent-replayed')!r}, want 'true'")

        op = self.operation(req.request_id)
        self.expect(op.state == billing_pb2.Operation.STATE_SUCCEEDED and op.stripe_object_id == first.payment_intent_id,
                    f"GetOperation: {billing_pb2.Operation.State.Name(op.state)} {op.stripe_object_id}, "
                    f"want STATE_SUCCEEDED {first.payment_intent_id}")

        # A declined card, twice: FAILED_PRECONDITION CARD_DECLINED with
        # Stripe's decline code, and the identical status the second time.
        decline = billing_pb2.ChargeRequest(
            request_id=f"{self.prefix}-order-2", amount=2000, currency="usd", payment_method_id="pm_card_chargeDeclined")
        seen = []
        for _ in range(2):
            try:
                self.charge(decline)
                self.expect(False, "decline: a charge with pm_card_chargeDeclined succeeded")
                return
            except grpc.RpcError as err:
                info, _ = details(err)
                self.expect(err.code() == grpc.StatusCode.FAILED_PRECONDITION,
                            f"decline: code {err.code().name}, want FAILED_PRECONDITION")
                self.expect(info is not None, "decline: no google.rpc.ErrorInfo in the status details")
                if info is None:
                    return
                self.expect(info.domain == "billingd" and info.reason == "CARD_DECLINED",
                            f"decline: ErrorInfo {info.domain}/{info.reason}, want billingd/CARD_DECLINED")
                self.expect(info.metadata.get("decline_code") == "generic_decline",
                            f"decline: decline_code {info.metadata.get('decline_code')!r}, want generic_decline")
                seen.append(dict(err.trailing_metadata()).get("grpc-status-details-bin"))
        self.expect(seen[0] == seen[1], "decline: the repeated request got other status details")
        op = self.operation(decline.request_id)
        self.expect(op.state == billing_pb2.Operation.STATE_FAILED,
                    f"GetOperation decline: {billing_pb2.Operation.State.Name(op.state)}, want STATE_FAILED")

        # A card that needs 3-D Secure, customer present: OK, requires_action,
        # and the client_secret for Stripe.js. The secret is not printed.
        tds = billing_pb2.ChargeRequest(
            request_id=f"{self.prefix}-order-3", amount=2500, currency="eur",
            payment_method_id="pm_card_threeDSecure2Required")
        resp, _ = self.charge(tds)
        self.expect(resp.status == "requires_action"
                    and resp.payment_status == billing_pb2.PAYMENT_STATUS_REQUIRES_ACTION,
                    f"3-D Secure: status {resp.status!r}, want requires_action")
        self.expect(resp.client_secret.startswith(resp.payment_intent_id + "_secret_"),
                    "3-D Secure: client_secret is not the PaymentIntent's secret")
        print(f"  client_secret {resp.client_secret[:len(resp.payment_intent_id) + 8]}… "
              f"next_action_type={resp.next_action_type}")
        op = self.operation(tds.request_id)
        self.expect(op.state == billing_pb2.Operation.STATE_REQUIRES_ACTION,
                    f"GetOperation 3-D Secure: {billing_pb2.Operation.State.Name(op.state)}, want STATE_REQUIRES_ACTION")

    def outage(self, n, sim):
        """Sends n charges, each tagged with this run's metadata, to a billingd
        whose Stripe fails often; each must succeed, and the simulator must
        hold exactly one PaymentIntent per request."""
        run = self.prefix
        self.quiet = True
        answers = {}  # n → payment_intent_id
        for i in range(n):
            req = billing_pb2.ChargeRequest(
                request_id=f"{run}-outage-{i}", amount=1000 + i, currency="eur", payment_method_id="pm_card_visa",
                metadata={"example_run": run, "n": str(i)})
            try:
                # Every fifth caller gives up after 5 ms, then sends the same request again.
                resp, _ = self.charge(req, first_timeout=0.005 if i % 5 == 0 else None)
            except grpc.RpcError as err:
                self.expect(False, f"charge {req.request_id}: {describe(err)}")
                continue
            self.expect(resp.status == "succeeded", f"charge {req.request_id}: status {resp.status}")
            answers[str(i)] = resp.payment_intent_id
        self.expect(len(set(answers.values())) == len(answers), "two requests got the same PaymentIntent")

        # billingd's records: each SUCCEEDED with the PaymentIntent answered.
        for i, pi in answers.items():
            op = self.operation(f"{run}-outage-{i}")
            self.expect(op.state == billing_pb2.Operation.STATE_SUCCEEDED and op.stripe_object_id == pi,
                        f"GetOperation {run}-outage-{i}: {billing_pb2.Operation.State.Name(op.state)} "
                        f"{op.stripe_object_id}, want STATE_SUCCEEDED {pi}")

        # The simulator's count, by this run's metadata.
        failed_before = len(self.failed)
        found = search_payment_intents(sim, run, want=n)
        counts = {}
        for pi in found:
            k = pi["metadata"].get("n")
            counts.setdefault(k, []).append(pi["id"])
        for i in range(n):
            ids = counts.pop(str(i), [])
            self.expect(len(ids) == 1, f"simulator: {len(ids)} PaymentIntents for n={i}: {ids}")
            if len(ids) == 1 and str(i) in answers:
                self.expect(ids[0] == answers[str(i)], f"simulator: n={i} is {ids[0]}, billingd answered {answers[str(i)]}")
        self.expect(not counts, f"simulator: PaymentIntents for no request: {counts}")
        if len(self.failed) == failed_before:
            print(f"outage: the simulator holds {len(found)} PaymentIntents for run {run}, one per request")


def search_payment_intents(sim, run, *, want, budget=30.0):
    """Every PaymentIntent whose metadata example_run is run, by Stripe's
    search API (all pages). Search may lag creation: it is repeated until it
    finds `want` objects or `budget` seconds pass."""
    deadline = time.monotonic() + budget
    while True:
        found, page = [], None
        for _ in range(100):  # pages of 100
            params = {"query": f"metadata['example_run']:'{run}'", "limit": "100"}
            if page:
                params["page"] = page
            req = urllib.request.Request(
                f"{sim}/v1/payment_intents/search?{urllib.parse.urlencode(params)}",
                headers={"Authorization": f"Bearer {SIM_KEY}"})
            with urllib.request.urlopen(req, timeout=10) as r:
                body = json.load(r)
            found.extend(body["data"])
            page = body.get("next_page")
            if not body.get("has_more") or not page:
                break
        if len(found) >= want or time.monotonic() >= deadline:
            return found
        time.sleep(1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--addr", default=os.environ.get("BILLINGD_ADDR", "127.0.0.1:50051"))
    p.add_argument("--scenario", choices=("basic", "outage"), default="basic")
    p.add_argument("--charges", type=int, default=20, help="outage: how many charges")
    p.add_argument("--sim", help="outage: the simulator's URL, http://127.0.0.1:PORT (loopback only)")
    args = p.parse_args()

    token = os.environ.get("BILLINGD_TOKEN", "")
    host = args.addr.rsplit(":", 1)[0]
    if not loopback(host):
        sys.exit(f"example: {args.addr} is not a loopback address: this example speaks plaintext")
    if args.scenario == "outage":
        u = urllib.parse.urlsplit(args.sim or "")
        if u.scheme != "http" or not loopback(u.hostname or ""):
            sys.exit("example: --scenario outage needs --sim http://<loopback>:PORT")

    options = [("grpc.service_config", json.dumps(SERVICE_CONFIG)), ("grpc.enable_retries", 1)]
    with grpc.insecure_channel(args.addr, options=options) as channel:
        c = Client(billing_pb2_grpc.BillingServiceStub(channel), token, "py-" + secrets.token_hex(5))
        try:
            if args.scenario == "basic":
                c.basic()
            else:
                c.outage(args.charges, args.sim.rstrip("/"))
        except grpc.RpcError as err:
            c.failed.append(f"unexpected error: {describe(err)}")
    if c.failed:
        print(f"example: {len(c.failed)} expectation(s) failed:\n  " + "\n  ".join(c.failed), file=sys.stderr)
        sys.exit(1)
    print(f"ok: python {args.scenario} against {args.addr}")


if __name__ == "__main__":
    main()
