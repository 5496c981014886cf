import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import type { LedgerEntry, ReservationResult, SpendReservation } from '../../src/store/types.js';
import { type Gateway, KEY_IN_BODY, KEY_IN_URL, chat, deferred, post, startGateway } from './harness.js';

let gateway: Gateway;
afterEach(async () => {
  await gateway?.close();
});

/** 12 prompt tokens at $1000/M + 100 output tokens at $2000/M: what a `max_tokens: 100` request reserves. */
const EXACT = { estimatePromptTokens: () => 12 };
const RESERVED = 0.212;

async function expectNothingHeldOrCharged(): Promise<void> {
  expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0, reserved: 0 });
  expect(await gateway.store.getAccount(gateway.account.id)).toMatchObject({ balance: 10, reserved: 0 });
}

async function expectCharged(cost: number): Promise<void> {
  expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: cost, reserved: 0 });
  expect(await gateway.store.getAccount(gateway.account.id)).toMatchObject({ balance: Number((10 - cost).toFixed(10)), reserved: 0 });
}

/** A host bug (an estimate or price that cannot be reserved) is a 500, not a store outage clients would wait out. */
const INTERNAL = {
  error: {
    message: 'The server could not handle this request. Please retry; if it persists, contact the operator.',
    type: 'api_error',
    code: 'internal_error',
  },
};

