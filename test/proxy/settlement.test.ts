import { execFile } from 'node:child_process';
import { type Server, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import express from 'express';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createAccount, issueKey } from '../../src/keys/accounts.js';
import { proxyRouter } from '../../src/proxy/proxy-router.js';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import { fastHasher, recordingLogger } from '../helpers.js';
import { type Gateway, MOCK_PRICE, chat, deferred, post, startGateway, storeFailingSettlements } from './harness.js';

let gateway: Gateway;
afterEach(async () => {
  await gateway?.close();
});

describe('proxyRouter settlement when the store fails', () => {
  it('retries a failed settlement in the background until the charge lands and the reservation is released', async () => {
    const { store } = storeFailingSettlements(2);
    gateway = await startGateway({ store });
    const res = await post(gateway, '/chat/completions', chat());
    expect(res.status).toBe(200);
    await vi.waitFor(async () => expect(await store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.028, reserved: 0 }), {
      timeout: 5000,
    });
    expect(await store.getAccount(gateway.account.id)).toMatchObject({ balance: 9.972, reserved: 0 });
    expect(gateway.logger.lines.some((line) => line.includes('reconcile by hand'))).toBe(false);
  });

  it('charges the reservation, not an absurd reported usage beyond the USD bound', async () => {
    gateway = await startGateway();
    gateway.upstream.behaviour = { usage: { prompt_tokens: 1e18, completion_tokens: 0 } };
    const res = await post(gateway, '/chat/completions', chat({ max_tokens: 8 }));
    expect(res.status).toBe(200);
    const key = await gateway.store.getKey(gateway.proxyKeyId);
    expect(key?.reserved).toBe(0);
    expect(key?.usage).toBeGreaterThan(0);
    expect(key?.usage).toBeLessThan(1);
  });
});

describe("proxyRouter when the host's logger or clock throws", () => {
  /** The whole answer arrived: a 200 chat completion. */
  function expectCompletion(res: { status: number; text: string }): void {
    expect({ status: res.status, object: (JSON.parse(res.text) as { object: string }).object }).toEqual({
      status: 200,
      object: 'chat.completion',
    });
  }

  const brokenLogger = {
    warn(): void {
      throw new Error('log sink down');
    },
    error(): void {
      throw new Error('log sink down');
    },
  };

  it('still answers and charges when the logger throws while settling', async () => {
    gateway = await startGateway({ proxy: { logger: brokenLogger } });
    // No usage in the answer: settling logs a warning (charged the reservation) through the broken logger.
    gateway.upstream.behaviour = { omitUsage: true };
    const res = await post(gateway, '/chat/completions', chat({ max_tokens: 100 }));
    expectCompletion(res);
    await gateway.proxy.drain();
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.223, reserved: 0 });
  });

  it.each([
    ['an Error', new Error('clock broke'), 'clock broke'],
    ['a value that cannot be printed', Object.create(null) as unknown, 'an error that cannot be printed'],
  ])(
    'still ends the answer when the clock throws %s while settling, and keeps the reservation for a hand reconciliation',
    async (_kind, thrown, text) => {
      gateway = await startGateway({
        proxy: {
          now: () => {
            if (gateway.upstream.requests.length > 0) throw thrown;
            return gateway.clock.now();
          },
        },
      });
      const res = await post(gateway, '/chat/completions', chat({ max_tokens: 100 }));
      expectCompletion(res);
      await gateway.proxy.drain();
      expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0, reserved: 0.223 });
      expect(gateway.logger.lines).toEqual([
        `error: modelswitch-keys: could not settle key ${gateway.proxyKeyId} (reserved 0.223): ${text}; reconcile by hand`,
      ]);
    },
  );
});

