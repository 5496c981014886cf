import Keyv from 'keyv';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { KeyvKeyStore, MemoryKeyStore, issueKey } from '../../src/index.js';
import type { KeyStore } from '../../src/store/types.js';
import { buildApp } from '../app.js';
import { fastHasher, seedAccount, testClock } from '../helpers.js';
import { type Gateway, chat, post, startGateway } from '../proxy/harness.js';

const hasher = fastHasher();

/** The 429 of a key over its request rate at 12:00:03.400 in a 10 s window that resets at 12:00:10: 6.6 s away. */
describe.each([
  ['MemoryKeyStore (synchronous path)', () => new MemoryKeyStore()],
  ['KeyvKeyStore (promise path)', () => new KeyvKeyStore(new Keyv())],
] as Array<[string, () => KeyStore]>)('Retry-After on %s', (_name, createStore) => {
  it('rounds the wait up to whole seconds (7 for 6.6 s), so a client never comes back too early', async () => {
    const store = createStore();
    const clock = testClock();
    const seeded = await seedAccount(store, { hasher, now: clock.now() });
    const limited = await issueKey(
      store,
      { accountId: seeded.account.id, type: 'proxy', name: 'limited', rateLimit: { requests: 1, interval: '10s' } },
      { hasher, now: clock.now() },
    );
    const app = buildApp('express5', store, { hasher, now: clock.now });
    clock.set(Date.parse('2026-11-22T12:00:03.400Z'));
    const auth = { Authorization: `Bearer ${limited.key}` };
    expect((await request(app).get('/v1/whoami').set(auth)).status).toBe(200);
    const refused = await request(app).get('/v1/whoami').set(auth);
    expect({ status: refused.status, retryAfter: refused.headers['retry-after'], reset: refused.headers['ratelimit-reset'] }).toEqual({
      status: 429,
      retryAfter: '7',
      reset: '7',
    });
    // 0.1 s before the window ends the answer is still "1", never "0".
    clock.set(Date.parse('2026-11-22T12:00:09.900Z'));
    expect((await request(app).get('/v1/whoami').set(auth)).headers['retry-after']).toBe('1');
    clock.set(Date.parse('2026-11-22T12:00:10.000Z'));
    expect((await request(app).get('/v1/whoami').set(auth)).status).toBe(200);
  });
});

describe('Retry-After of the token rate (proxy)', () => {
  let gateway: Gateway;
  afterEach(async () => {
    await gateway?.close();
  });

  it('rounds up too: tokens used up at 12:00:00.250 answer Retry-After 60, at 12:00:59.001 answer 1', async () => {
    gateway = await startGateway();
    await gateway.store.updateKey(gateway.proxyKeyId, { rateLimit: { requests: 1000, interval: '1m', tokens: 10 } });
    gateway.clock.set(Date.parse('2026-11-22T12:00:00.250Z'));
    expect((await post(gateway, '/chat/completions', chat({ max_tokens: 8 }))).status).toBe(200);
    const refused = await post(gateway, '/chat/completions', chat({ max_tokens: 8 }));
    expect({ status: refused.status, retryAfter: refused.headers.get('retry-after') }).toEqual({ status: 429, retryAfter: '60' });
    gateway.clock.set(Date.parse('2026-11-22T12:00:59.001Z'));
    expect((await post(gateway, '/chat/completions', chat({ max_tokens: 8 }))).headers.get('retry-after')).toBe('1');
  });
});
