// A billingd client in TypeScript on Node: generated stubs (protoc-gen-es),
// the gRPC protocol over @connectrpc/connect-node, typed google.rpc error
// details. It charges, replays, has a card declined, starts a 3-D Secure
// charge and sends bad input, the way a calling service should, and exits 1
// when billingd does not behave as documented, so CI runs it as a test
// (make examples-test).
//
//   make clients && cp -R clients/ts examples/ts/gen
//   cd examples/ts && npm ci --ignore-scripts && npx tsc -p .
//   node dist/client.js [--addr 127.0.0.1:50051] [--scenario basic|outage --sim http://127.0.0.1:12111]
//
// With BILLINGD_TOKEN set it sends "authorization: Bearer <token>" (plaintext,
// so only to a loopback address). --scenario outage sends charges to a
// billingd whose Stripe simulator injects faults (--stripe-sim-faults), then
// asks the simulator (--sim, its --stripe-sim-listen address) how many
// PaymentIntents each request made: one.

import { randomBytes } from "node:crypto";
import { isIP } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";

import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import {
  BillingService,
  Operation_State,
  PaymentStatus,
  type ChargeRequestSchema,
  type ChargeResponse,
  type Operation,
} from "./gen/billing/v1/billing_pb.js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema, type ErrorInfo } from "./gen/google/rpc/error_details_pb.js";

// The simulator's API key (README, "The simulator").
const simKey = "sk_test_billingd_simulator";

// Connect has no gRPC service config, so this client does by hand what the
// README's retryPolicy does (UNAVAILABLE, 0.2 s doubling to 3 s) and what it
// leaves to the caller: DEADLINE_EXCEEDED is an unknown outcome, resent with
// the same request_id. Each call has the service config's 15 s timeout.
const retryPolicy = { initialBackoffMs: 200, maxBackoffMs: 3000, callTimeoutMs: 15_000 };

const failed: string[] = [];
function expect(ok: boolean, msg: string): void {
  if (!ok) {
    failed.push(msg);
    console.log(`  FAIL: ${msg}`);
  }
}

// describe prints an error the way a program should read it: the code and
// the ErrorInfo reason and metadata, not the message.
function describe(err: unknown): string {
  const e = ConnectError.from(err);
  let s = Code[e.code];
  const [info] = e.findDetails(ErrorInfoSchema);
  if (info) {
    s += ` ${info.reason}`;
    for (const k of ["code", "decline_code", "param", "stripe_request_id"]) {
      if (k in info.metadata) s += ` ${k}=${info.metadata[k]}`;
    }
  } else {
    s += `: ${e.rawMessage}`;
  }
  const [retry] = e.findDetails(RetryInfoSchema);
  if (retry?.retryDelay) {
    s += ` retry_delay=${Number(retry.retryDelay.seconds) + retry.retryDelay.nanos / 1e9}s`;
  }
  return s;
}

// retrying calls f until it has a definitive answer: at most `tries` calls
// within `budgetMs`. It waits as long as RetryInfo asks, else an exponential
// backoff. Every code but UNAVAILABLE and DEADLINE_EXCEEDED is the answer.
// With firstTimeoutMs the first call gives up after that long: a caller that
// timed out, whose request may or may not have happened.
async function retrying<T>(
  f: (timeoutMs: number) => Promise<T>,
  { tries = 20, budgetMs = 60_000, firstTimeoutMs = 0 } = {},
): Promise<T> {
  const deadline = Date.now() + budgetMs;
  let backoff = retryPolicy.initialBackoffMs;
  for (let attempt = 1; ; attempt++) {
    let timeoutMs = Math.max(100, Math.min(retryPolicy.callTimeoutMs, deadline - Date.now()));
    if (attempt === 1 && firstTimeoutMs > 0) timeoutMs = firstTimeoutMs;
    try {
      return await f(timeoutMs);
    } catch (err) {
      const e = ConnectError.from(err);
      if (e.code !== Code.Unavailable && e.code !== Code.DeadlineExceeded) throw e;
      const [retry] = e.findDetails(RetryInfoSchema);
      const wait = retry?.retryDelay
        ? Number(retry.retryDelay.seconds) * 1000 + retry.retryDelay.nanos / 1e6
        : backoff * (0.8 + 0.4 * Math.random());
      backoff = Math.min(2 * backoff, retryPolicy.maxBackoffMs);
      if (attempt >= tries || Date.now() + wait >= deadline) throw e;
      console.log(`  retrying in ${Math.round(wait)}ms after ${describe(e)}`);
      await sleep(wait);
    }
  }
}