describe('proxyRouter.drain() for a graceful shutdown', () => {
  it('resolves when nothing is pending', async () => {
    gateway = await startGateway();
    await gateway.proxy.drain();
    expect((await post(gateway, '/chat/completions', chat())).status).toBe(200);
    await gateway.proxy.drain();
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.028, reserved: 0 });
  });

  it('waits for a settlement still being retried in the background', async () => {
    const { store, failuresLeft } = storeFailingSettlements(2);
    gateway = await startGateway({ store });
    expect((await post(gateway, '/chat/completions', chat())).status).toBe(200);
    // The answer did not wait for the retries; drain() does.
    await gateway.proxy.drain();
    expect({
      failures: failuresLeft(),
      key: await store.getKey(gateway.proxyKeyId),
      account: await store.getAccount(gateway.account.id),
    }).toMatchObject({
      failures: -1,
      key: { usage: 0.028, reserved: 0 },
      account: { balance: 9.972, reserved: 0 },
    });
  });

  it('holds the process open until a background retry has landed (servers closed, nothing else left)', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', 'test/proxy/drain-process.ts'], { timeout: 20_000 });
    expect(JSON.parse(stdout)).toEqual({ status: 200, usage: 0.028, reserved: 0 });
  });

  /** A MemoryKeyStore whose reserveSpend waits for `gate`; `asked` resolves once it was called. */
  function storeWithGatedReservations(gate: Promise<void>) {
    const store = new MemoryKeyStore();
    const reserve = store.reserveSpend.bind(store);
    const asked = deferred();
    store.reserveSpend = async (reservation) => {
      asked.resolve();
      await gate;
      return reserve(reservation);
    };
    return { store, asked: asked.promise };
  }

  /** Whether `promise` is still pending after several turns of the event loop. */
  async function stillPending(promise: Promise<unknown>): Promise<boolean> {
    let settled = false;
    void promise.then(() => {
      settled = true;
    });
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    return !settled;
  }

  it('waits for a reservation the store is still making', async () => {
    const gate = deferred();
    const { store, asked } = storeWithGatedReservations(gate.promise);
    gateway = await startGateway({ store });
    const answer = post(gateway, '/chat/completions', chat());
    await asked;
    const draining = gateway.proxy.drain();
    expect(await stillPending(draining)).toBe(true);
    gate.resolve();
    expect((await answer).status).toBe(200);
    await draining;
    expect(await store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.028, reserved: 0 });
  });

  it('waits for the release of a reservation the store applied after the request timed out (503)', async () => {
    const gate = deferred();
    const { store, asked } = storeWithGatedReservations(gate.promise);
    gateway = await startGateway({ store, proxy: { storeTimeoutMs: 20 } });
    const answer = await post(gateway, '/chat/completions', chat());
    await asked;
    expect(answer.status).toBe(503);
    const draining = gateway.proxy.drain();
    expect(await stillPending(draining)).toBe(true);
    gate.resolve();
    await draining;
    expect(await store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0, reserved: 0 });
    expect(await store.getAccount(gateway.account.id)).toMatchObject({ balance: 10, reserved: 0 });
  });

  it('waits for a request in flight to end and settle', async () => {
    gateway = await startGateway();
    const hold = deferred();
    gateway.upstream.behaviour = { holdAfterFirstChunk: hold.promise };
    const streamed = post(gateway, '/chat/completions', chat({ stream: true }));
    await vi.waitFor(async () => expect((await gateway.store.getKey(gateway.proxyKeyId))?.reserved).toBeGreaterThan(0));
    const draining = gateway.proxy.drain();
    expect(await stillPending(draining)).toBe(true);
    hold.resolve();
    expect((await streamed).status).toBe(200);
    await draining;
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.028, reserved: 0 });
  });
});

