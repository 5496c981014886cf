import { afterEach, describe, expect, it } from 'vitest';
import { newRequestId } from '../../src/proxy/request-id.js';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import type { LedgerEntry } from '../../src/store/types.js';
import { type Gateway, chat, deferred, post, startGateway } from './harness.js';

const REQUEST_ID = /^req_[A-Za-z0-9_-]{24}$/;
/** 12 prompt + 8 completion tokens at the mock price. */
const COST = 0.028;

let gateway: Gateway;
afterEach(async () => {
  await gateway?.close();
});

/** The account's usage entries, newest first. */
async function usageEntries(): Promise<LedgerEntry[]> {
  return (await gateway.store.listLedger(gateway.account.id, { limit: 100, type: 'usage' })).entries;
}

/** The usage entry the store must hold for one answered mock request. */
function usageEntry(requestId: string, fields: Partial<LedgerEntry> = {}): LedgerEntry {
  return {
    id: expect.any(Number) as unknown as number,
    accountId: gateway.account.id,
    type: 'usage',
    amount: -COST,
    balanceAfter: expect.any(Number) as unknown as number,
    keyId: gateway.proxyKeyId,
    model: 'mock-model',
    promptTokens: 12,
    completionTokens: 8,
    requestId,
    upstreamId: 'chatcmpl-mock',
    reference: null,
    note: null,
    createdAt: gateway.clock.now(),
    ...fields,
  };
}

describe('X-Request-Id on proxied answers', () => {
  it("answers a JSON completion with the gateway's own id (not the client's), the upstream's as X-Upstream-Request-Id, and records both", async () => {
    gateway = await startGateway();
    const res = await post(gateway, '/chat/completions', chat(), { 'x-request-id': 'req_client_chosen' });
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-request-id') as string;
    expect(requestId).toMatch(REQUEST_ID);
    expect(res.headers.get('x-upstream-request-id')).toBe('req_mock');
    expect(await usageEntries()).toEqual([usageEntry(requestId, { balanceAfter: 10 - COST })]);
  });

  it('gives every request an id of its own', async () => {
    gateway = await startGateway();
    const ids = new Set<string>();
    for (let i = 0; i < 5; i++) ids.add((await post(gateway, '/chat/completions', chat())).headers.get('x-request-id') as string);
    expect(ids.size).toBe(5);
    expect(new Set((await usageEntries()).map((entry) => entry.requestId))).toEqual(ids);
  });

  it('sends the id with the headers of a stream, before its first byte', async () => {
    gateway = await startGateway();
    const hold = deferred();
    gateway.upstream.behaviour = { holdBeforeFirstChunk: hold.promise };
    const res = await fetch(`${gateway.url}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(chat({ stream: true })),
    });
    // fetch resolved on the headers alone: the upstream has not sent a chunk yet.
    const requestId = res.headers.get('x-request-id') as string;
    expect({ status: res.status, contentType: res.headers.get('content-type'), requestId }).toEqual({
      status: 200,
      contentType: 'text/event-stream',
      requestId: expect.stringMatching(REQUEST_ID),
    });
    hold.resolve();
    await res.text();
    await gateway.proxy.drain();
    expect(await usageEntries()).toEqual([usageEntry(requestId, { balanceAfter: 10 - COST })]);
  });

  it('records a stream the client left after some chunks at its reservation, never at $0, under its id', async () => {
    gateway = await startGateway();
    const hold = deferred();
    gateway.upstream.behaviour = { holdAfterFirstChunk: hold.promise };
    const controller = new AbortController();
    const res = await fetch(`${gateway.url}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(chat({ stream: true })),
      signal: controller.signal,
    });
    const requestId = res.headers.get('x-request-id') as string;
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    controller.abort();
    await gateway.upstream.closed[0];
    await gateway.proxy.drain();
    hold.resolve();
    // Its reservation: the prompt estimated from the body's size (24 tokens) + 100 output tokens (defaultMaxTokens) at the mock price.
    expect(await usageEntries()).toEqual([
      usageEntry(requestId, { amount: -0.236, balanceAfter: 9.764, promptTokens: 0, completionTokens: 0 }),
    ]);
  });

  it('carries the id on a refusal before the upstream, which writes no entry', async () => {
    gateway = await startGateway({ balance: 0 });
    const res = await post(gateway, '/chat/completions', chat());
    expect(res.status).toBe(402);
    expect(res.headers.get('x-request-id')).toMatch(REQUEST_ID);
    expect(gateway.upstream.requests).toEqual([]);
    expect(await usageEntries()).toEqual([]);
  });

  it("carries the id on the upstream's own error answer, which costs nothing and writes no entry", async () => {
    gateway = await startGateway();
    gateway.upstream.behaviour = { error: { status: 429, body: { error: { message: 'slow down', type: 'rate_limit_error' } } } };
    const res = await post(gateway, '/chat/completions', chat());
    expect(res.status).toBe(429);
    expect(res.headers.get('x-request-id')).toMatch(REQUEST_ID);
    expect(res.headers.get('x-upstream-request-id')).toBe('req_mock');
    expect(await usageEntries()).toEqual([]);
  });
});

describe('newRequestId', () => {
  it('makes ids of the pattern, none repeated, across the random bytes it draws 128 ids at a time', () => {
    const ids = Array.from({ length: 1000 }, newRequestId);
    expect({ pattern: ids.every((id) => REQUEST_ID.test(id)), distinct: new Set(ids).size }).toEqual({ pattern: true, distinct: 1000 });
  });
});

describe('a settlement the store applied but whose answer was lost', () => {
  it('is retried under the same request id and written once: one entry, one charge', async () => {
    const store = new MemoryKeyStore();
    const settle = store.settleSpend.bind(store);
    let calls = 0;
    // The first attempt reaches the store and is applied, then the connection drops before the answer.
    store.settleSpend = async (settlement) => {
      calls++;
      const entry = await settle(settlement);
      if (calls === 1) throw new Error('connection reset after the write');
      return entry;
    };
    gateway = await startGateway({ store });
    const res = await post(gateway, '/chat/completions', chat());
    expect(res.status).toBe(200);
    await gateway.proxy.drain();
    const requestId = res.headers.get('x-request-id') as string;
    expect(calls).toBe(2);
    expect(await usageEntries()).toEqual([usageEntry(requestId, { balanceAfter: 10 - COST })]);
    expect((await store.getAccount(gateway.account.id))?.balance).toBe(10 - COST);
    expect((await store.getKey(gateway.proxyKeyId))?.usage).toBe(COST);
  });
});
