import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { type KeyHasher, MemoryKeyStore } from '../../src/index.js';
import { FRAMEWORKS, buildApp } from '../app.js';
import { type SeededAccount, type TestClock, fastHasher, seedAccount, testClock, invalid } from '../helpers.js';

const HOUR = 3_600_000;
const TOKEN_CHALLENGE = 'Bearer realm="modelswitch", error="invalid_token"';
const INVALID_KEY = { error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } };
const KEY_FIELDS = [
  'id',
  'key',
  'name',
  'prefix',
  'active',
  'createdAt',
  'expiresAt',
  'lastUsedAt',
  'usage',
  'limit',
  'limitReset',
  'rateLimit',
  'models',
  'previousKeyExpiresAt',
];

describe.each(FRAMEWORKS)('POST /api/keys/:id/rotate under %s', (framework) => {
  let store: MemoryKeyStore;
  let clock: TestClock;
  let hasher: KeyHasher;
  let seeded: SeededAccount;
  let other: SeededAccount;
  let app: ReturnType<typeof buildApp>;

  beforeEach(async () => {
    store = new MemoryKeyStore();
    clock = testClock();
    hasher = fastHasher();
    seeded = await seedAccount(store, { hasher, now: clock.now() });
    other = await seedAccount(store, { hasher, now: clock.now() });
    app = buildApp(framework, store, { hasher, now: clock.now });
  });

  const admin = () => ({ Authorization: `Bearer ${seeded.billingKey}` });
  const rotate = (id: number, body?: unknown) => {
    const pending = request(app).post(`/api/keys/${id}/rotate`).set(admin());
    return body === undefined ? pending : pending.send(body as object);
  };
  const whoami = (key: string) => request(app).get('/v1/whoami').set('Authorization', `Bearer ${key}`);
  async function expectRefused(key: string) {
    const refused = await whoami(key);
    expect({ status: refused.status, challenge: refused.headers['www-authenticate'], body: refused.body }).toEqual({
      status: 401,
      challenge: TOKEN_CHALLENGE,
      body: INVALID_KEY,
    });
  }

  it('answers a new secret for the same key, and the previous one works until the grace period ends, then 401', async () => {
    const oldKey = seeded.proxyKey;
    expect((await whoami(oldKey)).status).toBe(200);
    const rotated = await rotate(seeded.proxyKeyId, { grace_period: '1h' });
    expect(rotated.status).toBe(200);
    expect(rotated.headers['content-type']).toBe('application/json');
    expect(rotated.headers['cache-control']).toBe('no-store');
    expect(rotated.body).toEqual({
      id: seeded.proxyKeyId,
      key: expect.stringMatching(/^ms-[0-9A-Za-z]{38}$/),
      name: 'My Production Key',
      prefix: oldKey.slice(0, 7),
      active: true,
      createdAt: '2026-11-22T12:00:00Z',
      expiresAt: null,
      lastUsedAt: '2026-11-22T12:00:00Z',
      usage: 0,
      limit: null,
      limitReset: null,
      rateLimit: null,
      models: null,
      previousKeyExpiresAt: '2026-11-22T13:00:00Z',
    });
    expect(Object.keys(rotated.body)).toEqual(KEY_FIELDS);
    const newKey: string = rotated.body.key;
    // Same handle: the first 13 characters (prefix + handle) stay, the secret and checksum change.
    expect(newKey.slice(0, 13)).toBe(oldKey.slice(0, 13));
    expect(newKey).not.toBe(oldKey);
    for (const key of [oldKey, newKey]) {
      const admitted = await whoami(key);
      expect({ status: admitted.status, body: admitted.body }).toEqual({
        status: 200,
        body: { keyId: seeded.proxyKeyId, accountId: seeded.account.id },
      });
    }
    clock.advance(HOUR - 1);
    expect((await whoami(oldKey)).status).toBe(200);
    clock.advance(1);
    await expectRefused(oldKey);
    expect((await whoami(newKey)).status).toBe(200);
    // Still one key record, shown without any secret.
    const listed = await request(app).get('/api/keys').set(admin());
    expect(listed.body.keys.map((key: { id: number }) => key.id)).toEqual([seeded.proxyKeyId]);
    expect(JSON.stringify(listed.body)).not.toContain(newKey.slice(13));
  });

  it('ends the previous secret at once without a grace period (no body, 0, "0s" or null), without scrypt for a key it verified before', async () => {
    for (const body of [undefined, {}, { grace_period: 0 }, { grace_period: '0s' }, { grace_period: null }]) {
      const before = (await store.getKey(seeded.proxyKeyId))?.hash;
      const previous = seeded.proxyKey;
      expect((await whoami(previous)).status).toBe(200);
      const rotated = await rotate(seeded.proxyKeyId, body);
      expect({ status: rotated.status, deadline: rotated.body.previousKeyExpiresAt }).toEqual({ status: 200, deadline: null });
      expect((await store.getKey(seeded.proxyKeyId))?.hash).not.toBe(before);
      const runs = hasher.scryptRuns;
      await expectRefused(previous);
      await expectRefused(previous);
      expect(hasher.scryptRuns).toBe(runs);
      expect((await whoami(rotated.body.key)).status).toBe(200);
      seeded.proxyKey = rotated.body.key;
    }
  });

  it('never lets a cached previous secret through past its deadline, and refuses it without scrypt', async () => {
    const oldKey = seeded.proxyKey;
    const rotated = await rotate(seeded.proxyKeyId, { grace_period: 90 });
    expect(rotated.body.previousKeyExpiresAt).toBe('2026-11-22T12:01:30Z');
    expect((await whoami(oldKey)).status).toBe(200);
    expect((await whoami(oldKey)).status).toBe(200);
    clock.advance(90_000);
    const runs = hasher.scryptRuns;
    for (let i = 0; i < 5; i++) await expectRefused(oldKey);
    expect(hasher.scryptRuns).toBe(runs);
    expect((await whoami(rotated.body.key)).status).toBe(200);
  });

  it('ends the oldest secret at once when a key is rotated again within the grace period', async () => {
    const first = seeded.proxyKey;
    expect((await whoami(first)).status).toBe(200);
    const second = (await rotate(seeded.proxyKeyId, { grace_period: '1h' })).body;
    expect((await whoami(second.key)).status).toBe(200);
    clock.advance(60_000);
    const third = (await rotate(seeded.proxyKeyId, { grace_period: '2h' })).body;
    expect(third.previousKeyExpiresAt).toBe('2026-11-22T14:01:00Z');
    expect((await whoami(second.key)).status).toBe(200);
    expect((await whoami(third.key)).status).toBe(200);
    await expectRefused(first);
    clock.advance(2 * HOUR);
    await expectRefused(second.key);
    await expectRefused(first);
    expect((await whoami(third.key)).status).toBe(200);
  });

  it('keeps a deactivated key deactivated: both secrets answer 403 until it is reactivated', async () => {
    const oldKey = seeded.proxyKey;
    await request(app).patch(`/api/keys/${seeded.proxyKeyId}`).set(admin()).send({ active: false });
    const rotated = await rotate(seeded.proxyKeyId, { grace_period: '1h' });
    expect({ status: rotated.status, active: rotated.body.active }).toEqual({ status: 200, active: false });
    for (const key of [oldKey, rotated.body.key]) {
      const refused = await whoami(key);
      expect({ status: refused.status, body: refused.body }).toEqual({
        status: 403,
        body: { error: { message: 'API key has been deactivated', type: 'permission_error', code: 'key_deactivated' } },
      });
    }
    await request(app).patch(`/api/keys/${seeded.proxyKeyId}`).set(admin()).send({ active: true });
    expect((await whoami(rotated.body.key)).status).toBe(200);
    expect((await whoami(oldKey)).status).toBe(200);
  });

  it('keeps the name, limits, usage, models and rate-limit counter of the key', async () => {
    const created = await request(app)
      .post('/api/keys')
      .set(admin())
      .send({ name: 'Metered', limit: 5, limit_reset: 'monthly', rate_limit: { requests: 3, interval: '1h' }, models: ['gpt-4o*'] });
    await store.settleSpend({
      keyId: created.body.id,
      accountId: seeded.account.id,
      holdId: null,
      cost: 1.5,
      period: '2026-11',
      now: clock.now(),
    });
    expect((await whoami(created.body.key)).headers['ratelimit-remaining']).toBe('2');
    expect((await whoami(created.body.key)).headers['ratelimit-remaining']).toBe('1');
    const rotated = await request(app).post(`/api/keys/${created.body.id}/rotate`).set(admin()).send({});
    expect(rotated.body).toMatchObject({
      id: created.body.id,
      name: 'Metered',
      prefix: created.body.prefix,
      usage: 1.5,
      limit: 5,
      limitReset: 'monthly',
      rateLimit: { requests: 3, interval: '1h' },
      models: ['gpt-4o*'],
      previousKeyExpiresAt: null,
    });
    // The third request of the hour, with the new secret, is the last one the limit admits.
    expect((await whoami(rotated.body.key)).headers['ratelimit-remaining']).toBe('0');
    expect((await whoami(rotated.body.key)).status).toBe(429);
    const info = await request(app).get('/v1/auth/key').set('Authorization', `Bearer ${rotated.body.key}`);
    expect(info.status).toBe(429);
  });

  it("answers 404 for another account's key, an unknown id and a billing key, and changes nothing (no BOLA)", async () => {
    const othersKey = await store.getKey(other.proxyKeyId);
    for (const id of [other.proxyKeyId, 999_999, (await store.getKeyByHandle(seeded.billingKey.slice(3, 13)))?.id ?? 0]) {
      const response = await rotate(id, { grace_period: '1h' });
      expect({ status: response.status, body: response.body }).toEqual({
        status: 404,
        body: { error: { message: `No API key with id ${id}`, type: 'not_found_error', code: 'key_not_found', param: 'id' } },
      });
    }
    expect(await store.getKey(other.proxyKeyId)).toEqual(othersKey);
    expect((await whoami(other.proxyKey)).status).toBe(200);
    const byOther = await request(app)
      .post(`/api/keys/${seeded.proxyKeyId}/rotate`)
      .set('Authorization', `Bearer ${other.billingKey}`)
      .send({});
    expect(byOther.status).toBe(404);
    expect((await whoami(seeded.proxyKey)).status).toBe(200);
  });

  it('answers 400 with the param for a bad grace_period, body or id, and changes nothing', async () => {
    const before = await store.getKey(seeded.proxyKeyId);
    const message =
      'grace_period must be a duration from 0 to 7 days: a whole number of seconds, or a string like "90s", "15m", "1h" or "7d"';
    for (const grace of ['8d', '169h', 604_801, -1, 1.5, '1w', '', 'abc', '1h ', '01h', '-1s', '1.5h', true, {}, [], ['90s'], '3600']) {
      const response = await rotate(seeded.proxyKeyId, { grace_period: grace });
      expect({ grace, status: response.status, body: response.body }).toEqual({
        grace,
        status: 400,
        body: invalid(message, 'grace_period'),
      });
    }
    for (const [body, expected] of [
      [{ grace: '1h' }, invalid('Unknown field grace', 'grace')],
      [{ key: 'ms-x' }, invalid('key cannot be set', 'key')],
      [['1h'], invalid('Request body must be a JSON object')],
    ] as const) {
      const response = await rotate(seeded.proxyKeyId, body);
      expect({ status: response.status, body: response.body }).toEqual({ status: 400, body: expected });
    }
    const badId = await request(app).post('/api/keys/abc/rotate').set(admin()).send({});
    expect({ status: badId.status, body: badId.body }).toEqual({ status: 400, body: invalid('id must be a positive integer', 'id') });
    const query = await request(app).post(`/api/keys/${seeded.proxyKeyId}/rotate?grace_period=1h`).set(admin()).send({});
    expect({ status: query.status, body: query.body }).toEqual({
      status: 400,
      body: invalid('Unknown query parameter grace_period', 'grace_period'),
    });
    expect(await store.getKey(seeded.proxyKeyId)).toEqual(before);
  });

  it('accepts the longest grace period, 7 days, written either way', async () => {
    for (const grace of ['7d', 604_800, '168h', '10080m']) {
      const response = await rotate(seeded.proxyKeyId, { grace_period: grace });
      expect({ status: response.status, deadline: response.body.previousKeyExpiresAt }).toEqual({
        status: 200,
        deadline: '2026-11-29T12:00:00Z',
      });
    }
  });

  it('answers 405 with Allow: POST for other methods, and 401 without a billing key', async () => {
    const get = await request(app).get(`/api/keys/${seeded.proxyKeyId}/rotate`).set(admin());
    expect({ status: get.status, allow: get.headers.allow, code: get.body.error.code }).toEqual({
      status: 405,
      allow: 'POST',
      code: 'method_not_allowed',
    });
    const anonymous = await request(app).post(`/api/keys/${seeded.proxyKeyId}/rotate`).send({});
    expect(anonymous.status).toBe(401);
    const withProxyKey = await request(app)
      .post(`/api/keys/${seeded.proxyKeyId}/rotate`)
      .set('Authorization', `Bearer ${seeded.proxyKey}`)
      .send({});
    expect({ status: withProxyKey.status, code: withProxyKey.body.error.code }).toEqual({ status: 401, code: 'wrong_key_type' });
  });

  it('never locks the new secret out of a process that saw neither secret while the previous one is still in use', async () => {
    const oldKey = seeded.proxyKey;
    const rotated = await rotate(seeded.proxyKeyId, { grace_period: '1h' });
    // Another process: its own hasher, cold, with the default per-handle throttle (one wrong secret every 30 s).
    const coldHasher = fastHasher();
    const otherProcess = buildApp(framework, store, { hasher: coldHasher, now: clock.now });
    const on = (key: string) => request(otherProcess).get('/v1/whoami').set('Authorization', `Bearer ${key}`);
    expect((await on(oldKey)).status).toBe(200);
    expect((await on(rotated.body.key)).status).toBe(200);
    clock.advance(HOUR);
    // Past the deadline, on a third cold process: the old secret is recognised and refused, and its
    // holder does not spend the handle's turn the new secret needs.
    const third = buildApp(framework, store, { hasher: fastHasher(), now: clock.now });
    const onThird = (key: string) => request(third).get('/v1/whoami').set('Authorization', `Bearer ${key}`);
    expect((await onThird(oldKey)).status).toBe(401);
    expect((await onThird(rotated.body.key)).status).toBe(200);
    expect((await on(oldKey)).status).toBe(401);
  });
});
