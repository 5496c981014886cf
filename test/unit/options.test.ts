import Keyv from 'keyv';
import { describe, expect, it } from 'vitest';
import { type AuthOptions, resolveAuthOptions } from '../../src/auth/options.js';
import {
  DEFAULT_KEYS_MAX_BODY_BYTES,
  DEFAULT_KEY_TYPE,
  DEFAULT_RATE_LIMIT,
  DEFAULT_SCRYPT,
  DEFAULT_STORE_TIMEOUT_MS,
} from '../../src/defaults.js';
import { ConfigurationError, type ConfigurationErrorCode } from '../../src/errors/configuration-error.js';
import { KeyHasher, type KeyHasherOptions, defaultKeyHasher } from '../../src/keys/hashing.js';
import { type KeysRouterOptions, resolveKeysRouterOptions } from '../../src/management/options.js';
import { KeyvKeyStore, MemoryKeyStore, keysRouter, modelSwitchAuth, proxyRouter } from '../../src/index.js';
import { resolveStoreGuardOptions } from '../../src/store/guard.js';
import { type KeyStoreSuiteOptions, keyStoreSuite } from '../../src/testing/index.js';
import { recordingLogger } from '../helpers.js';

/** What `create` throws, whole: its class, code and message (a test fails if it throws nothing or something else). */
function thrown(create: () => unknown): { class: string; code: ConfigurationErrorCode; message: string } {
  try {
    create();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigurationError);
    const { name, code, message } = error as ConfigurationError;
    return { class: name, code, message };
  }
  throw new Error('created without an error');
}

const RATE_LIMIT_MESSAGE =
  'modelSwitchAuth: options.defaultRateLimit needs an integer requests ≥ 1 and an interval like "10s", "1m", "1h" or "1d" (at most 366 days), and tokens, if set, an integer ≥ 1, e.g. { requests: 1000, interval: "10s" }, or null for none';

const option = (message: string) => ({ class: 'ConfigurationError', code: 'ERR_MS_OPTION', message });

describe('resolveAuthOptions', () => {
  it('answers every option, the defaults from their named constants', () => {
    const resolved = resolveAuthOptions(undefined, 'modelSwitchAuth');
    expect({ ...resolved, logger: typeof resolved.logger.warn }).toEqual({
      keyType: DEFAULT_KEY_TYPE,
      hasher: defaultKeyHasher(),
      defaultRateLimit: DEFAULT_RATE_LIMIT,
      now: Date.now,
      storeTimeoutMs: DEFAULT_STORE_TIMEOUT_MS,
      logger: 'function',
    });
    expect([DEFAULT_KEY_TYPE, DEFAULT_RATE_LIMIT, DEFAULT_STORE_TIMEOUT_MS]).toEqual(['proxy', { requests: 1000, interval: '10s' }, 2000]);
    expect(Object.isFrozen(resolved.defaultRateLimit)).toBe(true);
  });

  it("keeps the host's values, copies and freezes its rate limit (never changing the caller's object), and makes its logger safe", () => {
    const logger = recordingLogger();
    const hasher = new KeyHasher({ scrypt: { logN: 10 } });
    const now = () => 42;
    const defaultRateLimit = { requests: 5, interval: '1m', tokens: 100 };
    const options: AuthOptions = { keyType: 'billing', hasher, now, defaultRateLimit, storeTimeoutMs: 250, logger };
    const resolved = resolveAuthOptions(options, 'keysRouter');
    resolved.logger.warn('a line');
    expect({ ...resolved, logger: logger.lines }).toEqual({
      keyType: 'billing',
      hasher,
      now,
      defaultRateLimit: { requests: 5, interval: '1m', tokens: 100 },
      storeTimeoutMs: 250,
      logger: ['warn: a line'],
    });
    expect({ copied: resolved.defaultRateLimit !== defaultRateLimit, frozen: Object.isFrozen(defaultRateLimit) }).toEqual({
      copied: true,
      frozen: false,
    });
    expect(resolveAuthOptions({ defaultRateLimit: null }, 'modelSwitchAuth').defaultRateLimit).toBeNull();
  });

  it.each<[string, unknown, string]>([
    ['options that are not an object', 'fast', 'modelSwitchAuth: options must be an object, e.g. { storeTimeoutMs: 2000 }, or left out'],
    [
      'keyType admin',
      { keyType: 'admin' },
      "modelSwitchAuth: options.keyType must be 'proxy' (ms- keys, the inference API) or 'billing' (mk- keys)",
    ],
    [
      'a hasher that is no KeyHasher',
      { hasher: {} },
      'modelSwitchAuth: options.hasher must be a KeyHasher, e.g. new KeyHasher({ cacheSize: 50_000 })',
    ],
    ['a clock that is no function', { now: 5 }, 'modelSwitchAuth: options.now must be a function answering epoch ms, like Date.now'],
    [
      'an onEvent that is no function',
      { onEvent: 'audit' },
      'modelSwitchAuth: options.onEvent must be a function (event) => void, e.g. (event) => auditLog.info(event), or left out',
    ],
    ['a rate limit of 0 requests', { defaultRateLimit: { requests: 0, interval: '1s' } }, RATE_LIMIT_MESSAGE],
    ['a rate limit of 1.5 requests', { defaultRateLimit: { requests: 1.5, interval: '1s' } }, RATE_LIMIT_MESSAGE],
    ['an unreadable interval', { defaultRateLimit: { requests: 1, interval: 'soon' } }, RATE_LIMIT_MESSAGE],
    ['an interval past 366 days', { defaultRateLimit: { requests: 1, interval: '367d' } }, RATE_LIMIT_MESSAGE],
    ['0 tokens a minute', { defaultRateLimit: { requests: 1, interval: '1s', tokens: 0 } }, RATE_LIMIT_MESSAGE],
    ['a rate limit that is a string', { defaultRateLimit: '1000/10s' }, RATE_LIMIT_MESSAGE],
    ...[0, -1, Number.NaN, Number.POSITIVE_INFINITY, '2000'].map((value): [string, unknown, string] => [
      `storeTimeoutMs ${String(value)}`,
      { storeTimeoutMs: value },
      'modelSwitchAuth: options.storeTimeoutMs must be a positive number of milliseconds, e.g. 2000',
    ]),
    [
      'a logger without error()',
      { logger: { warn() {} } },
      'modelSwitchAuth: options.logger must be an object with warn(message) and error(message), like console or a pino logger',
    ],
  ])('refuses %s with a ConfigurationError that says how to fix it', (_case, options, message) => {
    expect(thrown(() => resolveAuthOptions(options as AuthOptions, 'modelSwitchAuth'))).toEqual(option(message));
    // The factory throws the very same error when it is created.
    if (options !== null && typeof options === 'object') {
      expect(thrown(() => modelSwitchAuth(new MemoryKeyStore(), options as AuthOptions))).toEqual(option(message));
    }
  });
});

