import request from 'supertest';
import { describe, expect, it } from 'vitest';
import { type KeyStore, MemoryKeyStore } from '../../src/index.js';
import { FRAMEWORKS, buildApp } from '../app.js';
import { fastHasher, recordingLogger, seedAccount } from '../helpers.js';

const hasher = fastHasher();
const UNAVAILABLE = {
  error: { message: 'The key store is unavailable. Please retry shortly.', type: 'api_error', code: 'store_unavailable' },
};

/** GETs each path with its key and expects the contract's 503 `store_unavailable` JSON. */
async function expectUnavailable(app: Parameters<typeof request>[0], gets: ReadonlyArray<readonly [string, string]>): Promise<void> {
  for (const [path, key] of gets) {
    const response = await request(app).get(path).set('Authorization', `Bearer ${key}`);
    expect({ path, status: response.status, type: response.headers['content-type'], body: response.body }).toEqual({
      path,
      status: 503,
      type: 'application/json',
      body: UNAVAILABLE,
    });
  }
}

type Mode = 'ok' | 'throw' | 'hang';

/** A MemoryKeyStore whose every call can be switched to throw or to never answer. */
function faultyStore(): { store: KeyStore; setMode: (mode: Mode) => void } {
  const inner = new MemoryKeyStore();
  let mode: Mode = 'ok';
  const store = new Proxy(inner, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (mode === 'throw') return Promise.reject(new Error('ECONNREFUSED 127.0.0.1:6379'));
        if (mode === 'hang') return new Promise(() => {});
        return value.apply(target, args);
      };
    },
  });
  return { store, setMode: (next) => (mode = next) };
}

describe.each(FRAMEWORKS)('a failing store under %s', (framework) => {
  it('answers 503 store_unavailable on /v1 and /api when the store throws, never letting a request through', async () => {
    const { store, setMode } = faultyStore();
    const seeded = await seedAccount(store, { hasher });
    const logger = recordingLogger();
    const app = buildApp(framework, store, { hasher, logger });
    setMode('throw');
    await expectUnavailable(app, [
      ['/v1/whoami', seeded.proxyKey],
      ['/v1/auth/key', seeded.proxyKey],
      ['/api/keys', seeded.billingKey],
    ]);
    const created = await request(app).post('/api/keys').set('Authorization', `Bearer ${seeded.billingKey}`).send({ name: 'x' });
    expect(created.status).toBe(503);
    expect(logger.lines).toEqual([
      'error: modelswitch-keys: key store unavailable (getKeyByHandle: ECONNREFUSED 127.0.0.1:6379); requests that need it answer 503 until it recovers',
    ]);
    setMode('ok');
    const recovered = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect(recovered.status).toBe(200);
    expect(logger.lines.at(-1)).toBe('warn: modelswitch-keys: key store recovered');
    expect(logger.lines).toHaveLength(2);
  });

  /** A logger that throws, and one that returns a rejecting promise (an async logger whose sink is down). */
  const throwing = (): void => {
    throw new Error('log sink down');
  };
  const asyncRejecting = (() => Promise.reject(new Error('log sink down'))) as () => void;
  const brokenLoggers = [
    ['throws', { warn: throwing, error: throwing }],
    ['rejects asynchronously', { warn: asyncRejecting, error: asyncRejecting }],
  ] as const;

  it.each(brokenLoggers)(
    'answers the same 503 when the host logger %s (a broken log sink never turns it into a 500)',
    async (_kind, logger) => {
      const { store, setMode } = faultyStore();
      const seeded = await seedAccount(store, { hasher });
      const app = buildApp(framework, store, { hasher, logger });
      setMode('throw');
      await expectUnavailable(app, [
        ['/v1/whoami', seeded.proxyKey],
        ['/api/keys', seeded.billingKey],
      ]);
      setMode('ok');
      expect((await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`)).status).toBe(200);
    },
  );

  // A bug is a 500 with a fixed message (it was a 503 store_unavailable: a clock that throws is no store outage).
  it.each(brokenLoggers)('answers an unexpected error (a clock that throws) with 500 when the host logger %s', async (_kind, logger) => {
    const store = new MemoryKeyStore();
    const seeded = await seedAccount(store, { hasher });
    const app = buildApp(framework, store, {
      hasher,
      logger,
      now: () => {
        throw new Error('clock broke');
      },
    });
    for (const [path, key] of [
      ['/v1/whoami', seeded.proxyKey],
      ['/api/keys', seeded.billingKey],
    ] as const) {
      const response = await request(app).get(path).set('Authorization', `Bearer ${key}`);
      expect({ path, status: response.status, type: response.headers['content-type'], body: response.body }).toEqual({
        path,
        status: 500,
        type: 'application/json',
        body: {
          error: {
            message: 'The server could not handle this request. Please retry; if it persists, contact the operator.',
            type: 'api_error',
            code: 'internal_error',
          },
        },
      });
    }
  });

  it('answers 503 when the store hangs longer than storeTimeoutMs', async () => {
    const { store, setMode } = faultyStore();
    const seeded = await seedAccount(store, { hasher });
    const logger = recordingLogger();
    const app = buildApp(framework, store, { hasher, logger, storeTimeoutMs: 50 });
    setMode('hang');
    const [onV1, onApi] = await Promise.all([
      request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`),
      request(app).get('/api/keys/1').set('Authorization', `Bearer ${seeded.billingKey}`),
    ]);
    expect({ status: onV1.status, body: onV1.body }).toEqual({ status: 503, body: UNAVAILABLE });
    expect({ status: onApi.status, body: onApi.body }).toEqual({ status: 503, body: UNAVAILABLE });
    expect(logger.lines).toHaveLength(1);
    expect(logger.lines[0]).toMatch(/timed out after 50 ms/);
  });
});

