import express from 'express';
import request from 'supertest';
import { describe, expect, it, vi } from 'vitest';
import { type KeyStore, MemoryKeyStore, proxyRouter } from '../../src/index.js';
import { buildApp } from '../app.js';
import { type SeededAccount, fastHasher, recordingLogger, seedAccount, testClock } from '../helpers.js';

const hasher = fastHasher();
const HOT_PATH = new Set(['getKeyByHandle', 'getAccount', 'hitCounter']);

/**
 * A MemoryKeyStore seen as a remote store: every call answers a promise, on a later tick, and the
 * calls of the hot path are recorded in "waves" (calls made while others are still pending share one).
 */
function remoteStore() {
  const inner = new MemoryKeyStore();
  const waves: string[][] = [];
  let pending = 0;
  let failing = false;
  const store = new Proxy(inner, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      return async (...args: unknown[]) => {
        const hot = HOT_PATH.has(String(property));
        if (hot) {
          if (pending === 0) waves.push([]);
          waves[waves.length - 1]?.push(String(property));
          pending++;
        }
        try {
          await new Promise((resolve) => setImmediate(resolve));
          if (failing) throw new Error('ECONNRESET');
          return await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        } finally {
          if (hot) pending--;
        }
      };
    },
  }) as KeyStore;
  return { inner, store, waves, setFailing: (value: boolean) => (failing = value) };
}

