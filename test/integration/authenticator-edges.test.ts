import request from 'supertest';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { answerWithoutStack } from '../../src/errors/errors.js';
import {
  type AuthOptions,
  type GatewayMetrics,
  type KeyRecord,
  type KeyStore,
  KeyHasher,
  MemoryKeyStore,
  parseApiKey,
} from '../../src/index.js';
import { buildApp } from '../app.js';
import { type SeededAccount, fastHasher, forgeSameHandle, recordingLogger, seedAccount, testClock } from '../helpers.js';

const HOT_PATH = ['getKeyByHandle', 'getAccount', 'hitCounter'] as const;
type HotPathCall = (typeof HOT_PATH)[number];

const TOKEN_CHALLENGE = 'Bearer realm="modelswitch", error="invalid_token"';
const INVALID_KEY = { error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } };
const UNAVAILABLE = {
  error: { message: 'The key store is unavailable. Please retry shortly.', type: 'api_error', code: 'store_unavailable' },
};
const INTERNAL = {
  error: {
    message: 'The server could not handle this request. Please retry; if it persists, contact the operator.',
    type: 'api_error',
    code: 'internal_error',
  },
};
const MINUTE = 60_000;
const HOUR = 3_600_000;

/**
 * A MemoryKeyStore behind a wrapper: the hot-path calls named in `promised` answer a promise on a
 * later tick (as a store doing I/O does), and are recorded in waves (calls made while another is
 * pending share one); `rewrite` changes the key record the store answers (a key changed by another
 * process), `failing` makes calls fail, and `touches` records `touchKey` (written through unless
 * `touchWrites` is false).
 */
function wrappedStore(promised: readonly HotPathCall[]) {
  const inner = new MemoryKeyStore();
  const waves: string[][] = [];
  const touches: Array<[number, number]> = [];
  let pending = 0;
  const state = {
    rewrite: (record: KeyRecord): KeyRecord => record,
    failing: (_operation: string): boolean => false,
    touchWrites: true,
  };
  const store = new Proxy(inner, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== 'function') return value;
      const name = String(property);
      const call = (args: unknown[]): unknown => {
        if (state.failing(name)) throw new Error('ECONNRESET');
        if (name === 'touchKey') {
          touches.push(args as [number, number]);
          if (!state.touchWrites) return undefined;
        }
        const answer = (value as (...a: unknown[]) => unknown).apply(target, args);
        return name === 'getKeyByHandle' && answer ? state.rewrite(answer as KeyRecord) : answer;
      };
      if (!(promised as readonly string[]).includes(name)) return (...args: unknown[]) => call(args);
      return async (...args: unknown[]) => {
        if (pending === 0) waves.push([]);
        waves[waves.length - 1]?.push(name);
        pending++;
        try {
          await new Promise((resolve) => setImmediate(resolve));
          return call(args);
        } finally {
          pending--;
        }
      };
    },
  }) as KeyStore;
  return { inner, store, waves, touches, state };
}