function isLoopback(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, "$1");
  if (h === "localhost") return true;
  if (isIP(h) === 4) return h.startsWith("127.");
  return h === "::1";
}

type Billing = Client<typeof BillingService>;
type ChargeInit = MessageInitShape<typeof ChargeRequestSchema>;

class Example {
  quiet = false;
  constructor(
    private readonly billing: Billing,
    readonly prefix: string,
  ) {}

  // charge sends req until it has a definitive answer (see retrying); it
  // resolves to the answer and its response headers, or rejects with the
  // final ConnectError.
  async charge(req: ChargeInit, firstTimeoutMs = 0): Promise<{ resp: ChargeResponse; header: Headers }> {
    const line = `Charge ${String(req.requestId).padEnd(30)} ${String(req.paymentMethodId).padEnd(30)} →`;
    let header = new Headers();
    try {
      const resp = await retrying((timeoutMs) =>
        this.billing.charge(req, { timeoutMs, onHeader: (h) => (header = h) }),
      { firstTimeoutMs });
      if (!this.quiet) console.log(`${line} ${resp.paymentIntentId} ${resp.status} replayed=${resp.replayed}`);
      return { resp, header };
    } catch (err) {
      console.log(`${line} ${describe(err)}`);
      throw err;
    }
  }

  operation(requestId: string): Promise<Operation> {
    return retrying((timeoutMs) => this.billing.getOperation({ requestId }, { timeoutMs }));
  }