describe('a key seen before, on a store without sync', () => {
  /** The app under test, its GET path, and the 200 body the seeded key gets there. */
  const mounts: Array<
    [string, (store: KeyStore, now: () => number) => ReturnType<typeof buildApp>, string, (seeded: SeededAccount) => unknown]
  > = [
    [
      'modelSwitchAuth',
      (store, now) => buildApp('express5', store, { hasher, now }),
      '/v1/whoami',
      (seeded) => ({ keyId: seeded.proxyKeyId, accountId: seeded.account.id }),
    ],
    [
      'proxyRouter mounted without modelSwitchAuth',
      (store, now) => {
        const app = express();
        const upstreams = [{ name: 'unused', target: 'http://127.0.0.1:9', apiKey: 'sk-unused', models: ['m'] }];
        app.use('/v1', proxyRouter(store, { upstreams, pricing: { m: { inputPerMillion: 1, outputPerMillion: 1 } }, hasher, now }));
        return app;
      },
      '/v1/auth/key',
      (seeded) => ({
        data: {
          label: 'My Production Key',
          usage: 0,
          limit: seeded.account.balance,
          is_free_tier: false,
          rate_limit: { requests: 1000, interval: '10s' },
          key_limit: null,
          key_limit_remaining: null,
          limit_reset: null,
          expires_at: null,
          models: null,
        },
      }),
    ],
  ];

  it.each(mounts)(
    '%s reads the key and the account and counts the hit in one round trip, from the second request on',
    async (_name, mount, path, body) => {
      const clock = testClock();
      const { inner, store, waves } = remoteStore();
      const seeded = await seedAccount(inner, { hasher, now: clock.now() });
      const app = mount(store, clock.now);
      const get = () => request(app).get(path).set('Authorization', `Bearer ${seeded.proxyKey}`);
      const first = await get();
      const firstWaves = waves.splice(0);
      const second = await get();
      const secondWaves = waves.splice(0);
      expect(firstWaves.map((wave) => [...wave].sort())).toEqual([['getKeyByHandle'], ['getAccount', 'hitCounter']]);
      expect(secondWaves.map((wave) => [...wave].sort())).toEqual([['getAccount', 'getKeyByHandle', 'hitCounter']]);
      for (const [response, remaining] of [
        [first, '999'],
        [second, '998'],
      ] as const) {
        expect({ status: response.status, remaining: response.headers['ratelimit-remaining'], body: response.body }).toEqual({
          status: 200,
          remaining,
          body: body(seeded),
        });
      }
    },
  );

  it('refuses a mistyped or junk key without any store call or scrypt, even while the real key is cached', async () => {
    const clock = testClock();
    const { inner, store, waves } = remoteStore();
    const seeded = await seedAccount(inner, { hasher, now: clock.now() });
    const app = buildApp('express5', store, { hasher, now: clock.now });
    expect((await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`)).status).toBe(200);
    waves.splice(0);
    const scryptBefore = hasher.scryptRuns;
    const lastChanged = `${seeded.proxyKey.slice(0, -1)}${seeded.proxyKey.endsWith('A') ? 'B' : 'A'}`;
    const secretChanged = `${seeded.proxyKey.slice(0, 20)}${seeded.proxyKey[20] === 'q' ? 'r' : 'q'}${seeded.proxyKey.slice(21)}`;
    // A key's length, but not its characters or prefix: refused after the cache lookup, by the shape check.
    const notBase62 = `${seeded.proxyKey.slice(0, 20)}_${seeded.proxyKey.slice(21)}`;
    const otherPrefix = `mx-${seeded.proxyKey.slice(3)}`;
    const hashed = vi.spyOn(hasher, 'verifiedHash');
    for (const token of [lastChanged, secretChanged, notBase62, otherPrefix, `ms-${'a'.repeat(10_240)}`, 'not-a-key']) {
      const response = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${token}`);
      expect({ status: response.status, body: response.body }).toEqual({
        status: 401,
        body: { error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } },
      });
    }
    // Only tokens of a key's length are ever hashed for the cache lookup.
    const hashedLengths = [...new Set(hashed.mock.calls.map(([token]) => token.length))];
    hashed.mockRestore();
    expect({ waves, scryptRuns: hasher.scryptRuns - scryptBefore, hashedLengths }).toEqual({
      waves: [],
      scryptRuns: 0,
      hashedLengths: [41],
    });
  });

  it("never counts a guess at a seen key's handle against that key's rate limit", async () => {
    const clock = testClock();
    const { inner, store } = remoteStore();
    const seeded = await seedAccount(inner, { hasher, now: clock.now() });
    const app = buildApp('express5', store, { hasher, now: clock.now });
    expect((await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`)).status).toBe(200);
    const secretAt = 13;
    const guess = `${seeded.proxyKey.slice(0, secretAt)}${seeded.proxyKey[secretAt] === 'a' ? 'b' : 'a'}${seeded.proxyKey.slice(secretAt + 1)}`;
    const { crc32 } = await import('node:zlib');
    // A guess with a correct checksum, as an attacker who knows the handle would send.
    const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
    let n = crc32(guess.slice(0, 35));
    let checksum = '';
    for (let i = 0; i < 6; i++) {
      checksum = alphabet[n % 62] + checksum;
      n = Math.floor(n / 62);
    }
    const wellFormedGuess = guess.slice(0, 35) + checksum;
    for (let i = 0; i < 3; i++) {
      const refused = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${wellFormedGuess}`);
      expect({ status: refused.status, body: refused.body }).toEqual({
        status: 401,
        body: { error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } },
      });
    }
    const next = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect(next.headers['ratelimit-remaining']).toBe('998');
  });

  it('follows changes to the key: a new rate limit counts in its own window, deactivation and deletion answer at once', async () => {
    const clock = testClock(Date.parse('2026-11-22T12:00:00Z'));
    const { inner, store } = remoteStore();
    const seeded = await seedAccount(inner, { hasher, now: clock.now() });
    const app = buildApp('express5', store, { hasher, now: clock.now });
    const get = () => request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect((await get()).headers['ratelimit-policy']).toBe('1000;w=10');
    await inner.updateKey(seeded.proxyKeyId, { rateLimit: { requests: 2, interval: '1m' } });
    const moved = await get();
    expect({ status: moved.status, policy: moved.headers['ratelimit-policy'], remaining: moved.headers['ratelimit-remaining'] }).toEqual({
      status: 200,
      policy: '2;w=60',
      remaining: '1',
    });
    expect((await get()).headers['ratelimit-remaining']).toBe('0');
    const limited = await get();
    expect({ status: limited.status, retryAfter: limited.headers['retry-after'] }).toEqual({ status: 429, retryAfter: '60' });
    clock.advance(60_000);
    await inner.updateKey(seeded.proxyKeyId, { active: false });
    const off = await get();
    expect({ status: off.status, body: off.body }).toEqual({
      status: 403,
      body: { error: { message: 'API key has been deactivated', type: 'permission_error', code: 'key_deactivated' } },
    });
    await inner.deleteKey(seeded.proxyKeyId);
    const gone = await get();
    expect({ status: gone.status, body: gone.body }).toEqual({
      status: 401,
      body: { error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } },
    });
  });

  it('refuses the key (401) when the store answers undefined for its account or record', async () => {
    const { inner, store } = remoteStore();
    const seeded = await seedAccount(inner, { hasher });
    const loose = new Proxy(store, {
      get(target, property) {
        const value = Reflect.get(target, property, target);
        if ((property === 'getAccount' || property === 'getKeyByHandle') && gone.has(property)) return async () => undefined;
        return value;
      },
    });
    const gone = new Set<string>();
    const app = buildApp('express5', loose, { hasher, logger: recordingLogger() });
    const get = () => request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    const invalid = { status: 401, body: { error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } } };
    expect((await get()).status).toBe(200);
    gone.add('getAccount');
    const noAccount = await get();
    expect({ status: noAccount.status, body: noAccount.body }).toEqual(invalid);
    gone.add('getKeyByHandle');
    const noKey = await get();
    expect({ status: noKey.status, body: noKey.body }).toEqual(invalid);
  });

  it('answers 503 when the store fails during the single round trip, and serves again once it is back', async () => {
    const { inner, store, setFailing } = remoteStore();
    const seeded = await seedAccount(inner, { hasher });
    const app = buildApp('express5', store, { hasher, logger: recordingLogger() });
    const get = () => request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect((await get()).status).toBe(200);
    setFailing(true);
    const down = await get();
    expect({ status: down.status, body: down.body }).toEqual({
      status: 503,
      body: { error: { message: 'The key store is unavailable. Please retry shortly.', type: 'api_error', code: 'store_unavailable' } },
    });
    setFailing(false);
    expect((await get()).status).toBe(200);
  });
});
