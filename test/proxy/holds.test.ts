import { afterEach, describe, expect, it, vi } from 'vitest';
import { proxyRouter } from '../../src/proxy/proxy-router.js';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import type { KeyStore } from '../../src/store/types.js';
import { fastHasher, recordingLogger, seedAccount, testClock } from '../helpers.js';
import { type Gateway, MOCK_PRICE, chat, deferred, post, startGateway } from './harness.js';

let gateway: Gateway | undefined;
afterEach(async () => {
  await gateway?.proxy.close();
  await gateway?.close();
  gateway = undefined;
  vi.useRealTimers();
});

/** 12 prompt + 100 output tokens at the mock price: every request reserves $0.212, so a limit of $0.3 holds one at a time. */
const ONE_AT_A_TIME = { estimatePromptTokens: () => 12, timeoutMs: 5000, holdMarginMs: 1000 };
/** The first deadline of a request reserved at `t`: its `timeoutMs` plus `holdMarginMs`. */
const HELD_FOR = 6000;

const LIMIT_REACHED = {
  status: 403,
  body: {
    error: {
      message:
        "This request could cost up to $0.212, more than the $0.088 left of this key's spend limit of $0.3. Lower max_tokens or raise the key's limit.",
      type: 'permission_error',
      code: 'spend_limit_reached',
    },
  },
};

/** A store whose `extendHold` calls are recorded, each answering once the store did. */
function renewalsOf(store: KeyStore): Array<Promise<boolean>> {
  const calls: Array<Promise<boolean>> = [];
  const extend = store.extendHold.bind(store);
  store.extendHold = (holdId, accountId, expiresAt) => {
    const call = extend(holdId, accountId, expiresAt);
    calls.push(call);
    return call;
  };
  return calls;
}