  async basic(): Promise<void> {
    // A charge, then the same request again: one PaymentIntent, replayed.
    const req: ChargeInit = {
      requestId: `${this.prefix}-order-1`, amount: 2000n, currency: "usd", paymentMethodId: "pm_card_visa",
    };
    const { resp: first } = await this.charge(req);
    expect(first.paymentIntentId.startsWith("pi_"), `charge: payment_intent_id ${first.paymentIntentId}, want pi_…`);
    expect(first.status === "succeeded" && first.paymentStatus === PaymentStatus.SUCCEEDED,
      `charge: status ${first.status} ${PaymentStatus[first.paymentStatus]}, want succeeded`);
    expect(!first.replayed, "charge: replayed = true on the first call");
    expect(first.amount === 2000n && first.currency === "usd", `charge: ${first.amount} ${first.currency}, want 2000 usd`);

    const again = await this.charge(req);
    expect(again.resp.paymentIntentId === first.paymentIntentId,
      `replay: payment_intent_id ${again.resp.paymentIntentId}, want ${first.paymentIntentId}`);
    expect(again.resp.replayed, "replay: replayed = false, want true");
    expect(again.header.get("idempotent-replayed") === "true",
      `replay: header idempotent-replayed = ${again.header.get("idempotent-replayed")}, want true`);

    const op = await this.operation(String(req.requestId));
    expect(op.state === Operation_State.SUCCEEDED && op.stripeObjectId === first.paymentIntentId,
      `GetOperation: ${Operation_State[op.state]} ${op.stripeObjectId}, want SUCCEEDED ${first.paymentIntentId}`);

    // A declined card, twice: FAILED_PRECONDITION CARD_DECLINED with
    // Stripe's decline code, and the identical status the second time.
    const decline: ChargeInit = {
      requestId: `${this.prefix}-order-2`, amount: 2000n, currency: "usd", paymentMethodId: "pm_card_chargeDeclined",
    };
    const seen: string[] = [];
    for (let i = 0; i < 2; i++) {
      let e: ConnectError;
      try {
        await this.charge(decline);
        expect(false, "decline: a charge with pm_card_chargeDeclined succeeded");
        return;
      } catch (err) {
        e = ConnectError.from(err);
      }
      const [info]: ErrorInfo[] = e.findDetails(ErrorInfoSchema);
      expect(e.code === Code.FailedPrecondition, `decline: code ${Code[e.code]}, want FailedPrecondition`);
      expect(info !== undefined, "decline: no google.rpc.ErrorInfo in the status details");
      if (!info) return;
      expect(info.domain === "billingd" && info.reason === "CARD_DECLINED",
        `decline: ErrorInfo ${info.domain}/${info.reason}, want billingd/CARD_DECLINED`);
      expect(info.metadata["decline_code"] === "generic_decline",
        `decline: decline_code ${info.metadata["decline_code"]}, want generic_decline`);
      const raw = e.details.map((d) => ("type" in d ? `${d.type}:${Buffer.from(d.value).toString("base64")}` : d.desc.typeName));
      seen.push(JSON.stringify([e.code, e.rawMessage, raw]));
    }
    expect(seen[0] === seen[1], "decline: the repeated request got another status");
    const dop = await this.operation(String(decline.requestId));
    expect(dop.state === Operation_State.FAILED, `GetOperation decline: ${Operation_State[dop.state]}, want FAILED`);

    // A card that needs 3-D Secure, customer present: OK, requires_action,
    // and the client_secret for Stripe.js. The secret is not printed.
    const tds: ChargeInit = {
      requestId: `${this.prefix}-order-3`, amount: 2500n, currency: "eur", paymentMethodId: "pm_card_threeDSecure2Required",
    };
    const { resp } = await this.charge(tds);
    expect(resp.status === "requires_action" && resp.paymentStatus === PaymentStatus.REQUIRES_ACTION,
      `3-D Secure: status ${resp.status}, want requires_action`);
    expect(resp.clientSecret.startsWith(`${resp.paymentIntentId}_secret_`),
      "3-D Secure: client_secret is not the PaymentIntent's secret");
    console.log(`  client_secret ${resp.clientSecret.slice(0, resp.paymentIntentId.length + 8)}… next_action_type=${resp.nextActionType}`);
    const top = await this.operation(String(tds.requestId));
    expect(top.state === Operation_State.REQUIRES_ACTION,
      `GetOperation 3-D Secure: ${Operation_State[top.state]}, want REQUIRES_ACTION`);

    // Bad input: INVALID_ARGUMENT with a BadRequest field violation.
    try {
      await this.charge({ requestId: `${this.prefix}-order-4`, amount: 0n, currency: "usd", paymentMethodId: "pm_card_visa" });
      expect(false, "invalid: a charge of amount 0 succeeded");
    } catch (err) {
      const e = ConnectError.from(err);
      const [br] = e.findDetails(BadRequestSchema);
      expect(e.code === Code.InvalidArgument, `invalid: code ${Code[e.code]}, want InvalidArgument`);
      expect(br?.fieldViolations.some((v) => v.field === "amount") ?? false,
        `invalid: BadRequest ${JSON.stringify(br?.fieldViolations)}, want a violation of field amount`);
    }
  }

  // outage sends n charges, each tagged with this run's metadata, to a
  // billingd whose Stripe fails often; each must succeed, and the simulator
  // must hold exactly one PaymentIntent per request.
  async outage(n: number, sim: string): Promise<void> {
    const run = this.prefix;
    this.quiet = true;
    const answers = new Map<string, string>(); // n → payment_intent_id
    for (let i = 0; i < n; i++) {
      const req: ChargeInit = {
        requestId: `${run}-outage-${i}`, amount: BigInt(1000 + i), currency: "eur", paymentMethodId: "pm_card_visa",
        metadata: { example_run: run, n: String(i) },
      };
      try {
        // Every fifth caller gives up after 5 ms, then sends the same request again.
        const { resp } = await this.charge(req, i % 5 === 0 ? 5 : 0);
        expect(resp.status === "succeeded", `charge ${req.requestId}: status ${resp.status}`);
        answers.set(String(i), resp.paymentIntentId);
      } catch (err) {
        expect(false, `charge ${req.requestId}: ${describe(err)}`);
      }
    }
    expect(new Set(answers.values()).size === answers.size, "two requests got the same PaymentIntent");

    for (const [i, pi] of answers) {
      const op = await this.operation(`${run}-outage-${i}`);
      expect(op.state === Operation_State.SUCCEEDED && op.stripeObjectId === pi,
        `GetOperation ${run}-outage-${i}: ${Operation_State[op.state]} ${op.stripeObjectId}, want SUCCEEDED ${pi}`);
    }

    const failedBefore = failed.length;
    const found = await searchPaymentIntents(sim, run, n);
    const counts = new Map<string, string[]>();
    for (const pi of found) {
      const k = pi.metadata["n"] ?? "";
      counts.set(k, [...(counts.get(k) ?? []), pi.id]);
    }
    for (let i = 0; i < n; i++) {
      const ids = counts.get(String(i)) ?? [];
      counts.delete(String(i));
      expect(ids.length === 1, `simulator: ${ids.length} PaymentIntents for n=${i}: ${ids.join(" ")}`);
      const want = answers.get(String(i));
      if (ids.length === 1 && want) expect(ids[0] === want, `simulator: n=${i} is ${ids[0]}, billingd answered ${want}`);
    }
    expect(counts.size === 0, `simulator: PaymentIntents for no request: ${JSON.stringify([...counts])}`);
    if (failed.length === failedBefore) {
      console.log(`outage: the simulator holds ${found.length} PaymentIntents for run ${run}, one per request`);
    }
  }
}

