#!/usr/bin/env node
// A billingd client in Node (@grpc/grpc-js + @grpc/proto-loader): it charges,
// replays, triggers a decline and decodes google.rpc.ErrorInfo from the
// grpc-status-details-bin trailer. It exits 1 when billingd does not behave
// as documented, so CI runs it as a test (make examples-test).
//
//   npm ci --ignore-scripts && node client.js [--addr 127.0.0.1:50051] [--tls] [--ca ca.pem]
//
// With BILLINGD_TOKEN set it sends "authorization: Bearer <token>".
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { parseArgs } = require('node:util');

const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

// The repository root: billing.proto and the vendored protos it imports.
const root = path.resolve(__dirname, '..', '..');
const includeDirs = [
  path.join(root, 'proto'), // billing/v1/billing.proto
  path.join(root, 'third_party', 'proto'), // buf/validate, google/rpc/status.proto
  path.join(__dirname, 'proto'), // google/rpc/error_details.proto
];

// The recommended client configuration (README, "Client configuration"), the
// same as examples/go: the channel retries UNAVAILABLE itself, resending the
// same message and so the same request_id; nothing else is retried.
const serviceConfig = {
  methodConfig: [{
    name: [{ service: 'billing.v1.BillingService' }],
    timeout: '15s',
    retryPolicy: {
      maxAttempts: 5,
      initialBackoff: '0.2s',
      maxBackoff: '3s',
      backoffMultiplier: 2,
      retryableStatusCodes: ['UNAVAILABLE'],
    },
  }],
  retryThrottling: { maxTokens: 10, tokenRatio: 0.1 },
};

