import { type IncomingMessage, ServerResponse } from 'node:http';
import express from 'express';
import request from 'supertest';
import { describe, expect, it, vi } from 'vitest';
import {
  type AccountRecord,
  type Awaitable,
  type CounterState,
  type KeyRecord,
  type KeyStore,
  MemoryKeyStore,
  type ModelSwitchContext,
  modelSwitchAuth,
} from '../../src/index.js';
import { FRAMEWORKS, buildApp } from '../app.js';
import { bearerRequest } from '../bearer-request.js';
import { fastHasher, recordingLogger, seedAccount, testClock } from '../helpers.js';

const hasher = fastHasher();
const UNAVAILABLE = {
  error: { message: 'The key store is unavailable. Please retry shortly.', type: 'api_error', code: 'store_unavailable' },
};

/** Calls the middleware once; reports whether next() ran before it returned, and what it set. */
async function callOnce(middleware: ReturnType<typeof modelSwitchAuth>, key: string) {
  const req = bearerRequest(key);
  const res = new ServerResponse(req);
  let nextCalls = 0;
  let nextError: unknown;
  const passed = new Promise<void>((resolve) => {
    middleware(req, res, (error) => {
      nextCalls++;
      nextError = error;
      resolve();
    });
  });
  const synchronous = nextCalls === 1;
  await passed;
  return {
    synchronous,
    nextError,
    context: (req as IncomingMessage & { modelSwitch?: ModelSwitchContext }).modelSwitch,
    headers: res.getHeaders(),
  };
}

type HotPathCall = 'getKeyByHandle' | 'getAccount' | 'hitCounter';

/** The same MemoryKeyStore seen through a wrapper whose `promised` hot-path calls answer promises, as a store doing I/O does. */
function behindPromises(
  inner: MemoryKeyStore,
  promised: readonly HotPathCall[] = ['getKeyByHandle', 'getAccount', 'hitCounter'],
): KeyStore {
  return new Proxy(inner, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      const bound = value.bind(target);
      return (promised as readonly PropertyKey[]).includes(property) ? async (...args: unknown[]) => bound(...args) : bound;
    },
  });
}

