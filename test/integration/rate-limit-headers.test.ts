import express from 'express';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import {
  type AuthOptions,
  ConfigurationError,
  MemoryKeyStore,
  issueKey,
  keysRouter,
  modelSwitchAuth,
  proxyRouter,
} from '../../src/index.js';
import { FRAMEWORKS, buildApp } from '../app.js';
import { type SeededAccount, type TestClock, fastHasher, seedAccount, testClock } from '../helpers.js';

const hasher = fastHasher();
/** 18 s into a minute: a 1-minute window has 42 s left and ends at 12:01:00 UTC. */
const START = Date.parse('2026-11-22T12:00:18Z');
const WINDOW_END_SECONDS = String(Date.parse('2026-11-22T12:01:00Z') / 1000);

/** Every rate-limit header of an answer (standard and legacy), by lower-case name. */
function rateLimitHeaders(headers: Record<string, string | string[] | undefined>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => /ratelimit/i.test(name)));
}

const TOO_MANY = {
  error: {
    message: 'Rate limit exceeded: 3 requests per 1m for this key. Retry after the window resets.',
    type: 'rate_limit_error',
    code: 'rate_limit_exceeded',
  },
};

/** `standardHeaders` and `legacyHeaders` given, and the headers the first and the refused (fourth) request carry. */
const CASES: ReadonlyArray<
  [string, Pick<AuthOptions, 'standardHeaders' | 'legacyHeaders'>, Record<string, string>, Record<string, string>]
> = [
  [
    'the default (draft-6)',
    {},
    { 'ratelimit-policy': '3;w=60', 'ratelimit-limit': '3', 'ratelimit-remaining': '2', 'ratelimit-reset': '42' },
    { 'ratelimit-policy': '3;w=60', 'ratelimit-limit': '3', 'ratelimit-remaining': '0', 'ratelimit-reset': '42' },
  ],
  [
    "'draft-6'",
    { standardHeaders: 'draft-6' },
    { 'ratelimit-policy': '3;w=60', 'ratelimit-limit': '3', 'ratelimit-remaining': '2', 'ratelimit-reset': '42' },
    { 'ratelimit-policy': '3;w=60', 'ratelimit-limit': '3', 'ratelimit-remaining': '0', 'ratelimit-reset': '42' },
  ],
  [
    'true (draft-6)',
    { standardHeaders: true },
    { 'ratelimit-policy': '3;w=60', 'ratelimit-limit': '3', 'ratelimit-remaining': '2', 'ratelimit-reset': '42' },
    { 'ratelimit-policy': '3;w=60', 'ratelimit-limit': '3', 'ratelimit-remaining': '0', 'ratelimit-reset': '42' },
  ],
  [
    "'draft-7'",
    { standardHeaders: 'draft-7' },
    { 'ratelimit-policy': '3;w=60', ratelimit: 'limit=3, remaining=2, reset=42' },
    { 'ratelimit-policy': '3;w=60', ratelimit: 'limit=3, remaining=0, reset=42' },
  ],
  [
    "'draft-8'",
    { standardHeaders: 'draft-8' },
    { 'ratelimit-policy': '"default";q=3;w=60', ratelimit: '"default";r=2;t=42' },
    { 'ratelimit-policy': '"default";q=3;w=60', ratelimit: '"default";r=0;t=42' },
  ],
  ['false', { standardHeaders: false }, {}, {}],
  [
    'false with legacyHeaders',
    { standardHeaders: false, legacyHeaders: true },
    { 'x-ratelimit-limit': '3', 'x-ratelimit-remaining': '2', 'x-ratelimit-reset': WINDOW_END_SECONDS },
    { 'x-ratelimit-limit': '3', 'x-ratelimit-remaining': '0', 'x-ratelimit-reset': WINDOW_END_SECONDS },
  ],
  [
    "'draft-8' with legacyHeaders",
    { standardHeaders: 'draft-8', legacyHeaders: true },
    {
      'ratelimit-policy': '"default";q=3;w=60',
      ratelimit: '"default";r=2;t=42',
      'x-ratelimit-limit': '3',
      'x-ratelimit-remaining': '2',
      'x-ratelimit-reset': WINDOW_END_SECONDS,
    },
    {
      'ratelimit-policy': '"default";q=3;w=60',
      ratelimit: '"default";r=0;t=42',
      'x-ratelimit-limit': '3',
      'x-ratelimit-remaining': '0',
      'x-ratelimit-reset': WINDOW_END_SECONDS,
    },
  ],
];