describe('resolveStoreGuardOptions', () => {
  it('answers the default timeout and a safe console logger; names the factory in its refusals', () => {
    const resolved = resolveStoreGuardOptions({}, 'proxyRouter');
    expect({ timeout: resolved.storeTimeoutMs, logger: Object.keys(resolved.logger).sort() }).toEqual({
      timeout: 2000,
      logger: ['error', 'warn'],
    });
    expect(thrown(() => resolveStoreGuardOptions({ storeTimeoutMs: -5 }, 'proxyRouter'))).toEqual(
      option('proxyRouter: options.storeTimeoutMs must be a positive number of milliseconds, e.g. 2000'),
    );
  });
});

describe('resolveKeysRouterOptions', () => {
  it('answers every option, always for billing keys, the defaults from their named constants', () => {
    const resolved = resolveKeysRouterOptions(undefined);
    expect({ maxBodyBytes: resolved.maxBodyBytes, keyType: resolved.auth.keyType, timeout: resolved.auth.storeTimeoutMs }).toEqual({
      maxBodyBytes: DEFAULT_KEYS_MAX_BODY_BYTES,
      keyType: 'billing',
      timeout: DEFAULT_STORE_TIMEOUT_MS,
    });
    expect(DEFAULT_KEYS_MAX_BODY_BYTES).toBe(16_384);
    const asked = resolveKeysRouterOptions({ maxBodyBytes: 1024, keyType: 'proxy' } as KeysRouterOptions);
    expect({ maxBodyBytes: asked.maxBodyBytes, keyType: asked.auth.keyType }).toEqual({ maxBodyBytes: 1024, keyType: 'billing' });
    expect(resolveKeysRouterOptions({ maxBodyBytes: null } as never).maxBodyBytes).toBe(DEFAULT_KEYS_MAX_BODY_BYTES);
  });

  it.each<[string, unknown, string]>([
    ['options that are not an object', 7, 'keysRouter: options must be an object, e.g. { maxBodyBytes: 16384 }, or left out'],
    ...[-1, 0, 1.5, '16kb'].map((value): [string, unknown, string] => [
      `maxBodyBytes ${String(value)}`,
      { maxBodyBytes: value },
      'keysRouter: options.maxBodyBytes must be a positive integer number of bytes, e.g. 16384',
    ]),
    ['storeTimeoutMs 0', { storeTimeoutMs: 0 }, 'keysRouter: options.storeTimeoutMs must be a positive number of milliseconds, e.g. 2000'],
  ])('refuses %s with a ConfigurationError that says how to fix it', (_case, options, message) => {
    expect(thrown(() => resolveKeysRouterOptions(options as KeysRouterOptions))).toEqual(option(message));
    expect(thrown(() => keysRouter(new MemoryKeyStore(), options as KeysRouterOptions))).toEqual(option(message));
  });
});