// billing.proto imports buf/validate/validate.proto for its field rules:
// protobufjs must parse it (and the descriptor.proto extensions it declares)
// even though a client never evaluates the rules. keepCase false turns
// request_id into requestId; longs and enums come back as strings.
const packageDefinition = protoLoader.loadSync('billing/v1/billing.proto', {
  includeDirs,
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const billingv1 = grpc.loadPackageDefinition(packageDefinition).billing.v1;

// google.rpc.Status and the detail messages, for the status details trailer.
const rpc = new protobuf.Root();
rpc.resolvePath = (_origin, target) => {
  for (const dir of includeDirs) {
    const candidate = path.join(dir, target);
    if (fs.existsSync(candidate)) return candidate;
  }
  return target; // google/protobuf/*.proto: protobufjs bundles them
};
rpc.loadSync(['google/rpc/status.proto', 'google/rpc/error_details.proto']);
const Status = rpc.lookupType('google.rpc.Status');

// decodeDetails returns the detail messages of a gRPC error, keyed by type
// name (ErrorInfo, RetryInfo, BadRequest, ...), from grpc-status-details-bin.
function decodeDetails(err) {
  const out = {};
  const bin = err.metadata && err.metadata.get('grpc-status-details-bin');
  if (!bin || bin.length === 0) return out;
  const st = Status.decode(bin[0]);
  for (const any of st.details) {
    // protobufjs's bundled google.protobuf.Any keeps the proto field name.
    const typeUrl = any.type_url ?? any.typeUrl ?? '';
    const typeName = typeUrl.slice(typeUrl.lastIndexOf('/') + 1);
    let type;
    try {
      type = rpc.lookupType(typeName);
    } catch {
      continue; // a detail type this client does not know
    }
    out[typeName.replace(/^google\.rpc\./, '')] =
      type.toObject(type.decode(any.value), { longs: Number, defaults: true });
  }
  return out;
}

// describe prints an error the way a program should read it: the code and
// the ErrorInfo reason and metadata, not the message.
function describe(err) {
  const codeName = Object.keys(grpc.status).find((k) => grpc.status[k] === err.code) || String(err.code);
  const d = decodeDetails(err);
  let s = codeName;
  if (d.ErrorInfo) {
    s += ` ${d.ErrorInfo.reason}`;
    for (const k of ['code', 'decline_code', 'param', 'stripe_request_id']) {
      if (k in d.ErrorInfo.metadata) s += ` ${k}=${d.ErrorInfo.metadata[k]}`;
    }
  } else {
    s += `: ${err.details}`;
  }
  if (d.RetryInfo && d.RetryInfo.retryDelay) {
    const r = d.RetryInfo.retryDelay;
    s += ` retry_delay=${r.seconds + r.nanos / 1e9}s`;
  }
  return s;
}

function isLoopback(addr) {
  const host = addr.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  return host === '::1';
}

function main() {
  const { values: args } = parseArgs({
    options: {
      addr: { type: 'string', default: process.env.BILLINGD_ADDR || '127.0.0.1:50051' },
      tls: { type: 'boolean', default: false },
      ca: { type: 'string' },
    },
  });
  const token = process.env.BILLINGD_TOKEN || '';
  const secure = args.tls || Boolean(args.ca);
  if (token && !secure && !isLoopback(args.addr)) {
    throw new Error(`refusing to send BILLINGD_TOKEN in plaintext to ${args.addr}: use --tls`);
  }
  const creds = secure
    ? grpc.credentials.createSsl(args.ca ? fs.readFileSync(args.ca) : null)
    : grpc.credentials.createInsecure();
  const client = new billingv1.BillingService(args.addr, creds, {
    'grpc.service_config': JSON.stringify(serviceConfig),
  });

  // call sends one unary RPC and resolves to {response, header}; it rejects
  // with the grpc-js error, whose metadata holds the trailers.
  function call(method, request) {
    const md = new grpc.Metadata();
    if (token) md.set('authorization', `Bearer ${token}`);
    return new Promise((resolve, reject) => {
      let header = new grpc.Metadata();
      const c = client[method](request, md, { deadline: Date.now() + 30_000 }, (err, response) => {
        if (err) reject(err);
        else resolve({ response, header });
      });
      c.on('metadata', (m) => { header = m; });
    });
  }

  const failed = [];
  const expect = (ok, msg) => {
    if (!ok) {
      failed.push(msg);
      console.log(`  FAIL: ${msg}`);
    }
  };
  const prefix = `node-${crypto.randomBytes(5).toString('hex')}`;

  async function charge(req) {
    const line = `Charge ${req.requestId.padEnd(28)} ${req.paymentMethodId.padEnd(22)} →`;
    try {
      const r = await call('Charge', req);
      const p = r.response;
      console.log(`${line} ${p.paymentIntentId} ${p.status} replayed=${p.replayed}`);
      return r;
    } catch (err) {
      console.log(`${line} ${describe(err)}`);
      throw err;
    }
  }

  async function run() {
    // A charge, then the same request again: one PaymentIntent, replayed.
    const req = {
      requestId: `${prefix}-order-1`, amount: 2000, currency: 'usd', paymentMethodId: 'pm_card_visa',
    };
    const first = (await charge(req)).response;
    expect(first.paymentIntentId.startsWith('pi_'), `charge: payment_intent_id ${first.paymentIntentId}, want pi_…`);
    expect(first.status === 'succeeded', `charge: status ${first.status}, want succeeded`);
    expect(first.replayed === false, 'charge: replayed = true on the first call');
    expect(first.amount === '2000', `charge: amount ${first.amount}, want 2000`);

    const again = await charge(req);
    expect(again.response.paymentIntentId === first.paymentIntentId,
      `replay: payment_intent_id ${again.response.paymentIntentId}, want ${first.paymentIntentId}`);
    expect(again.response.replayed === true, 'replay: replayed = false, want true');
    expect(String(again.header.get('idempotent-replayed')) === 'true',
      `replay: header idempotent-replayed = ${JSON.stringify(again.header.get('idempotent-replayed'))}, want true`);

    const op = (await call('GetOperation', { requestId: req.requestId })).response;
    expect(op.state === 'STATE_SUCCEEDED' && op.stripeObjectId === first.paymentIntentId,
      `GetOperation: ${op.state} ${op.stripeObjectId}, want STATE_SUCCEEDED ${first.paymentIntentId}`);

    // A declined card, twice: FAILED_PRECONDITION, CARD_DECLINED with the
    // decline code, and the identical status the second time.
    const decline = {
      requestId: `${prefix}-order-2`, amount: 2000, currency: 'usd', paymentMethodId: 'pm_card_chargeDeclined',
    };
    const seen = [];
    for (let i = 0; i < 2; i++) {
      let err;
      try {
        await charge(decline);
      } catch (e) {
        err = e;
      }
      if (!err) {
        expect(false, 'decline: charge with pm_card_chargeDeclined succeeded');
        return;
      }
      const info = decodeDetails(err).ErrorInfo;
      expect(err.code === grpc.status.FAILED_PRECONDITION, `decline: code ${err.code}, want FAILED_PRECONDITION (9)`);
      expect(info !== undefined, 'decline: no google.rpc.ErrorInfo in grpc-status-details-bin');
      if (!info) return;
      expect(info.domain === 'billingd' && info.reason === 'CARD_DECLINED',
        `decline: ErrorInfo ${info.domain}/${info.reason}, want billingd/CARD_DECLINED`);
      expect(Boolean(info.metadata.decline_code),
        `decline: no decline_code in ErrorInfo metadata ${JSON.stringify(info.metadata)}`);
      console.log(`  ErrorInfo reason=${info.reason} decline_code=${info.metadata.decline_code}`);
      seen.push(err.metadata.get('grpc-status-details-bin')[0].toString('base64'));
    }
    expect(seen[0] === seen[1], 'decline: the repeated request got different status details');

    // Bad input: INVALID_ARGUMENT with BadRequest field violations, nothing recorded.
    try {
      await call('Charge', { requestId: `${prefix}-order-3`, amount: 0, currency: 'usd', paymentMethodId: 'pm_card_visa' });
      expect(false, 'invalid: a charge of amount 0 succeeded');
    } catch (err) {
      const br = decodeDetails(err).BadRequest;
      console.log(`Charge ${`${prefix}-order-3`.padEnd(28)} ${'amount=0'.padEnd(22)} → ${describe(err)}`);
      expect(err.code === grpc.status.INVALID_ARGUMENT, `invalid: code ${err.code}, want INVALID_ARGUMENT (3)`);
      expect(br !== undefined && br.fieldViolations.some((v) => v.field === 'amount'),
        `invalid: BadRequest ${JSON.stringify(br)}, want a violation of field amount`);
    }
  }

  return run()
    .catch((err) => {
      failed.push(err.code !== undefined ? `unexpected error: ${describe(err)}` : String(err.stack || err));
    })
    .finally(() => client.close())
    .then(() => {
      if (failed.length > 0) {
        console.error(`example: ${failed.length} expectation(s) failed:\n  ${failed.join('\n  ')}`);
        process.exitCode = 1;
      } else {
        console.log(`ok: node client against ${args.addr}`);
      }
    });
}

try {
  main();
} catch (err) {
  console.error(`example: ${err.message}`);
  process.exitCode = 1;
}
