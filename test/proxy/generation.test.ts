import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { adjustBalance, generationRoute, modelSwitchAuth } from '../../src/index.js';
import { isoTime } from '../../src/keys/public-key.js';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import { fastHasher, seedAccount } from '../helpers.js';
import { type Gateway, chat, post, startGateway } from './harness.js';

const JSON_HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' };

let gateway: Gateway;
afterEach(async () => {
  await gateway?.close();
});

async function get(url: string, key: string): Promise<{ status: number; headers: Record<string, string | null>; body: unknown }> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${key}` } });
  return {
    status: res.status,
    headers: { 'content-type': res.headers.get('content-type'), 'cache-control': res.headers.get('cache-control') },
    body: await res.json(),
  };
}

function notFound(id: string) {
  return {
    status: 404,
    headers: JSON_HEADERS,
    body: {
      error: {
        message: `No generation with id ${id} for this API key`,
        type: 'not_found_error',
        code: 'generation_not_found',
        param: 'id',
      },
    },
  };
}

function bad(message: string, param: string) {
  return {
    status: 400,
    headers: JSON_HEADERS,
    body: { error: { message, type: 'invalid_request_error', code: 'invalid_request', param } },
  };
}

describe('GET /v1/generation', () => {
  it("answers the key's own entry by the X-Request-Id and by the upstream's answer id, even at a zero balance", async () => {
    gateway = await startGateway();
    const res = await post(gateway, '/chat/completions', chat());
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-request-id') as string;
    const entry = {
      id: expect.any(Number),
      type: 'usage',
      amount: -0.028,
      balanceAfter: 9.972,
      keyId: gateway.proxyKeyId,
      model: 'mock-model',
      promptTokens: 12,
      completionTokens: 8,
      requestId,
      reference: null,
      createdAt: isoTime(gateway.clock.now()),
    };
    // The account is then spent to zero: inference is refused, the look-up is not.
    await adjustBalance(gateway.store, gateway.account.id, -9.972, { reference: 'spent' });
    const byRequestId = await get(`${gateway.url}/generation?id=${requestId}`, gateway.proxyKey);
    expect(byRequestId).toEqual({ status: 200, headers: JSON_HEADERS, body: entry });
    expect(await get(`${gateway.url}/generation?id=chatcmpl-mock`, gateway.proxyKey)).toEqual(byRequestId);
    expect((await post(gateway, '/chat/completions', chat())).status).toBe(402);
  });

  it("answers 404 for an unknown id, another key's request and another account's, alike", async () => {
    gateway = await startGateway({ api: true });
    const mine = (await post(gateway, '/chat/completions', chat())).headers.get('x-request-id') as string;
    const sibling = await fetch(`${gateway.apiUrl}/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gateway.billingKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Sibling' }),
    });
    const siblingKey = ((await sibling.json()) as { key: string }).key;
    const other = await seedAccount(gateway.store, { hasher: fastHasher(), now: gateway.clock.now() });
    const unknown = 'req_AAAAAAAAAAAAAAAAAAAAAAAA';
    expect(await get(`${gateway.url}/generation?id=${unknown}`, gateway.proxyKey)).toEqual(notFound(unknown));
    expect(await get(`${gateway.url}/generation?id=${mine}`, siblingKey)).toEqual(notFound(mine));
    expect(await get(`${gateway.url}/generation?id=chatcmpl-mock`, siblingKey)).toEqual(notFound('chatcmpl-mock'));
    expect(await get(`${gateway.url}/generation?id=${mine}`, other.proxyKey)).toEqual(notFound(mine));
    expect(await get(`${gateway.url}/generation?id=chatcmpl-mock`, other.proxyKey)).toEqual(notFound('chatcmpl-mock'));
  });

  it('has no entry for a request refused before the upstream', async () => {
    gateway = await startGateway({ balance: 0 });
    const refused = await post(gateway, '/chat/completions', chat());
    expect(refused.status).toBe(402);
    const requestId = refused.headers.get('x-request-id') as string;
    expect(await get(`${gateway.url}/generation?id=${requestId}`, gateway.proxyKey)).toEqual(notFound(requestId));
  });

  it.each([
    ['', 'id is required: the X-Request-Id of the answer, or the id the upstream gave it', 'id'],
    ['?id=', 'id is required: the X-Request-Id of the answer, or the id the upstream gave it', 'id'],
    [`?id=${'x'.repeat(201)}`, 'id must be at most 200 characters', 'id'],
    ['?id=a&id=b', 'id may be given once', 'id'],
    ['?id=a&model=b', 'Unknown query parameter model', 'model'],
  ])('answers 400 to GET /v1/generation%s', async (query, message, param) => {
    gateway = await startGateway();
    expect(await get(`${gateway.url}/generation${query}`, gateway.proxyKey)).toEqual(bad(message, param));
  });

  it('works as generationRoute() after modelSwitchAuth, without proxyRouter, and passes other paths on', async () => {
    const store = new MemoryKeyStore();
    const hasher = fastHasher();
    const seeded = await seedAccount(store, { hasher });
    await store.settleSpend({
      keyId: seeded.proxyKeyId,
      accountId: seeded.account.id,
      holdId: null,
      cost: 0.5,
      period: null,
      now: Date.parse('2026-11-22T12:00:00Z'),
      usage: { model: 'own-model', promptTokens: 3, completionTokens: 4, requestId: 'req_host', upstreamId: null },
    });
    const app = express();
    app.use('/v1', modelSwitchAuth(store, { hasher }), generationRoute(store));
    app.use((_req, res) => {
      res.status(404).json({ host: 'not found' });
    });
    const server: Server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
    try {
      const found = await get(`${base}/generation?id=req_host`, seeded.proxyKey);
      expect(found.body).toEqual({
        id: expect.any(Number),
        type: 'usage',
        amount: -0.5,
        balanceAfter: 9.5,
        keyId: seeded.proxyKeyId,
        model: 'own-model',
        promptTokens: 3,
        completionTokens: 4,
        requestId: 'req_host',
        reference: null,
        createdAt: '2026-11-22T12:00:00Z',
      });
      expect((await get(`${base}/elsewhere`, seeded.proxyKey)).body).toEqual({ host: 'not found' });
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