describe('the other factories name themselves in the same refusals', () => {
  it('proxyRouter', () => {
    const options = {
      upstreams: [{ name: 'openai', target: 'https://api.openai.com/v1', models: ['gpt-4o-mini'] }],
      pricing: { 'gpt-4o-mini': { inputPerMillion: 0.15, outputPerMillion: 0.6 } },
      defaultRateLimit: { requests: 0, interval: '1s' },
    };
    expect(thrown(() => proxyRouter(new MemoryKeyStore(), options))).toEqual(
      option(RATE_LIMIT_MESSAGE.replace('modelSwitchAuth', 'proxyRouter')),
    );
  });
});

describe('KeyHasher options', () => {
  it('uses the named defaults', () => {
    expect(DEFAULT_SCRYPT).toEqual({ logN: 15, r: 8, p: 1 });
    expect(() => new KeyHasher()).not.toThrow();
  });

  it.each<[string, KeyHasherOptions, string]>([
    ['cacheSize 0', { cacheSize: 0 }, 'KeyHasher: cacheSize must be a positive integer, got 0'],
    ['maxConcurrentHashes 1.5', { maxConcurrentHashes: 1.5 }, 'KeyHasher: maxConcurrentHashes must be a positive integer, got 1.5'],
    ['handleFailureWindowMs -1', { handleFailureWindowMs: -1 }, 'KeyHasher: handleFailureWindowMs must be a positive integer, got -1'],
    ['maxHashesPerAccount 0', { maxHashesPerAccount: 0 }, 'KeyHasher: maxHashesPerAccount must be a positive integer, got 0'],
    ['handleFailureLimit 0', { handleFailureLimit: 0 }, 'KeyHasher: handleFailureLimit must be a positive integer, got 0'],
    [
      'maxQueuedVerifications -1',
      { maxQueuedVerifications: -1 },
      'KeyHasher: maxQueuedVerifications must be an integer ≥ 0 (or null for no bound), got -1',
    ],
    ['maxQueuedHashes 0.5', { maxQueuedHashes: 0.5 }, 'KeyHasher: maxQueuedHashes must be an integer ≥ 0 (or null for no bound), got 0.5'],
    ['failureTtlMs NaN', { failureTtlMs: Number.NaN }, 'KeyHasher: failureTtlMs must be a number of milliseconds ≥ 0, e.g. 60000, got NaN'],
    ['a clock that is no function', { now: 'now' as never }, 'KeyHasher: now must be a function answering epoch ms, like Date.now'],
    [
      'scrypt logN 31',
      { scrypt: { logN: 31 } },
      'KeyHasher: scrypt needs integer logN (1–30), r ≥ 1 and p ≥ 1, e.g. { logN: 15, r: 8, p: 1 }',
    ],
  ])('refuses %s with a ConfigurationError that says how to fix it', (_case, options, message) => {
    expect(thrown(() => new KeyHasher(options))).toEqual(option(message));
  });
});

describe('store and suite options', () => {
  it('KeyvKeyStore refuses a prefix that is not a string', () => {
    expect(thrown(() => new KeyvKeyStore(new Keyv(), { prefix: 7 as never }))).toEqual(
      option("KeyvKeyStore: prefix must be a string, e.g. 'gateway:' (or left out for 'modelswitch:')"),
    );
  });

  it('keyStoreSuite refuses a call without it or createStore, a misspelt group, and a skip it cannot show', () => {
    const it = Object.assign(() => {}, { skip: () => {} });
    const createStore = () => new MemoryKeyStore();
    expect(thrown(() => keyStoreSuite({ createStore } as unknown as KeyStoreSuiteOptions))).toEqual(
      option('keyStoreSuite({ it, createStore }): pass your test runner’s it and a function that makes the store'),
    );
    expect(thrown(() => keyStoreSuite({ it, createStore, skip: { counter: true } as never }))).toEqual(
      option(expect.stringMatching(/^keyStoreSuite: skip\.counter names no group; the groups are accounts, keys, /) as unknown as string),
    );
    expect(thrown(() => keyStoreSuite({ it: () => {}, createStore, skip: { counters: true } }))).toEqual(
      option(
        'keyStoreSuite: skip needs a test registrar with it.skip (vitest, jest and node:test have one), so that the skipped tests are listed as skipped',
      ),
    );
  });
});