/** GET /v1/whoami with `key`: the whole answer, rate-limit headers included. */
async function whoami(app: ReturnType<typeof buildApp>, key: string) {
  const response = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${key}`);
  const headers: Record<string, string | undefined> = {};
  for (const name of ['www-authenticate', 'retry-after', 'ratelimit-limit', 'ratelimit-remaining']) {
    if (response.headers[name] !== undefined) headers[name] = response.headers[name];
  }
  return { status: response.status, headers, body: response.body as unknown };
}

const refused = { status: 401, headers: { 'www-authenticate': TOKEN_CHALLENGE }, body: INVALID_KEY };
const admitted = (seeded: SeededAccount, remaining: number, keyId = seeded.proxyKeyId, accountId = seeded.account.id) => ({
  status: 200,
  headers: { 'ratelimit-limit': '1000', 'ratelimit-remaining': String(remaining) },
  body: { keyId, accountId },
});
const unlimited = (seeded: SeededAccount) => ({
  status: 200,
  headers: {},
  body: { keyId: seeded.proxyKeyId, accountId: seeded.account.id },
});

async function setUp(promised: readonly HotPathCall[], options: AuthOptions = {}) {
  const clock = testClock();
  const hasher = fastHasher();
  const wrapped = wrappedStore(promised);
  const seeded = await seedAccount(wrapped.inner, { hasher, now: clock.now() });
  const logger = recordingLogger();
  const app = buildApp('express5', wrapped.store, { hasher, now: clock.now, logger, ...options });
  return { ...wrapped, clock, hasher, seeded, logger, app };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('modelSwitchAuth at its edges', () => {
  it('refuses a key whose record the store answers as another type, on every path (scrypt, cached, seen)', async () => {
    const asBilling = (record: KeyRecord): KeyRecord => ({ ...record, type: 'billing' });
    // Not verified yet: scrypt would match the record's hash.
    const cold = await setUp([]);
    cold.state.rewrite = asBilling;
    expect(await whoami(cold.app, cold.seeded.proxyKey)).toEqual(refused);
    // Verified and cached, on a store that answers at once.
    const cached = await setUp([]);
    expect(await whoami(cached.app, cached.seeded.proxyKey)).toEqual(admitted(cached.seeded, 999));
    cached.state.rewrite = asBilling;
    expect(await whoami(cached.app, cached.seeded.proxyKey)).toEqual(refused);
    // Seen before on a store that answers promises.
    const seen = await setUp(HOT_PATH);
    expect(await whoami(seen.app, seen.seeded.proxyKey)).toEqual(admitted(seen.seeded, 999));
    seen.state.rewrite = asBilling;
    expect(await whoami(seen.app, seen.seeded.proxyKey)).toEqual(refused);
  });

  /** Rotates the seeded proxy key through the management API with a grace period of an hour; answers the new secret. */
  async function rotate(app: ReturnType<typeof buildApp>, seeded: SeededAccount): Promise<string> {
    const rotated = await request(app)
      .post(`/api/keys/${seeded.proxyKeyId}/rotate`)
      .set('Authorization', `Bearer ${seeded.billingKey}`)
      .send({ grace_period: '1h' });
    expect(rotated.status).toBe(200);
    return (rotated.body as { key: string }).key;
  }

  it('on a store answering promises, refuses a rotated-out secret after its grace period, whichever secret the process saw last', async () => {
    const { app, clock, seeded } = await setUp(HOT_PATH);
    const oldKey = seeded.proxyKey;
    expect(await whoami(app, oldKey)).toEqual(admitted(seeded, 999));
    const newKey = await rotate(app, seeded);
    clock.advance(HOUR);
    // The process saw the old secret last: the record now holds another hash, and the grace has ended.
    expect(await whoami(app, oldKey)).toEqual(refused);
    clock.advance(10_000);
    expect(await whoami(app, newKey)).toEqual(admitted(seeded, 999));
    // The process saw the new secret last; the old one is still in the verified-key cache.
    expect(await whoami(app, oldKey)).toEqual(refused);
  });

  it('on a store answering promises, counts the first request with a rotated-out secret in its grace period once', async () => {
    const { app, seeded } = await setUp(HOT_PATH);
    expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999));
    const newKey = await rotate(app, seeded);
    // The seen-key path hits the counter before it finds the record's new hash; the full path then uses that hit.
    expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 998));
    expect(await whoami(app, newKey)).toEqual(admitted(seeded, 997));
    expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 996));
  });

  it('refuses a secret rotated out twice, though a grace period is running and the key verified before', async () => {
    const { app, seeded } = await setUp([]);
    const first = seeded.proxyKey;
    expect(await whoami(app, first)).toEqual(admitted(seeded, 999));
    const second = await rotate(app, seeded);
    await rotate(app, seeded);
    expect(await whoami(app, first)).toEqual(refused);
    expect(await whoami(app, second)).toEqual(admitted(seeded, 998));
  });

  it('takes a seen key afresh when the store moved it to another id or account, and remembers it so', async () => {
    const { app, seeded, state, waves } = await setUp(HOT_PATH);
    expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999));
    // Re-created under another id: its own counter, not the old id's.
    state.rewrite = (record) => ({ ...record, id: 99 });
    expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999, 99));
    expect(waves.splice(0)).toEqual([
      ['getKeyByHandle'],
      ['getAccount', 'hitCounter'],
      ['getKeyByHandle', 'getAccount', 'hitCounter'],
      ['getKeyByHandle'],
      ['getAccount', 'hitCounter'],
    ]);
    expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 998, 99));
    expect(waves.splice(0)).toEqual([['getKeyByHandle', 'getAccount', 'hitCounter']]);
  });

  it("answers a seen key's new account when the store moved it to another", async () => {
    const { app, inner, hasher, clock, seeded, state } = await setUp(HOT_PATH, { defaultRateLimit: null });
    const other = await seedAccount(inner, { hasher, now: clock.now() });
    expect(await whoami(app, seeded.proxyKey)).toEqual(unlimited(seeded));
    state.rewrite = (record) => ({ ...record, accountId: other.account.id });
    expect(await whoami(app, seeded.proxyKey)).toEqual({
      ...unlimited(seeded),
      body: { keyId: seeded.proxyKeyId, accountId: other.account.id },
    });
  });

  it('admits two keys seen in turn on a store answering promises in one round trip each', async () => {
    const { app, inner, hasher, clock, seeded, waves } = await setUp(HOT_PATH);
    const second = await seedAccount(inner, { hasher, now: clock.now() });
    expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999));
    expect(await whoami(app, second.proxyKey)).toEqual(admitted(second, 999));
    waves.splice(0);
    expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 998));
    expect(await whoami(app, second.proxyKey)).toEqual(admitted(second, 998));
    expect(waves).toEqual([
      ['getKeyByHandle', 'getAccount', 'hitCounter'],
      ['getKeyByHandle', 'getAccount', 'hitCounter'],
    ]);
  });

  it('refuses every key when the store answers a record without hashes', async () => {
    const { app, clock, seeded, state } = await setUp([]);
    state.rewrite = (record) => {
      const { hash: _hash, previousHash: _previous, ...rest } = record;
      return { ...rest, previousKeyExpiresAt: clock.now() + HOUR } as KeyRecord;
    };
    expect(await whoami(app, seeded.proxyKey)).toEqual(refused);
  });

  it('never takes a guess for a seen key whose broken record has no current hash', async () => {
    const { app, clock, seeded, state } = await setUp(HOT_PATH);
    // The key passes as the previous secret of a rotation; the process remembers the record's hash, undefined.
    state.rewrite = (record) => ({
      ...record,
      hash: undefined as unknown as string,
      previousHash: record.hash,
      previousKeyExpiresAt: clock.now() + HOUR,
    });
    expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999));
    expect(await whoami(app, forgeSameHandle(seeded.proxyKey))).toEqual(refused);
  });

  it('admits a key verified by another middleware sharing the hasher, though this one has seen only other keys', async () => {
    const { app, store, inner, hasher, clock, seeded } = await setUp(HOT_PATH);
    const second = await seedAccount(inner, { hasher, now: clock.now() });
    const other = buildApp('express5', store, { hasher, now: clock.now });
    expect(await whoami(other, second.proxyKey)).toEqual(admitted(second, 999));
    expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999));
    expect(await whoami(app, second.proxyKey)).toEqual(admitted(second, 998));
  });

  describe('without a rate limit', () => {
    it.each<[string, readonly HotPathCall[]]>([
      ['answering at once', []],
      ['answering the account with a promise', ['getAccount']],
      ['answering promises', HOT_PATH],
    ])('admits a key on a store %s with no rate-limit headers and no counter hit', async (_kind, promised) => {
      const { app, seeded, waves } = await setUp(promised, { defaultRateLimit: null });
      expect(await whoami(app, seeded.proxyKey)).toEqual(unlimited(seeded));
      expect(await whoami(app, seeded.proxyKey)).toEqual(unlimited(seeded));
      expect(waves.flat()).not.toContain('hitCounter');
    });

    it.each<[string, readonly HotPathCall[]]>([
      ['answering at once', []],
      ['answering the account with a promise', ['getAccount']],
      ['answering promises', HOT_PATH],
    ])('admits a key whose rate limit interval is unreadable on a store %s, and warns on each request', async (_kind, promised) => {
      const { app, seeded, state, waves, logger } = await setUp(promised);
      state.rewrite = (record) => ({ ...record, rateLimit: { requests: 1, interval: 'fortnight' } });
      expect(await whoami(app, seeded.proxyKey)).toEqual(unlimited(seeded));
      expect(await whoami(app, seeded.proxyKey)).toEqual(unlimited(seeded));
      expect(waves.flat()).not.toContain('hitCounter');
      const warning = `warn: modelswitch-keys: key ${seeded.proxyKeyId} has an unreadable rate limit interval; not rate limiting it`;
      expect(logger.lines).toEqual([warning, warning]);
    });
  });

  describe('names the store call that failed', () => {
    const unavailable = { status: 503, headers: {}, body: UNAVAILABLE };
    const RECOVERED = 'warn: modelswitch-keys: key store recovered';
    const outage = (operation: string) =>
      `error: modelswitch-keys: key store unavailable (${operation}: ECONNRESET); requests that need it answer 503 until it recovers`;

    // The headers: the counter answered at once in the first case, before the account failed.
    it.each<[HotPathCall, readonly HotPathCall[], boolean, Record<string, string>]>([
      ['getAccount', ['getAccount'], true, { 'ratelimit-limit': '1000', 'ratelimit-remaining': '998' }],
      ['hitCounter', ['hitCounter'], true, {}],
      ['getAccount', HOT_PATH, false, {}],
      ['getKeyByHandle', HOT_PATH, true, {}],
      ['getAccount', HOT_PATH, true, {}],
      ['hitCounter', HOT_PATH, true, {}],
    ])('%s on a store answering %j with a promise (the key seen before: %s)', async (operation, promised, before, headers) => {
      const { app, seeded, state, logger } = await setUp(promised);
      if (before) expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999));
      state.failing = (name) => name === operation;
      expect(await whoami(app, seeded.proxyKey)).toEqual({ ...unavailable, headers });
      // A call made beside the failing one may answer after it: the guard then logs a recovery.
      expect(logger.lines.filter((line) => line !== RECOVERED)).toEqual([outage(operation)]);
    });

    it('getKeyByHandle when a seen key changed and the store fails as it is read again', async () => {
      const { app, seeded, state, logger } = await setUp(HOT_PATH);
      expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999));
      let reads = 0;
      state.rewrite = (record) => ({ ...record, id: 99 });
      state.failing = (name) => name === 'getKeyByHandle' && ++reads > 1;
      expect(await whoami(app, seeded.proxyKey)).toEqual(unavailable);
      expect(logger.lines).toEqual([outage('getKeyByHandle')]);
    });
  });

  describe('lastUsedAt', () => {
    it('is not written for a key used less than a minute ago, even by a process that has not written it', async () => {
      const { app, store, clock, hasher, seeded, touches } = await setUp([]);
      expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999));
      clock.advance(MINUTE / 2);
      const fresh = buildApp('express5', store, { hasher, now: clock.now });
      expect(await whoami(fresh, seeded.proxyKey)).toEqual(admitted(seeded, 999));
      expect(touches).toEqual([[seeded.proxyKeyId, clock.now() - MINUTE / 2]]);
    });

    it('is written at the epoch for a key never used', async () => {
      const hasher = fastHasher();
      const wrapped = wrappedStore([]);
      const seeded = await seedAccount(wrapped.inner, { hasher, now: 0 });
      const app = buildApp('express5', wrapped.store, { hasher, now: () => 0 });
      expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999));
      expect(wrapped.touches).toEqual([[seeded.proxyKeyId, 0]]);
    });

    it('is written once a minute per key while the store has not recorded it yet', async () => {
      const { app, inner, clock, hasher, seeded, state, touches } = await setUp([]);
      const second = await seedAccount(inner, { hasher, now: clock.now() });
      state.touchWrites = false;
      const start = clock.now();
      expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999));
      expect(await whoami(app, second.proxyKey)).toEqual(admitted(second, 999));
      clock.advance(MINUTE - 1);
      expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999));
      expect(await whoami(app, second.proxyKey)).toEqual(admitted(second, 999));
      expect(touches).toEqual([
        [seeded.proxyKeyId, start],
        [second.proxyKeyId, start],
      ]);
      clock.advance(1);
      expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999));
      expect(touches.slice(2)).toEqual([[seeded.proxyKeyId, start + MINUTE]]);
    });
  });

  it('reports each authentication to the metrics with its duration in seconds and its outcome', async () => {
    const real = performance.now.bind(performance);
    // A time origin far from 0, so a sum of two readings could not pass for a difference.
    vi.spyOn(performance, 'now').mockImplementation(() => real() + 1e9);
    const authentications: Array<[number, string]> = [];
    const metrics: GatewayMetrics = {
      request: () => {},
      authentication: (seconds, outcome) => authentications.push([seconds, outcome]),
      upstream: () => {},
      metered: () => {},
      storeFailure: () => {},
      reservationHeld: () => {},
      watchQueue: () => {},
    };
    let clockBroken = false;
    const clock = testClock();
    const { app, seeded } = await setUp([], {
      metrics,
      now: () => {
        if (clockBroken) throw new Error('clock broke');
        return clock.now();
      },
    });
    expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 999)); // scrypt: a promise
    expect(await whoami(app, forgeSameHandle(seeded.proxyKey))).toEqual(refused); // scrypt, refused
    expect(await whoami(app, seeded.proxyKey)).toEqual(admitted(seeded, 998)); // cached: at once
    clockBroken = true;
    expect(await whoami(app, seeded.proxyKey)).toEqual({ status: 500, headers: {}, body: INTERNAL });
    expect(authentications.map(([, outcome]) => outcome)).toEqual(['ok', 'invalid_api_key', 'ok', 'internal_error']);
    for (const [seconds] of authentications) expect(seconds >= 0 && seconds < 5).toBe(true);
    // scrypt takes at least a millisecond: seconds, not milliseconds.
    expect(authentications[0]?.[0]).toBeGreaterThan(0);
  });

  it('logs the first verification refused for scrypt load, then at most one a minute, and no other refusal', async () => {
    const clock = testClock();
    let failure: Error = answerWithoutStack('verification_busy', 'Too many API keys are being verified right now. Please retry shortly.', {
      headers: { 'Retry-After': '3' },
    });
    class RefusingHasher extends KeyHasher {
      override async matchingHash(): Promise<string | undefined> {
        throw failure;
      }
    }
    const store = new MemoryKeyStore();
    const seeded = await seedAccount(store, { hasher: fastHasher(), now: clock.now() });
    const logger = recordingLogger();
    const app = buildApp('express5', store, { hasher: new RefusingHasher({ scrypt: { logN: 10 } }), now: clock.now, logger });
    const busy = {
      status: 503,
      headers: { 'retry-after': '3' },
      body: {
        error: {
          message: 'Too many API keys are being verified right now. Please retry shortly.',
          type: 'api_error',
          code: 'verification_busy',
        },
      },
    };
    const line =
      'warn: modelswitch-keys: too many key verifications are waiting for scrypt; new ones are refused with 503 verification_busy until the queue drains (KeyHasher maxQueuedVerifications)';
    expect(await whoami(app, seeded.proxyKey)).toEqual(busy);
    clock.advance(MINUTE - 1);
    expect(await whoami(app, seeded.proxyKey)).toEqual(busy);
    expect(logger.lines).toEqual([line]);
    clock.advance(1);
    expect(await whoami(app, seeded.proxyKey)).toEqual(busy);
    expect(logger.lines).toEqual([line, line]);
    clock.advance(MINUTE);
    failure = answerWithoutStack('server_busy', 'busy elsewhere');
    expect((await whoami(app, seeded.proxyKey)).status).toBe(503);
    failure = new Error('scrypt broke');
    expect(await whoami(app, seeded.proxyKey)).toEqual({ status: 500, headers: {}, body: INTERNAL });
    expect(logger.lines.filter((entry) => entry === line)).toEqual([line, line]);
    expect(parseApiKey(seeded.proxyKey)?.type).toBe('proxy');
  });
});