/** Opens a streamed completion and reads it until `until` appears; returns what was read and the abort switch. */
async function readStreamUntil(body: unknown, until: string): Promise<{ received: string; abort: () => void; status: number }> {
  const controller = new AbortController();
  const res = await fetch(`${gateway.url}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: controller.signal,
  });
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let received = '';
  while (!received.includes(until)) {
    const { value, done } = await reader.read();
    if (done) break;
    received += decoder.decode(value, { stream: true });
  }
  return { received, abort: () => controller.abort(), status: res.status };
}

describe('proxyRouter output caps and reservation amounts', () => {
  const FREE_OUTPUT = { 'mock-model': { inputPerMillion: 1000, outputPerMillion: 0 } };

  it('refuses max_tokens 1e300 with n 1e300 (400) instead of reserving NaN at an output price of 0', async () => {
    gateway = await startGateway({ proxy: { pricing: FREE_OUTPUT } });
    const res = await post(gateway, '/chat/completions', chat({ max_tokens: 1e300, n: 1e300 }));
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(JSON.parse(res.text)).toEqual({
      error: {
        message: 'max_tokens must be an integer from 1 to 1000000',
        type: 'invalid_request_error',
        code: 'invalid_request',
        param: 'max_tokens',
      },
    });
    expect(gateway.upstream.requests).toEqual([]);
    await expectNothingHeldOrCharged();
  });

  const invalid: [Record<string, unknown>, string, string][] = [
    [{ max_tokens: 1_000_001 }, 'max_tokens', 'max_tokens must be an integer from 1 to 1000000'],
    [{ max_tokens: '100' }, 'max_tokens', 'max_tokens must be an integer from 1 to 1000000'],
    [{ max_completion_tokens: -1 }, 'max_completion_tokens', 'max_completion_tokens must be an integer from 1 to 1000000'],
    [{ max_output_tokens: 1.5 }, 'max_output_tokens', 'max_output_tokens must be an integer from 1 to 1000000'],
    [{ max_tokens: 0 }, 'max_tokens', 'max_tokens must be an integer from 1 to 1000000'],
    [{ n: 1e300 }, 'n', 'n must be an integer from 1 to 128'],
    [{ n: 0 }, 'n', 'n must be an integer from 1 to 128'],
    [{ n: true }, 'n', 'n must be an integer from 1 to 128'],
  ];
  for (const [fields, param, message] of invalid) {
    it(`answers 400 invalid_request with param ${param} for ${JSON.stringify(fields)}`, async () => {
      gateway = await startGateway({ proxy: { pricing: FREE_OUTPUT } });
      const res = await post(gateway, '/chat/completions', chat(fields));
      expect(res.status).toBe(400);
      expect(JSON.parse(res.text)).toEqual({ error: { message, type: 'invalid_request_error', code: 'invalid_request', param } });
      expect(gateway.upstream.requests).toEqual([]);
      await expectNothingHeldOrCharged();
    });
  }

  it('accepts null caps (the provider default) and reserves the default output tokens', async () => {
    gateway = await startGateway({ proxy: EXACT });
    await gateway.store.updateKey(gateway.proxyKeyId, { limit: 0.1, limitReset: null });
    // defaultMaxTokens is 100 in the harness: 0.012 + 0.2 > 0.1, so the default was reserved.
    const res = await post(gateway, '/chat/completions', chat({ max_tokens: null, n: null }));
    expect(res.status).toBe(403);
    expect(JSON.parse(res.text)).toEqual({
      error: {
        message:
          "This request could cost up to $0.212, more than the $0.1 left of this key's spend limit of $0.1. Lower max_tokens or raise the key's limit.",
        type: 'permission_error',
        code: 'spend_limit_reached',
      },
    });
    expect(gateway.upstream.requests).toEqual([]);
  });

  for (const [label, estimate] of [
    ['NaN', () => Number.NaN],
    ['undefined', () => undefined as unknown as number],
    ['Infinity', () => Number.POSITIVE_INFINITY],
    ['a negative number', () => -5],
  ] as const) {
    it(`answers 500 without calling the upstream when estimatePromptTokens returns ${label}, and logs the host bug`, async () => {
      gateway = await startGateway({ proxy: { pricing: FREE_OUTPUT, estimatePromptTokens: estimate } });
      const res = await post(gateway, '/chat/completions', chat());
      expect(res.status).toBe(500);
      expect(res.headers.get('content-type')).toBe('application/json');
      expect(JSON.parse(res.text)).toEqual(INTERNAL);
      expect(gateway.upstream.requests).toEqual([]);
      await expectNothingHeldOrCharged();
      expect(gateway.logger.lines).toEqual([
        `error: modelswitch-keys: options.estimatePromptTokens returned ${String(estimate())} for model mock-model; it must return a finite number ≥ 0 (request refused)`,
      ]);
    });
  }

  it('answers 500 without calling the upstream when the reservation amount is not finite (absurd price)', async () => {
    gateway = await startGateway({ proxy: { pricing: () => ({ inputPerMillion: 1e308, outputPerMillion: 1e308 }) } });
    const res = await post(gateway, '/chat/completions', chat());
    expect(res.status).toBe(500);
    expect(JSON.parse(res.text)).toEqual(INTERNAL);
    expect(gateway.upstream.requests).toEqual([]);
    await expectNothingHeldOrCharged();
    expect(gateway.logger.lines).toEqual([
      'error: modelswitch-keys: the reservation for model mock-model came to Infinity USD; check its price (request refused)',
    ]);
  });

  it('charges the reservation, not Infinity, when the upstream reports absurd usage', async () => {
    gateway = await startGateway({ proxy: EXACT });
    gateway.upstream.behaviour = { usage: { prompt_tokens: 1e308, completion_tokens: 0 } };
    const res = await post(gateway, '/chat/completions', chat({ max_tokens: 100 }));
    expect(res.status).toBe(200);
    await expectCharged(RESERVED);
    expect(gateway.logger.lines).toEqual([
      'warn: modelswitch-keys: upstream mock reported usage for model mock-model that prices to Infinity USD; charged the reserved maximum',
    ]);
  });
});

describe('proxyRouter aborted answers', () => {
  it('charges the reservation when the client reads up to finish_reason and disconnects before the usage chunk', async () => {
    gateway = await startGateway({ proxy: EXACT });
    gateway.upstream.behaviour = { holdBeforeUsage: new Promise(() => {}) };
    const stream = await readStreamUntil(chat({ stream: true, max_tokens: 100 }), '"finish_reason":"stop"');
    expect(stream.status).toBe(200);
    expect(stream.received).toContain('" world"');
    stream.abort();
    await gateway.upstream.closed[0];
    await vi.waitFor(() => expectCharged(RESERVED));
    expect(gateway.logger.lines).toEqual([
      'warn: modelswitch-keys: the answer of upstream mock for model mock-model ended early (client disconnected) before it reported usage; charged the reserved maximum',
    ]);
  });

  it('charges the reported usage when the client disconnects after the usage chunk but before [DONE]', async () => {
    gateway = await startGateway({ proxy: EXACT });
    gateway.upstream.behaviour = { holdBeforeDone: new Promise(() => {}) };
    const stream = await readStreamUntil(
      chat({ stream: true, max_tokens: 100, stream_options: { include_usage: true } }),
      '"total_tokens":20',
    );
    expect(stream.status).toBe(200);
    stream.abort();
    await gateway.upstream.closed[0];
    await vi.waitFor(() => expectCharged(0.028));
    expect(gateway.logger.lines).toEqual([]);
  });

  it('releases the reservation for free when the client disconnects before any body byte was forwarded', async () => {
    gateway = await startGateway({ proxy: EXACT });
    gateway.upstream.behaviour = { holdBeforeFirstChunk: new Promise(() => {}) };
    const stream = await readStreamUntil(chat({ stream: true, max_tokens: 100 }), '');
    expect(stream.status).toBe(200);
    expect(stream.received).toBe('');
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0, reserved: RESERVED });
    stream.abort();
    await gateway.upstream.closed[0];
    await vi.waitFor(expectNothingHeldOrCharged);
  });

  it('charges the reservation and cuts the client when the upstream breaks off mid-stream without usage', async () => {
    gateway = await startGateway({ proxy: EXACT });
    gateway.upstream.behaviour = { resetAfterFirstChunk: true };
    const res = await fetch(`${gateway.url}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(chat({ stream: true, max_tokens: 100 })),
    });
    expect(res.status).toBe(200);
    await expect(res.text()).rejects.toThrow();
    await vi.waitFor(() => expectCharged(RESERVED));
    expect(gateway.logger.lines).toEqual([
      'warn: modelswitch-keys: the answer of upstream mock for model mock-model ended early (upstream broke off) before it reported usage; charged the reserved maximum',
    ]);
  });
});