describe('a store that fails in the middle of a request', () => {
  it('answers 503 when only the rate-limit counter fails', async () => {
    const inner = new MemoryKeyStore();
    const seeded = await seedAccount(inner, { hasher });
    inner.hitCounter = () => Promise.reject(new Error('counter down'));
    const app = buildApp('express5', inner, { hasher, logger: recordingLogger() });
    const response = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect({ status: response.status, body: response.body }).toEqual({ status: 503, body: UNAVAILABLE });
  });

  it('still answers when only the lastUsedAt write fails, and logs it', async () => {
    const inner = new MemoryKeyStore();
    const seeded = await seedAccount(inner, { hasher });
    inner.touchKey = () => Promise.reject(new Error('read-only replica'));
    const logger = recordingLogger();
    const app = buildApp('express5', inner, { hasher, logger });
    const response = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect(response.status).toBe(200);
    await new Promise((resolve) => setImmediate(resolve));
    expect(logger.lines[0]).toBe(
      'error: modelswitch-keys: key store unavailable (touchKey: read-only replica); requests that need it answer 503 until it recovers',
    );
    // Whether the next successful call logs "recovered" depends on which promise settles first.
    for (const line of logger.lines.slice(1)) expect(line).toBe('warn: modelswitch-keys: key store recovered');
  });
});

describe('a store that refuses an argument', () => {
  it('answers 503 and logs the refusal as a bug, not as an outage', async () => {
    const inner = new MemoryKeyStore();
    const seeded = await seedAccount(inner, { hasher });
    inner.hitCounter = () => Promise.reject(new TypeError('hitCounter: amount must be a finite number ≥ 0'));
    const logger = recordingLogger();
    const app = buildApp('express5', inner, { hasher, logger });
    const response = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect({ status: response.status, body: response.body }).toEqual({ status: 503, body: UNAVAILABLE });
    expect(logger.lines).toEqual([
      'error: modelswitch-keys: the key store refused hitCounter: hitCounter: amount must be a finite number ≥ 0',
    ]);
  });
});