describe.each(FRAMEWORKS)('rate-limit headers under %s', (framework) => {
  let store: MemoryKeyStore;
  let clock: TestClock;
  let seeded: SeededAccount;
  let key: string;

  beforeEach(async () => {
    store = new MemoryKeyStore();
    clock = testClock(START);
    seeded = await seedAccount(store, { hasher, now: clock.now() });
    ({ key } = await issueKey(
      store,
      { accountId: seeded.account.id, type: 'proxy', name: 'limited', rateLimit: { requests: 3, interval: '1m' } },
      { hasher, now: clock.now() },
    ));
  });

  it.each(CASES)('with %s: the whole header set on an admitted request and on a 429', async (_name, options, first, refused) => {
    const app = buildApp(framework, store, { hasher, now: clock.now, ...options });
    const answer = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${key}`);
    expect({ status: answer.status, headers: rateLimitHeaders(answer.headers) }).toEqual({ status: 200, headers: first });
    await request(app).get('/v1/whoami').set('Authorization', `Bearer ${key}`);
    await request(app).get('/v1/whoami').set('Authorization', `Bearer ${key}`);
    const over = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${key}`);
    expect({
      status: over.status,
      retryAfter: over.headers['retry-after'],
      headers: rateLimitHeaders(over.headers),
      body: over.body,
    }).toEqual({
      status: 429,
      retryAfter: '42',
      headers: refused,
      body: TOO_MANY,
    });
  });

  it('sends the chosen headers on the management API too (billing keys have the default limit)', async () => {
    const app = buildApp(framework, store, { hasher, now: clock.now, standardHeaders: 'draft-8', legacyHeaders: true });
    const answer = await request(app).get('/api/keys').set('Authorization', `Bearer ${seeded.billingKey}`);
    expect({ status: answer.status, headers: rateLimitHeaders(answer.headers) }).toEqual({
      status: 200,
      headers: {
        'ratelimit-policy': '"default";q=1000;w=10',
        ratelimit: '"default";r=999;t=2',
        'x-ratelimit-limit': '1000',
        'x-ratelimit-remaining': '999',
        'x-ratelimit-reset': String(Date.parse('2026-11-22T12:00:20Z') / 1000),
      },
    });
  });
});

describe('standardHeaders and legacyHeaders options', () => {
  it('sends the chosen headers from proxyRouter mounted without modelSwitchAuth', async () => {
    const store = new MemoryKeyStore();
    const clock = testClock(START);
    const seeded = await seedAccount(store, { hasher, now: clock.now() });
    const app = express();
    app.use(
      '/v1',
      proxyRouter(store, {
        upstreams: [{ name: 'unused', target: 'http://127.0.0.1:9', models: ['m'] }],
        pricing: { m: { inputPerMillion: 1, outputPerMillion: 1 } },
        hasher,
        now: clock.now,
        standardHeaders: 'draft-7',
      }),
    );
    const answer = await request(app).get('/v1/auth/key').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect({ status: answer.status, headers: rateLimitHeaders(answer.headers) }).toEqual({
      status: 200,
      headers: { 'ratelimit-policy': '1000;w=10', ratelimit: 'limit=1000, remaining=999, reset=2' },
    });
  });

  it('refuses anything else at creation with a ConfigurationError naming the factory', () => {
    const store = new MemoryKeyStore();
    for (const standardHeaders of ['draft-9', 'draft-6 ', 6, null, 'true']) {
      for (const [factory, create] of [
        ['modelSwitchAuth', () => modelSwitchAuth(store, { standardHeaders } as unknown as AuthOptions)],
        ['keysRouter', () => keysRouter(store, { standardHeaders } as unknown as AuthOptions)],
      ] as const) {
        let thrown: unknown;
        try {
          create();
        } catch (error) {
          thrown = error;
        }
        expect(thrown).toBeInstanceOf(ConfigurationError);
        expect((thrown as ConfigurationError).code).toBe('ERR_MS_OPTION');
        expect((thrown as ConfigurationError).message).toBe(
          `${factory}: options.standardHeaders must be 'draft-6', 'draft-7', 'draft-8', true (draft-6) or false (none)`,
        );
      }
    }
    for (const legacyHeaders of ['yes', 1, null]) {
      expect(() => modelSwitchAuth(store, { legacyHeaders } as unknown as AuthOptions)).toThrow(
        new ConfigurationError('ERR_MS_OPTION', 'modelSwitchAuth: options.legacyHeaders must be true or false'),
      );
    }
  });
});