interface SimPaymentIntent {
  id: string;
  metadata: Record<string, string>;
}

// searchPaymentIntents returns every PaymentIntent whose metadata
// example_run is run, by Stripe's search API (all pages). Search may lag
// creation: it is repeated until it finds `want` objects or 30 s pass.
async function searchPaymentIntents(sim: string, run: string, want: number): Promise<SimPaymentIntent[]> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const found: SimPaymentIntent[] = [];
    let page: string | null = null;
    for (let pages = 0; pages < 100; pages++) {
      const q = new URLSearchParams({ query: `metadata['example_run']:'${run}'`, limit: "100" });
      if (page) q.set("page", page);
      const r = await fetch(`${sim}/v1/payment_intents/search?${q}`, {
        headers: { Authorization: `Bearer ${simKey}` },
        signal: AbortSignal.timeout(10_000),
      });
      if (!r.ok) throw new Error(`simulator search: HTTP ${r.status}: ${await r.text()}`);
      const body = (await r.json()) as { data: SimPaymentIntent[]; has_more: boolean; next_page: string | null };
      found.push(...body.data);
      page = body.next_page;
      if (!body.has_more || !page) break;
    }
    if (found.length >= want || Date.now() >= deadline) return found;
    await sleep(1000);
  }
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      addr: { type: "string", default: process.env["BILLINGD_ADDR"] ?? "127.0.0.1:50051" },
      scenario: { type: "string", default: "basic" },
      charges: { type: "string", default: "20" },
      sim: { type: "string" },
    },
  });
  const addr = args.addr;
  const host = addr.replace(/:\d+$/, "");
  if (!isLoopback(host)) throw new Error(`${addr} is not a loopback address: this example speaks plaintext`);
  let sim = "";
  if (args.scenario === "outage") {
    const u = URL.canParse(args.sim ?? "") ? new URL(args.sim ?? "") : undefined;
    if (!u || u.protocol !== "http:" || !isLoopback(u.hostname)) {
      throw new Error("--scenario outage needs --sim http://<loopback>:PORT");
    }
    sim = u.origin;
  } else if (args.scenario !== "basic") {
    throw new Error(`unknown --scenario ${args.scenario}`);
  }

  const token = process.env["BILLINGD_TOKEN"] ?? "";
  const bearer: Interceptor = (next) => async (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  // The gRPC protocol over HTTP/2, as grpc-go serves it.
  const transport = createGrpcTransport({ baseUrl: `http://${addr}`, interceptors: [bearer] });
  const ex = new Example(createClient(BillingService, transport), `ts-${randomBytes(5).toString("hex")}`);
  try {
    if (args.scenario === "basic") await ex.basic();
    else await ex.outage(Number(args.charges), sim);
  } catch (err) {
    failed.push(err instanceof ConnectError ? `unexpected error: ${describe(err)}` : String((err as Error).stack ?? err));
  }
  if (failed.length > 0) {
    console.error(`example: ${failed.length} expectation(s) failed:\n  ${failed.join("\n  ")}`);
    process.exitCode = 1;
    return;
  }
  console.log(`ok: ts ${args.scenario} against ${addr}`);
}

main().catch((err: unknown) => {
  console.error(`example: ${(err as Error).message ?? err}`);
  process.exitCode = 1;
});