describe("proxyRouter and the operator's upstream account", () => {
  it("does not pass on the upstream's organization, project or rate-limit headers, but keeps the others", async () => {
    gateway = await startGateway();
    const res = await fetch(`${gateway.url}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(chat()),
    });
    expect(res.status).toBe(200);
    await res.json();
    expect({
      organization: res.headers.get('openai-organization'),
      project: res.headers.get('openai-project'),
      upstreamLimit: res.headers.get('x-ratelimit-remaining-requests'),
      upstreamIetfLimit: res.headers.get('ratelimit'),
      upstreamAnthropicLimit: res.headers.get('anthropic-ratelimit-requests-remaining'),
      upstreamAnthropicOrganization: res.headers.get('anthropic-organization-id'),
      requestId: res.headers.get('x-request-id'),
      upstreamRequestId: res.headers.get('x-upstream-request-id'),
      gatewayLimit: res.headers.get('ratelimit-limit'),
      gatewayRemaining: res.headers.get('ratelimit-remaining'),
      gatewayPolicy: res.headers.get('ratelimit-policy'),
    }).toEqual({
      organization: null,
      project: null,
      upstreamLimit: null,
      upstreamIetfLimit: null,
      upstreamAnthropicLimit: null,
      upstreamAnthropicOrganization: null,
      // The gateway's own id; the upstream's under its own name.
      requestId: expect.stringMatching(/^req_[A-Za-z0-9_-]{24}$/),
      upstreamRequestId: 'req_mock',
      gatewayLimit: '1000',
      gatewayRemaining: '999',
      gatewayPolicy: '1000;w=10',
    });
  });
});

describe('proxyRouter settles before the answer is complete', () => {
  it("keeps a JSON answer's last bytes (it has a Content-Length) until its settlement is written", async () => {
    const store = new MemoryKeyStore();
    const gate = deferred();
    const settle = store.settleSpend.bind(store);
    let settled = false;
    const settling = deferred();
    store.settleSpend = async (settlement) => {
      settling.resolve();
      await gate.promise;
      const entry = await settle(settlement);
      settled = true;
      return entry;
    };
    gateway = await startGateway({ store });
    const body = JSON.stringify(chat());
    const received: Buffer[] = [];
    let length = -1;
    let complete = false;
    const done = new Promise<number>((resolve, reject) => {
      const req = request(
        `${gateway.url}/chat/completions`,
        {
          method: 'POST',
          headers: {
            authorization: `Bearer ${gateway.proxyKey}`,
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(body),
          },
        },
        (res) => {
          length = Number(res.headers['content-length']);
          res.on('data', (chunk: Buffer) => received.push(chunk));
          res.on('end', () => {
            complete = true;
            resolve(res.statusCode ?? 0);
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
    // The upstream has answered and the settlement waits on the gate: the client has not got it all
    // (a JSON answer in one chunk: nothing at all, its headers leave with it).
    await settling.promise;
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect({ complete, settled, whole: length > 0 && Buffer.concat(received).length === length }).toEqual({
      complete: false,
      settled: false,
      whole: false,
    });
    gate.resolve();
    expect(await done).toBe(200);
    expect({ settled, bytes: Buffer.concat(received).length }).toEqual({ settled: true, bytes: length });
    expect(JSON.parse(Buffer.concat(received).toString('utf8'))).toMatchObject({ object: 'chat.completion' });
  });
});

describe('a JSON answer the upstream cuts off', () => {
  it('costs nothing when it broke off before any byte was written to the client (its only chunk was held)', async () => {
    const upstream: Server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': 400 });
        res.write('{"id":"chatcmpl-cut","object":"chat.completion","choices":[');
        setTimeout(() => res.socket?.destroy(), 20);
      });
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const store = new MemoryKeyStore();
    const hasher = fastHasher();
    const logger = recordingLogger();
    const account = await createAccount(store, { balance: 10 });
    const issued = await issueKey(store, { accountId: account.id, type: 'proxy', name: 'cut' }, { hasher });
    const app = express();
    app.use(
      '/v1',
      proxyRouter(store, {
        upstreams: [{ name: 'mock', target: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`, models: ['mock-model'] }],
        pricing: { 'mock-model': MOCK_PRICE },
        defaultMaxTokens: 100,
        hasher,
        logger,
      }),
    );
    const server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const received: Buffer[] = [];
      const outcome = await new Promise<string>((resolve) => {
        const req = request(
          `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`,
          { method: 'POST', headers: { authorization: `Bearer ${issued.key}`, 'content-type': 'application/json' } },
          (res) => {
            res.on('data', (chunk: Buffer) => received.push(chunk));
            res.on('end', () => resolve('ended'));
            res.on('error', () => resolve('cut'));
          },
        );
        req.on('error', () => resolve('cut'));
        req.end(JSON.stringify(chat()));
      });
      expect({ outcome, bytes: Buffer.concat(received).length }).toEqual({ outcome: 'cut', bytes: 0 });
      await vi.waitFor(async () => expect(await store.getKey(issued.record.id)).toMatchObject({ usage: 0, reserved: 0 }));
      expect(await store.getAccount(account.id)).toMatchObject({ balance: 10, reserved: 0 });
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => upstream.close(() => resolve()));
    }
  });
});