describe('proxyRouter spend holds', () => {
  it('renews the hold of a stream still running past its first deadline, so another request of the key never releases it; it settles once', async () => {
    const store = new MemoryKeyStore();
    const renewals = renewalsOf(store);
    gateway = await startGateway({ store, proxy: ONE_AT_A_TIME });
    await store.updateKey(gateway.proxyKeyId, { limit: 0.3 });
    const { clock, upstream } = gateway;
    const firstChunkSent = deferred();
    const usageSent = deferred();
    upstream.behaviour = { holdAfterFirstChunk: firstChunkSent.promise, holdBeforeUsage: usageSent.promise };
    const streaming = await fetch(`${gateway.url}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(chat({ stream: true })),
    });
    expect(streaming.status).toBe(200);
    const reader = (streaming.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    expect(renewals).toHaveLength(0);
    // Half the margin later the stream sends more: its hold is renewed to then + timeout + margin.
    clock.advance(HELD_FOR - 500);
    firstChunkSent.resolve();
    await vi.waitFor(() => expect(renewals).toHaveLength(1));
    expect(await renewals[0]).toBe(true);
    // Past the first deadline, the key's next request finds the hold still there.
    clock.advance(1000);
    upstream.behaviour = {};
    expect(await post(gateway, '/chat/completions', chat()).then((r) => ({ status: r.status, body: JSON.parse(r.text) }))).toEqual(
      LIMIT_REACHED,
    );
    expect(await store.getKey(gateway.proxyKeyId)).toMatchObject({ reserved: 0.212, usage: 0 });
    usageSent.resolve();
    let text = '';
    for (let read = await reader.read(); !read.done; read = await reader.read()) text += new TextDecoder().decode(read.value);
    expect(text).toContain('data: [DONE]');
    expect(await store.getKey(gateway.proxyKeyId)).toMatchObject({ reserved: 0, usage: 0.028 });
    expect(await store.getAccount(gateway.account.id)).toMatchObject({ reserved: 0, balance: 9.972 });
    expect(gateway.logger.lines).toEqual([]);
  });

  it('releases the hold of a gateway that died on the next request of its key once the deadline has passed, and only then', async () => {
    const store = new MemoryKeyStore();
    gateway = await startGateway({ store, proxy: ONE_AT_A_TIME, balance: 0.25 });
    await store.updateKey(gateway.proxyKeyId, { limit: 0.3 });
    const { clock } = gateway;
    // What a gateway that died mid-request leaves behind: a hold nobody settles.
    const reserved = await store.reserveSpend({
      keyId: gateway.proxyKeyId,
      accountId: gateway.account.id,
      amount: 0.212,
      period: null,
      now: clock.now(),
      expiresAt: clock.now() + HELD_FOR,
    });
    expect(reserved.ok).toBe(true);
    clock.advance(HELD_FOR - 1);
    expect((await post(gateway, '/chat/completions', chat())).status).toBe(403);
    clock.advance(1);
    const served = await post(gateway, '/chat/completions', chat());
    expect(served.status).toBe(200);
    expect(await store.getKey(gateway.proxyKeyId)).toMatchObject({ reserved: 0, usage: 0.028 });
    expect(await store.getAccount(gateway.account.id)).toMatchObject({ reserved: 0, balance: 0.222 });
  });
});

describe('proxyRouter hold sweeper', () => {
  async function deadHold(store: KeyStore, now: number, expiresAt: number) {
    const seeded = await seedAccount(store, { hasher: fastHasher(), balance: 10, now });
    const result = await store.reserveSpend({
      keyId: seeded.proxyKeyId,
      accountId: seeded.account.id,
      amount: 4,
      period: null,
      now,
      expiresAt,
    });
    expect(result.ok).toBe(true);
    return seeded;
  }

  function router(store: KeyStore, holdSweepIntervalMs: number) {
    const clock = testClock();
    const logger = recordingLogger();
    const proxy = proxyRouter(store, {
      upstreams: [{ name: 'mock', target: 'http://127.0.0.1:9/v1', models: ['mock-model'] }],
      pricing: { 'mock-model': MOCK_PRICE },
      holdSweepIntervalMs,
      now: clock.now,
      logger,
    });
    return { proxy, clock, logger };
  }

  it('is off by default; releaseExpiredHolds() releases every expired hold on call and says how many', async () => {
    const store = new MemoryKeyStore();
    const { proxy, clock, logger } = router(store, 0);
    const dead = await deadHold(store, clock.now(), clock.now() + 1000);
    const live = await deadHold(store, clock.now(), clock.now() + 5000);
    expect(await proxy.releaseExpiredHolds()).toBe(0);
    clock.advance(1000);
    expect(await proxy.releaseExpiredHolds()).toBe(1);
    expect(await proxy.releaseExpiredHolds()).toBe(0);
    expect(await store.getAccount(dead.account.id)).toMatchObject({ reserved: 0, balance: 10 });
    expect(await store.getKey(dead.proxyKeyId)).toMatchObject({ reserved: 0, usage: 0 });
    expect(await store.getAccount(live.account.id)).toMatchObject({ reserved: 4 });
    expect(logger.lines).toEqual([
      'warn: modelswitch-keys: released 1 expired spend holds (requests whose gateway stopped before settling them)',
    ]);
    await proxy.close();
  });

  it('runs every holdSweepIntervalMs on an unref’d timer until close()', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const store = new MemoryKeyStore();
    const sweeps: number[] = [];
    const release = store.releaseExpiredHolds.bind(store);
    store.releaseExpiredHolds = (now, limit) => {
      sweeps.push(now);
      return release(now, limit);
    };
    const { proxy, clock, logger } = router(store, 30_000);
    const dead = await deadHold(store, clock.now(), clock.now() + 1000);
    clock.advance(1000);
    expect(sweeps).toEqual([]);
    await vi.advanceTimersByTimeAsync(30_000);
    await vi.waitFor(async () => expect(await store.getAccount(dead.account.id)).toMatchObject({ reserved: 0, balance: 10 }));
    expect(sweeps).toEqual([clock.now()]);
    expect(logger.lines).toEqual([
      'warn: modelswitch-keys: released 1 expired spend holds (requests whose gateway stopped before settling them)',
    ]);
    await proxy.close();
    await vi.advanceTimersByTimeAsync(90_000);
    expect(sweeps).toHaveLength(1);
  });

  it('a sweep the store fails is logged once as an outage, and the next one goes on', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const store = new MemoryKeyStore();
    const release = store.releaseExpiredHolds.bind(store);
    let failures = 2;
    store.releaseExpiredHolds = (now, limit) => (failures-- > 0 ? Promise.reject(new Error('connection reset')) : release(now, limit));
    const { proxy, clock, logger } = router(store, 1000);
    const dead = await deadHold(store, clock.now(), clock.now() + 500);
    clock.advance(500);
    await expect(proxy.releaseExpiredHolds()).rejects.toMatchObject({ status: 503, code: 'store_unavailable' });
    await vi.advanceTimersByTimeAsync(1000);
    await vi.advanceTimersByTimeAsync(1000);
    await vi.waitFor(async () => expect(await store.getAccount(dead.account.id)).toMatchObject({ reserved: 0 }));
    expect(logger.lines).toEqual([
      'error: modelswitch-keys: key store unavailable (releaseExpiredHolds: connection reset); requests that need it answer 503 until it recovers',
      'warn: modelswitch-keys: key store recovered',
      'warn: modelswitch-keys: released 1 expired spend holds (requests whose gateway stopped before settling them)',
    ]);
    await proxy.close();
  });
});
