import request from 'supertest';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { generateApiKey } from '../../src/keys/api-key.js';
import { KeyvKeyStore } from '../../src/store/keyv/keyv-store.js';
import { sampleAccount, sampleKeyRecord } from '../../src/testing/index.js';
import { buildApp } from '../app.js';
import { fastHasher, recordingLogger, seedAccount } from '../helpers.js';
import { chat, deferred, startGateway } from '../proxy/harness.js';
import { expectSettledOnceThroughRoutes } from './ledger-through-routes.js';
import { REDIS_URL, redisKeyv, redisSkipReason, runPrefix } from './redis-env.js';
import { RedisProcess } from './redis-process.js';

const hasher = fastHasher();
const UNAVAILABLE = {
  status: 503,
  type: 'application/json',
  body: { error: { message: 'The key store is unavailable. Please retry shortly.', type: 'api_error', code: 'store_unavailable' } },
};

function answer(response: request.Response) {
  return { status: response.status, type: response.headers['content-type'], body: response.body };
}

/** Polls `check` until it holds (a log line another part writes on its own schedule), for up to 15 s. */
async function eventuallyTrue(check: () => boolean): Promise<boolean> {
  const deadline = Date.now() + 15_000;
  while (!check() && Date.now() <= deadline) await new Promise((resolve) => setTimeout(resolve, 50));
  return check();
}

/** Retries `probe` until it answers `status` (the client reconnects with a back-off of up to 2 s). */
async function eventually(probe: () => Promise<request.Response>, status: number): Promise<request.Response> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const response = await probe();
    if (response.status === status || Date.now() > deadline) return response;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