describe('proxyRouter reservation after a store timeout', () => {
  class SlowReserveStore extends MemoryKeyStore {
    readonly gate = deferred();
    result: ReservationResult | undefined;
    override async reserveSpend(reservation: SpendReservation): Promise<ReservationResult> {
      await this.gate.promise;
      this.result = await super.reserveSpend(reservation);
      return this.result;
    }
  }

  it('answers 503 and releases a reservation the store applies after the timeout', async () => {
    const store = new SlowReserveStore();
    gateway = await startGateway({ store, proxy: { ...EXACT, storeTimeoutMs: 20 } });
    const res = await post(gateway, '/chat/completions', chat({ max_tokens: 100 }));
    expect(res.status).toBe(503);
    expect(JSON.parse(res.text)).toEqual({
      error: { message: 'The key store is unavailable. Please retry shortly.', type: 'api_error', code: 'store_unavailable' },
    });
    expect(gateway.upstream.requests).toEqual([]);
    store.gate.resolve();
    await vi.waitFor(() => expect(store.result).toEqual({ ok: true, holdId: expect.any(String) }));
    await vi.waitFor(expectNothingHeldOrCharged);
    await vi.waitFor(() =>
      expect(gateway.logger.lines).toEqual([
        'error: modelswitch-keys: key store unavailable (reserveSpend: timed out after 20 ms); requests that need it answer 503 until it recovers',
        'warn: modelswitch-keys: key store recovered',
        `warn: modelswitch-keys: released a reservation of $${RESERVED} for key ${gateway.proxyKeyId} that the store applied after the request was refused`,
      ]),
    );
  });

  it('logs, and never throws unhandled, when the compensating release fails too', async () => {
    class SlowThenBrokenStore extends SlowReserveStore {
      override async settleSpend(): Promise<LedgerEntry | null> {
        throw new Error('still down');
      }
    }
    const store = new SlowThenBrokenStore();
    gateway = await startGateway({ store, proxy: { ...EXACT, storeTimeoutMs: 20 } });
    expect((await post(gateway, '/chat/completions', chat({ max_tokens: 100 }))).status).toBe(503);
    store.gate.resolve();
    await vi.waitFor(() =>
      expect(gateway.logger.lines).toEqual([
        'error: modelswitch-keys: key store unavailable (reserveSpend: timed out after 20 ms); requests that need it answer 503 until it recovers',
        `error: modelswitch-keys: could not release a late reservation of $${RESERVED} for key ${gateway.proxyKeyId}; reconcile by hand`,
      ]),
    );
    expect(await store.getKey(gateway.proxyKeyId)).toMatchObject({ reserved: RESERVED });
  });
});

describe('proxyRouter keys in the URL', () => {
  for (const [label, path] of [
    ['the path', (key: string) => `/chat/completions/${key}`],
    ['a percent-encoded path', (key: string) => `/chat/completions/%6D${key.slice(1)}`],
    ['a query parameter name', (key: string) => `/chat/completions?${key}=1`],
    ['a double-encoded query parameter value', (key: string) => `/chat/completions?x=%256D${key.slice(1)}`],
  ] as const) {
    it(`answers 400 before any upstream call when ${label} contains a key`, async () => {
      gateway = await startGateway();
      const res = await post(gateway, path(gateway.proxyKey), chat());
      expect(res.status).toBe(400);
      expect(res.text).not.toContain(gateway.proxyKey.slice(3));
      expect(JSON.parse(res.text)).toEqual(KEY_IN_URL);
      expect(gateway.upstream.requests).toEqual([]);
      await expectNothingHeldOrCharged();
    });
  }
});