describe('one store interface: the hot path answered at once or with a promise', () => {
  it('passes a cached key on MemoryKeyStore with next() called before the middleware returns, exactly as a store answering promises would', async () => {
    const clock = testClock();
    const store = new MemoryKeyStore();
    const seeded = await seedAccount(store, { hasher, now: clock.now() });
    const sync = modelSwitchAuth(store, { hasher, now: clock.now });
    const viaPromises = modelSwitchAuth(behindPromises(store), { hasher, now: clock.now });

    const first = await callOnce(sync, seeded.proxyKey);
    expect(first.synchronous).toBe(false); // Not verified yet: scrypt runs asynchronously.
    const second = await callOnce(sync, seeded.proxyKey);
    const third = await callOnce(viaPromises, seeded.proxyKey);
    expect(second.synchronous).toBe(true);
    expect(third.synchronous).toBe(false);
    expect([first.nextError, second.nextError, third.nextError]).toEqual([undefined, undefined, undefined]);
    const resetSeconds = String(Math.ceil((10_000 - (clock.now() % 10_000)) / 1000));
    expect(second.headers).toEqual({
      'ratelimit-policy': '1000;w=10',
      'ratelimit-limit': '1000',
      'ratelimit-remaining': '998',
      'ratelimit-reset': resetSeconds,
    });
    expect(third.headers).toEqual({ ...second.headers, 'ratelimit-remaining': '997' });
    // lastUsedAt was written by the first request only: all three saw the same record.
    expect(second.context).toEqual(third.context);
    expect(second.context).toEqual({
      key: {
        id: seeded.proxyKeyId,
        handle: expect.any(String),
        type: 'proxy',
        accountId: seeded.account.id,
        name: 'My Production Key',
        prefix: seeded.proxyKey.slice(0, 7),
        active: true,
        createdAt: clock.now(),
        expiresAt: null,
        lastUsedAt: clock.now(),
        usage: 0,
        usagePeriod: null,
        reserved: 0,
        limit: null,
        limitReset: null,
        rateLimit: null,
        models: null,
        previousKeyExpiresAt: null,
      },
      account: seeded.account,
      usage: 0,
      period: null,
      rateLimit: { requests: 1000, interval: '10s' },
    });
    expect(Object.isFrozen(second.context?.rateLimit)).toBe(true);
  });

  it.each<[string, HotPathCall[]]>([
    ['the key', ['getKeyByHandle']],
    ['the account', ['getAccount']],
    ['the counter', ['hitCounter']],
    ['the account and the counter', ['getAccount', 'hitCounter']],
  ])('admits a cached key alike on a store that answers %s with a promise and the rest at once', async (_case, promised) => {
    const clock = testClock();
    const store = new MemoryKeyStore();
    const seeded = await seedAccount(store, { hasher, now: clock.now() });
    const atOnce = modelSwitchAuth(store, { hasher, now: clock.now });
    const mixed = modelSwitchAuth(behindPromises(store, promised), { hasher, now: clock.now });
    await callOnce(atOnce, seeded.proxyKey); // Verifies the key (scrypt) and writes lastUsedAt.
    const reference = await callOnce(atOnce, seeded.proxyKey);
    const answers = [];
    for (let i = 0; i < 2; i++) answers.push(await callOnce(mixed, seeded.proxyKey));
    expect(answers.map(({ synchronous, nextError, context, headers }) => ({ synchronous, nextError, context, headers }))).toEqual(
      [1, 2].map((i) => ({
        synchronous: false,
        nextError: undefined,
        context: reference.context,
        headers: { ...reference.headers, 'ratelimit-remaining': String(998 - i) },
      })),
    );
  });

  it.each(FRAMEWORKS)(
    'under %s, answers a deactivated, expired or unknown cached key with the same errors as before',
    async (framework) => {
      const clock = testClock();
      const store = new MemoryKeyStore();
      const seeded = await seedAccount(store, { hasher, now: clock.now() });
      const app = buildApp(framework, store, { hasher, now: clock.now });
      const ok = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
      expect({ status: ok.status, body: ok.body }).toEqual({
        status: 200,
        body: { keyId: seeded.proxyKeyId, accountId: seeded.account.id },
      });
      await store.updateKey(seeded.proxyKeyId, { active: false });
      const off = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
      expect({ status: off.status, type: off.headers['content-type'], body: off.body }).toEqual({
        status: 403,
        type: 'application/json',
        body: { error: { message: 'API key has been deactivated', type: 'permission_error', code: 'key_deactivated' } },
      });
      await store.updateKey(seeded.proxyKeyId, { active: true, expiresAt: clock.now() + 1000 });
      clock.advance(1000);
      const expired = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
      expect({ status: expired.status, body: expired.body }).toEqual({
        status: 401,
        body: { error: { message: 'API key has expired', type: 'authentication_error', code: 'expired_api_key' } },
      });
      await store.deleteKey(seeded.proxyKeyId);
      const gone = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
      expect({ status: gone.status, body: gone.body }).toEqual({
        status: 401,
        body: { error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } },
      });
    },
  );

  it('answers 429 with Retry-After from the synchronous counter', async () => {
    const clock = testClock(Date.parse('2026-11-22T12:00:00Z'));
    const store = new MemoryKeyStore();
    const seeded = await seedAccount(store, { hasher, now: clock.now() });
    await store.updateKey(seeded.proxyKeyId, { rateLimit: { requests: 2, interval: '1m' } });
    const app = buildApp('express5', store, { hasher, now: clock.now });
    const statuses = [];
    for (let i = 0; i < 3; i++)
      statuses.push((await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`)).status);
    expect(statuses).toEqual([200, 200, 429]);
    const limited = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    // On the wire the rate-limit names are lower case (names are case-insensitive; it saves a copy per header).
    const rawNames = (limited as unknown as { res: { rawHeaders: string[] } }).res.rawHeaders.filter((_, i) => i % 2 === 0);
    expect(rawNames.filter((name) => /ratelimit|retry/i.test(name))).toEqual([
      'ratelimit-policy',
      'ratelimit-limit',
      'ratelimit-remaining',
      'ratelimit-reset',
      'Retry-After',
    ]);
    expect({ status: limited.status, headers: limited.headers, body: limited.body }).toEqual({
      status: 429,
      headers: expect.objectContaining({
        'retry-after': '60',
        'ratelimit-policy': '2;w=60',
        'ratelimit-limit': '2',
        'ratelimit-remaining': '0',
        'ratelimit-reset': '60',
        'content-type': 'application/json',
      }),
      body: {
        error: {
          message: 'Rate limit exceeded: 2 requests per 1m for this key. Retry after the window resets.',
          type: 'rate_limit_error',
          code: 'rate_limit_exceeded',
        },
      },
    });
  });

  it('hands the host copies: changing req.modelSwitch changes nothing in the store', async () => {
    const store = new MemoryKeyStore();
    const seeded = await seedAccount(store, { hasher });
    await store.updateKey(seeded.proxyKeyId, { rateLimit: { requests: 50, interval: '1m', tokens: 1000 } });
    const app = express();
    app.use('/v1', modelSwitchAuth(store, { hasher }));
    app.get('/v1/vandal', (req, res) => {
      const context = req.modelSwitch as ModelSwitchContext;
      context.key.name = 'changed';
      (context.key.rateLimit as { requests: number }).requests = 1;
      context.account.balance = 1_000_000;
      res.json({ tokens: context.rateLimit?.tokens });
    });
    for (let i = 0; i < 2; i++) {
      const response = await request(app).get('/v1/vandal').set('Authorization', `Bearer ${seeded.proxyKey}`);
      expect({ status: response.status, body: response.body }).toEqual({ status: 200, body: { tokens: 1000 } });
    }
    const key = await store.getKey(seeded.proxyKeyId);
    expect({ name: key?.name, rateLimit: key?.rateLimit }).toEqual({
      name: 'My Production Key',
      rateLimit: { requests: 50, interval: '1m', tokens: 1000 },
    });
    expect((await store.getAccount(seeded.account.id))?.balance).toBe(10);
  });
});

/** A MemoryKeyStore whose hot-path calls can be made to throw (not reject): an in-process store failing. */
class FaultySyncStore extends MemoryKeyStore {
  failing: { call: HotPathCall; error: Error } | null = null;
  private check(call: HotPathCall): void {
    if (this.failing?.call === call) throw this.failing.error;
  }
  override getKeyByHandle(handle: string): Awaitable<KeyRecord | null> {
    this.check('getKeyByHandle');
    return super.getKeyByHandle(handle);
  }
  override getAccount(id: string): Awaitable<AccountRecord | null> {
    this.check('getAccount');
    return super.getAccount(id);
  }
  override hitCounter(name: string, windowMs: number, now: number, amount?: number): Awaitable<CounterState> {
    this.check('hitCounter');
    return super.hitCounter(name, windowMs, now, amount);
  }
}

describe.each(FRAMEWORKS)('a store call that throws instead of rejecting, under %s', (framework) => {
  it.each(['getKeyByHandle', 'getAccount', 'hitCounter'] as const)(
    '%s: answers 503 store_unavailable, logs one line per outage and one on recovery',
    async (call) => {
      const store = new FaultySyncStore();
      const seeded = await seedAccount(store, { hasher });
      const logger = recordingLogger();
      const app = buildApp(framework, store, { hasher, logger });
      const get = () => request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
      expect((await get()).status).toBe(200); // Now verified: later requests take the synchronous path.
      store.failing = { call, error: new Error('in-process index corrupted') };
      for (let i = 0; i < 2; i++) {
        const response = await get();
        expect({ status: response.status, type: response.headers['content-type'], body: response.body }).toEqual({
          status: 503,
          type: 'application/json',
          body: UNAVAILABLE,
        });
      }
      store.failing = null;
      expect((await get()).status).toBe(200);
      expect(logger.lines).toEqual([
        `error: modelswitch-keys: key store unavailable (${call}: in-process index corrupted); requests that need it answer 503 until it recovers`,
        'warn: modelswitch-keys: key store recovered',
      ]);
    },
  );

  it('logs a TypeError as a refused argument, not as an outage', async () => {
    const store = new FaultySyncStore();
    const seeded = await seedAccount(store, { hasher });
    const logger = recordingLogger();
    const app = buildApp(framework, store, { hasher, logger });
    await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    store.failing = { call: 'hitCounter', error: new TypeError('hitCounter: amount must be a finite number ≥ 0') };
    const response = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect({ status: response.status, body: response.body }).toEqual({ status: 503, body: UNAVAILABLE });
    expect(logger.lines).toEqual([
      'error: modelswitch-keys: the key store refused hitCounter: hitCounter: amount must be a finite number ≥ 0',
    ]);
  });
});

describe('a replaced hot-path method', () => {
  it('runs when getKeyByHandle, getAccount or hitCounter is replaced on the instance or in a subclass: there is no second interface to bypass it', async () => {
    for (const method of ['getKeyByHandle', 'getAccount', 'hitCounter'] as const) {
      const store = new MemoryKeyStore();
      const original = store[method].bind(store) as (...args: never[]) => Promise<unknown>;
      const calls: string[] = [];
      (store as unknown as Record<string, unknown>)[method] = (...args: never[]) => {
        calls.push(method);
        return original(...args);
      };
      const seeded = await seedAccount(store, { hasher });
      const app = buildApp('express5', store, { hasher });
      for (let i = 0; i < 2; i++) {
        expect((await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`)).status).toBe(200);
      }
      expect(calls.length).toBeGreaterThanOrEqual(2);
    }
    class Audited extends MemoryKeyStore {
      seen: string[] = [];
      override async getAccount(id: string): Promise<AccountRecord | null> {
        this.seen.push(id);
        return super.getAccount(id);
      }
    }
    const audited = new Audited();
    const seeded = await seedAccount(audited, { hasher });
    const app = buildApp('express5', audited, { hasher });
    for (let i = 0; i < 2; i++) await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect(audited.seen).toEqual([seeded.account.id, seeded.account.id]);
  });

  it('runs through a wrapper that wraps the methods, and after a patch of the prototype', async () => {
    const inner = new MemoryKeyStore();
    const seeded = await seedAccount(inner, { hasher });
    const calls: string[] = [];
    const wrapped = new Proxy(inner, {
      get(target, property) {
        const value = (target as unknown as Record<PropertyKey, unknown>)[property];
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          calls.push(String(property));
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const app = buildApp('express5', wrapped, { hasher });
    for (let i = 0; i < 2; i++) await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect(calls.filter((c) => c === 'getKeyByHandle')).toHaveLength(2);

    const spy = vi.spyOn(MemoryKeyStore.prototype, 'getKeyByHandle');
    try {
      const store = new MemoryKeyStore();
      const other = await seedAccount(store, { hasher });
      const patchedApp = buildApp('express5', store, { hasher });
      for (let i = 0; i < 2; i++) await request(patchedApp).get('/v1/whoami').set('Authorization', `Bearer ${other.proxyKey}`);
      expect(spy).toHaveBeenCalledTimes(2);
    } finally {
      spy.mockRestore();
    }
  });
});

describe('a store that answers undefined instead of null', () => {
  it('refuses the key (401) when its account is gone, answered at once', async () => {
    class Loose extends MemoryKeyStore {
      dropAccounts = false;
      override getAccount(id: string): Awaitable<AccountRecord | null> {
        return this.dropAccounts ? (undefined as never) : super.getAccount(id);
      }
    }
    const store = new Loose();
    const seeded = await seedAccount(store, { hasher });
    const app = buildApp('express5', store, { hasher });
    const get = () => request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect((await get()).status).toBe(200);
    store.dropAccounts = true;
    const refused = await get();
    expect({ status: refused.status, body: refused.body }).toEqual({
      status: 401,
      body: { error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } },
    });
  });
});