// These tests stop, freeze and restart a redis-server of their own on a free port; REDIS_URL
// gates them like every Redis test, so a machine without Redis skips them visibly.
describe.skipIf(!REDIS_URL)(`KeyvKeyStore when Redis fails${redisSkipReason ? ` (${redisSkipReason})` : ''}`, () => {
  let redis: RedisProcess;
  const rejections: unknown[] = [];
  const onRejection = (reason: unknown) => rejections.push(reason);

  beforeAll(async () => {
    redis = await RedisProcess.start();
    process.on('unhandledRejection', onRejection);
  });
  afterAll(async () => {
    process.off('unhandledRejection', onRejection);
    await redis?.remove();
  });
  beforeEach(() => {
    rejections.length = 0;
  });
  afterEach(() => {
    expect(rejections).toEqual([]);
  });

  async function gateway(storeTimeoutMs: number) {
    const store = new KeyvKeyStore(redisKeyv(redis.url), { prefix: runPrefix() });
    const logger = recordingLogger();
    const app = buildApp('express5', store, { hasher, logger, storeTimeoutMs });
    const seeded = await seedAccount(store, { hasher });
    const whoami = () => request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    const listKeys = () => request(app).get('/api/keys').set('Authorization', `Bearer ${seeded.billingKey}`);
    return { store, logger, whoami, listKeys };
  }

  it('answers 503 on /v1 and /api while Redis is stopped, logs one line, and recovers after a restart that lost the Lua scripts', async () => {
    const { store, logger, whoami, listKeys } = await gateway(1000);
    try {
      expect((await whoami()).status).toBe(200);
      await redis.stop();
      for (let i = 0; i < 3; i++) {
        expect(answer(await whoami())).toEqual(UNAVAILABLE);
        expect(answer(await listKeys())).toEqual(UNAVAILABLE);
      }
      expect(logger.lines).toHaveLength(1);
      expect(logger.lines[0]).toMatch(/^error: modelswitch-keys: key store unavailable \(getKeyByHandle: .+\)/);

      // A new redis-server has the data (append-only file) but an empty script cache: the rate
      // limit's EVALSHA answers NOSCRIPT and the store must load the script again.
      await redis.restart();
      const recovered = await eventually(whoami, 200);
      expect(recovered.status).toBe(200);
      expect(recovered.headers['ratelimit-limit']).toBe('1000');
      expect((await listKeys()).status).toBe(200);
      expect(logger.lines).toEqual([logger.lines[0], 'warn: modelswitch-keys: key store recovered']);
    } finally {
      await redis.restart().catch(() => {});
      await store.close();
    }
  });

  it('answers 503 when Redis stops answering for longer than storeTimeoutMs, then recovers without a restart of the app', async () => {
    const { store, logger, whoami, listKeys } = await gateway(200);
    try {
      expect((await whoami()).status).toBe(200);
      redis.freeze();
      expect(answer(await whoami())).toEqual(UNAVAILABLE);
      expect(answer(await listKeys())).toEqual(UNAVAILABLE);
      expect(logger.lines).toEqual([
        'error: modelswitch-keys: key store unavailable (getKeyByHandle: timed out after 200 ms); requests that need it answer 503 until it recovers',
      ]);
      redis.thaw();
      expect((await eventually(whoami, 200)).status).toBe(200);
      expect(logger.lines).toHaveLength(2);
    } finally {
      redis.thaw();
      await store.close();
    }
  });

  it('a settlement that fails while Redis is down is retried by the proxy after the restart and written exactly once, as the routes show', async () => {
    const store = new KeyvKeyStore(redisKeyv(redis.url), { prefix: runPrefix() });
    const gateway = await startGateway({ store, balance: 10, api: true });
    try {
      const gate = deferred();
      gateway.upstream.behaviour = { holdAfterFirstChunk: gate.promise };
      const response = await fetch(`${gateway.url}/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json' },
        body: JSON.stringify(chat({ stream: true })),
      });
      expect(response.status).toBe(200);
      // Reserved and streaming; Redis goes away before the stream ends and the proxy settles.
      await redis.stop();
      gate.resolve();
      expect(await response.text()).toContain('data: [DONE]');
      const failed = await eventuallyTrue(() => gateway.logger.lines.some((line) => line.includes('key store unavailable (settleSpend')));
      expect(failed).toBe(true);
      await redis.restart();
      // drain() resolves once the background retry landed (or gave up, which the log would say).
      await gateway.proxy.drain();
      expect(gateway.logger.lines.filter((line) => line.includes('reconcile by hand'))).toEqual([]);
      await expectSettledOnceThroughRoutes(gateway, 10, [
        {
          requestId: response.headers.get('x-request-id') as string,
          model: 'mock-model',
          cost: 0.028,
          promptTokens: 12,
          completionTokens: 8,
        },
      ]);
    } finally {
      await redis.restart().catch(() => {});
      await gateway.close();
      await store.close();
    }
  });

  it('settlements the proxy gave up on while Redis hung, and retried, are written once each when Redis answers them all, as the routes show', async () => {
    const store = new KeyvKeyStore(redisKeyv(redis.url), { prefix: runPrefix() });
    // Counts each request's settlement attempts; every one still reaches the real Redis.
    const attempts = new Map<string, number>();
    const settle = store.settleSpend.bind(store);
    store.settleSpend = (settlement) => {
      const id = settlement.usage?.requestId ?? '';
      attempts.set(id, (attempts.get(id) ?? 0) + 1);
      return settle(settlement);
    };
    const gateway = await startGateway({ store, balance: 10, api: true, proxy: { storeTimeoutMs: 300 } });
    try {
      const gate = deferred();
      gateway.upstream.behaviour = { holdAfterFirstChunk: gate.promise };
      const send = (body: Record<string, unknown>) =>
        fetch(`${gateway.url}/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
      // Three streams reserved and streaming, two with the usage chunk the client asked for.
      const streams = await Promise.all([
        send(chat({ stream: true })),
        send(chat({ stream: true, stream_options: { include_usage: true } })),
        send(chat({ model: 'mock-family-a', stream: true })),
      ]);
      expect(streams.map((r) => r.status)).toEqual([200, 200, 200]);
      // Redis stops answering as they end: each settlement is sent, waits past the store timeout,
      // and is given up and sent again, behind the first, on the same connection.
      redis.freeze();
      gate.resolve();
      gateway.upstream.behaviour = {};
      for (const body of await Promise.all(streams.map((r) => r.text()))) expect(body).toContain('data: [DONE]');
      const retried = await eventuallyTrue(
        () => gateway.logger.lines.filter((line) => line.includes('key store unavailable (settleSpend: timed out after 300 ms')).length > 0,
      );
      expect(retried).toBe(true);
      redis.thaw();
      await gateway.proxy.drain();
      expect(gateway.logger.lines.filter((line) => line.includes('reconcile by hand'))).toEqual([]);
      const ids = streams.map((r) => r.headers.get('x-request-id') as string);
      expect([...attempts.keys()].sort()).toEqual([...ids].sort());
      // Sent at least twice each: the attempt given up on, then the retry (and any later one, while Redis still hung).
      for (const id of ids) expect(attempts.get(id), id).toBeGreaterThanOrEqual(2);
      await expectSettledOnceThroughRoutes(
        gateway,
        10,
        streams.map((r, i) => ({
          requestId: r.headers.get('x-request-id') as string,
          model: i === 2 ? 'mock-family-a' : 'mock-model',
          cost: 0.028,
          promptTokens: 12,
          completionTokens: 8,
        })),
      );
    } finally {
      redis.thaw();
      await gateway.close();
      await store.close();
    }
  });

  it('a settlement sent while Redis hangs, given up and retried, is written once when Redis answers both', async () => {
    const store = new KeyvKeyStore(redisKeyv(redis.url), { prefix: runPrefix() });
    try {
      const owner = await store.createAccount(sampleAccount({ balance: 10, createdAt: Date.parse('2026-11-22T00:00:00Z') }));
      const key = await store.insertKey(sampleKeyRecord(owner.id));
      const now = Date.parse('2026-11-22T12:00:00Z');
      const reserved = await store.reserveSpend({
        keyId: key.id,
        accountId: owner.id,
        amount: 2,
        period: null,
        now,
        expiresAt: now + 60_000,
      });
      if (!reserved.ok) throw new Error('the reservation was refused');
      const settlement = {
        keyId: key.id,
        accountId: owner.id,
        holdId: reserved.holdId,
        cost: 1.5,
        period: null,
        now: now + 1,
        usage: { model: 'gpt-4o', promptTokens: 10, completionTokens: 20, requestId: 'req_once', upstreamId: 'chatcmpl-once' },
      };
      redis.freeze();
      // The first attempt is sent and hangs (its caller's timeout gave up on it); the retry is sent behind it.
      const first = store.settleSpend(settlement);
      const retry = store.settleSpend(settlement);
      redis.thaw();
      const [written, again] = await Promise.all([first, retry]);
      expect(again).toEqual(written);
      expect((await store.listLedger(owner.id, { limit: 10 })).entries).toEqual([
        written,
        expect.objectContaining({ reference: 'opening' }),
      ]);
      expect(await store.findUsageEntry(owner.id, 'chatcmpl-once')).toEqual(written);
      const account = await store.getAccount(owner.id);
      expect({ balance: account?.balance, reserved: account?.reserved }).toEqual({ balance: 8.5, reserved: 0 });
      expect((await store.getUsage(owner.id, { from: '2026-11-22', to: '2026-11-22' })).map((row) => row.requests)).toEqual([1]);
    } finally {
      redis.thaw();
      await store.close();
    }
  });

  it('answers 503 when Redis is unreachable from the start', async () => {
    const port = redis.port;
    await redis.stop();
    try {
      const store = new KeyvKeyStore(redisKeyv(`redis://127.0.0.1:${port}`), { prefix: runPrefix() });
      const logger = recordingLogger();
      const app = buildApp('express5', store, { hasher, logger, storeTimeoutMs: 300 });
      // A well-formed key (valid checksum) needs a store read, which cannot happen: 503, never 401.
      const response = await request(app)
        .get('/v1/whoami')
        .set('Authorization', `Bearer ${generateApiKey('proxy').value}`);
      expect(answer(response)).toEqual(UNAVAILABLE);
      expect(logger.lines).toHaveLength(1);
      await store.close();
    } finally {
      await redis.restart();
    }
  });
});