describe('proxyRouter paths', () => {
  it('passes a POST to a path it does not proxy on to the host', async () => {
    gateway = await startGateway();
    gateway.app.post('/v1/my-endpoint', (req, res) => {
      res.json({ handledBy: 'host', account: req.modelSwitch?.account.id });
    });
    const res = await post(gateway, '/my-endpoint', { hello: 'world' });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toEqual({ handledBy: 'host', account: gateway.account.id });
    expect(gateway.upstream.requests).toEqual([]);
    await expectNothingHeldOrCharged();
  });

  it('proxies only the paths of the `paths` option when the host sets it', async () => {
    gateway = await startGateway({ proxy: { paths: ['/chat/completions', /^\/custom\/[a-z]+$/] } });
    gateway.app.post('/v1/embeddings', (_req, res) => {
      res.json({ handledBy: 'host' });
    });
    expect((await post(gateway, '/custom/generate', chat())).status).toBe(200);
    expect((await post(gateway, '/chat/completions', chat())).status).toBe(200);
    const embeddings = await post(gateway, '/embeddings', { model: 'mock-model', input: 'x' });
    expect(JSON.parse(embeddings.text)).toEqual({ handledBy: 'host' });
    expect(gateway.upstream.requests.map((r) => r.url)).toEqual(['/v1/custom/generate', '/v1/chat/completions']);
  });

  it('refuses an invalid paths option at creation', async () => {
    await expect(startGateway({ proxy: { paths: ['chat/completions'] } })).rejects.toThrow(
      "proxyRouter: options.paths must be a non-empty array of paths below the mount starting with '/' (like '/chat/completions') or RegExps",
    );
  });
});

describe('proxyRouter request bodies', () => {
  it('asks for stream usage on /chat/completions and /completions only, not on /responses', async () => {
    gateway = await startGateway();
    await post(gateway, '/responses', { model: 'mock-model', input: 'Hi', stream: true });
    await post(gateway, '/completions', { model: 'mock-model', prompt: 'Hi', stream: true });
    // Each also carries the output cap that was reserved (defaultMaxTokens), in its API's field.
    expect(gateway.upstream.requests.map((r) => [r.url, JSON.parse(r.body)])).toEqual([
      ['/v1/responses', { model: 'mock-model', input: 'Hi', stream: true, max_output_tokens: 100 }],
      ['/v1/completions', { model: 'mock-model', prompt: 'Hi', stream: true, stream_options: { include_usage: true }, max_tokens: 100 }],
    ]);
  });

  it('forwards the parsed body it priced, so duplicate "model" keys cannot reach the upstream', async () => {
    gateway = await startGateway();
    const raw = '{"model":"mock-family-b","messages":[{"role":"user","content":"Hi"}],  "model":"mock-model"}';
    const res = await post(gateway, '/chat/completions', raw);
    expect(res.status).toBe(200);
    const sent = gateway.upstream.requests[0];
    const expected = JSON.stringify({ model: 'mock-model', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 100 });
    expect(sent?.body).toBe(expected);
    expect(sent?.headers['content-length']).toBe(String(Buffer.byteLength(expected)));
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.028, reserved: 0 });
  });

  it('refuses (400) a key percent-encoded in the body (once or twice), as in the URL', async () => {
    gateway = await startGateway();
    const once = gateway.billingKey.replace('-', '%2D');
    for (const content of [`my key: ${once}`, `x${once.replace('%', '%25')}`]) {
      const res = await post(gateway, '/chat/completions', chat({ messages: [{ role: 'user', content }] }));
      expect({ status: res.status, body: JSON.parse(res.text) }).toEqual({ status: 400, body: KEY_IN_BODY });
    }
    expect(gateway.upstream.requests).toEqual([]);
    // Percent signs that encode no key still pass.
    const ok = await post(gateway, '/chat/completions', chat({ messages: [{ role: 'user', content: '100% sure, 50%2D off, %zz' }] }));
    expect(ok.status).toBe(200);
  });

  it('refuses (400) a key hidden in the body with JSON unicode escapes', async () => {
    gateway = await startGateway();
    const escaped = `\\u006D${gateway.proxyKey.slice(1)}`;
    const raw = `{"model":"mock-model","messages":[{"role":"user","content":"${escaped}"}]}`;
    const res = await post(gateway, '/chat/completions', raw);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toEqual(KEY_IN_BODY);
    expect(gateway.upstream.requests).toEqual([]);
  });
});
