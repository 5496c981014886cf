import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import type { ReservationResult, SpendReservation } from '../../src/store/types.js';
import { type Gateway, chat, post, startGateway } from './harness.js';

let gateway: Gateway;
afterEach(async () => {
  await gateway?.close();
});

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function expectNothingHeldOrCharged(): Promise<void> {
  expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0, reserved: 0 });
  expect(await gateway.store.getAccount(gateway.account.id)).toMatchObject({ balance: 10, reserved: 0 });
}

const UPSTREAM_ERROR = {
  error: {
    message: 'The upstream mock could not be reached or answered with an invalid response.',
    type: 'api_error',
    code: 'upstream_error',
  },
};

describe('proxyRouter faults', () => {
  it('answers 502 upstream_error when the upstream refuses the connection, and releases the reservation', async () => {
    const port = await freePort();
    gateway = await startGateway({
      proxy: { upstreams: [{ name: 'mock', target: `http://127.0.0.1:${port}/v1`, apiKey: 'sk-x', models: ['mock-model'] }] },
    });
    const res = await post(gateway, '/chat/completions', chat());
    expect(res.status).toBe(502);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(JSON.parse(res.text)).toEqual(UPSTREAM_ERROR);
    await expectNothingHeldOrCharged();
  });

  it('answers 502 upstream_error when the upstream resets the connection', async () => {
    gateway = await startGateway();
    gateway.upstream.behaviour = { reset: true };
    const res = await post(gateway, '/chat/completions', chat());
    expect(res.status).toBe(502);
    expect(JSON.parse(res.text)).toEqual(UPSTREAM_ERROR);
    await expectNothingHeldOrCharged();
  });

  it('answers 504 upstream_timeout when the upstream is slower than the timeout', async () => {
    gateway = await startGateway({ proxy: { timeoutMs: 50 } });
    gateway.upstream.behaviour = { hang: true };
    const res = await post(gateway, '/chat/completions', chat());
    expect(res.status).toBe(504);
    expect(JSON.parse(res.text)).toEqual({
      error: { message: 'The upstream mock did not answer within 50 ms.', type: 'api_error', code: 'upstream_timeout' },
    });
    await expectNothingHeldOrCharged();
  });

  for (const status of [400, 429, 500]) {
    it(`passes an upstream ${status} JSON error through unchanged and charges nothing`, async () => {
      gateway = await startGateway();
      const body = { error: { message: `upstream says ${status}`, type: 'invalid_request_error', param: null, code: 'upstream_code' } };
      gateway.upstream.behaviour = { error: { status, body } };
      const res = await post(gateway, '/chat/completions', chat());
      expect(res.status).toBe(status);
      expect(res.headers.get('content-type')).toBe('application/json');
      expect(res.text).toBe(JSON.stringify(body));
      await expectNothingHeldOrCharged();
    });
  }

  it('answers 413 request_too_large for a body over the limit, before any upstream call', async () => {
    gateway = await startGateway({ proxy: { maxBodyBytes: 100 } });
    const res = await post(gateway, '/chat/completions', chat({ messages: [{ role: 'user', content: 'x'.repeat(200) }] }));
    expect(res.status).toBe(413);
    expect(JSON.parse(res.text)).toEqual({
      error: { message: 'Request body is larger than the limit of 100 bytes', type: 'invalid_request_error', code: 'request_too_large' },
    });
    expect(gateway.upstream.requests).toEqual([]);
  });

  it('answers 400 invalid_request for invalid JSON', async () => {
    gateway = await startGateway();
    const res = await post(gateway, '/chat/completions', '{"model": ');
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toEqual({
      error: { message: 'Request body is not valid JSON', type: 'invalid_request_error', code: 'invalid_request' },
    });
    expect(gateway.upstream.requests).toEqual([]);
  });

  it('closes the upstream request and charges the reservation when the client disconnects mid-stream', async () => {
    gateway = await startGateway();
    gateway.upstream.behaviour = { holdAfterFirstChunk: new Promise(() => {}) };
    const controller = new AbortController();
    const res = await fetch(`${gateway.url}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(chat({ stream: true })),
      signal: controller.signal,
    });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    const reserved = (await gateway.store.getKey(gateway.proxyKeyId))?.reserved ?? 0;
    expect(reserved).toBeGreaterThan(0);
    controller.abort();
    await gateway.upstream.closed[0];
    // Content was forwarded and no usage arrived: the reservation is charged (README, Known limits).
    await vi.waitFor(async () => {
      expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: reserved, reserved: 0 });
      expect(await gateway.store.getAccount(gateway.account.id)).toMatchObject({ balance: 10 - reserved, reserved: 0 });
    });
  });

  it('cuts the client connection and releases the reservation when the upstream breaks off before any byte', async () => {
    gateway = await startGateway();
    gateway.upstream.behaviour = { resetBeforeFirstChunk: true };
    const res = await fetch(`${gateway.url}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(chat({ stream: true })),
    });
    expect(res.status).toBe(200);
    await expect(res.text()).rejects.toThrow();
    await vi.waitFor(expectNothingHeldOrCharged);
  });

  it('answers 503 store_unavailable (fail closed) when the store cannot reserve, without calling the upstream', async () => {
    class FailingStore extends MemoryKeyStore {
      override async reserveSpend(_reservation: SpendReservation): Promise<ReservationResult> {
        throw new Error('connection lost');
      }
    }
    gateway = await startGateway({ store: new FailingStore() });
    const res = await post(gateway, '/chat/completions', chat());
    expect(res.status).toBe(503);
    expect(JSON.parse(res.text)).toEqual({
      error: { message: 'The key store is unavailable. Please retry shortly.', type: 'api_error', code: 'store_unavailable' },
    });
    expect(gateway.upstream.requests).toEqual([]);
  });
});
