import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { MemoryKeyStore, type KeyHasher, adjustBalance } from '../../src/index.js';
import { FRAMEWORKS, buildApp } from '../app.js';
import { type SeededAccount, type TestClock, fastHasher, seedAccount, testClock } from '../helpers.js';

const TOKEN_CHALLENGE = 'Bearer realm="modelswitch", error="invalid_token"';
const hasher: KeyHasher = fastHasher();

describe.each(FRAMEWORKS)('key lifecycle end to end under %s', (framework) => {
  let store: MemoryKeyStore;
  let clock: TestClock;
  let seeded: SeededAccount;
  let app: ReturnType<typeof buildApp>;

  beforeEach(async () => {
    store = new MemoryKeyStore();
    clock = testClock();
    seeded = await seedAccount(store, { hasher, now: clock.now(), balance: 1500.5 });
    app = buildApp(framework, store, { hasher, now: clock.now });
  });

  const admin = () => ({ Authorization: `Bearer ${seeded.billingKey}` });

  async function createKey(body: Record<string, unknown>) {
    const response = await request(app).post('/api/keys').set(admin()).send(body);
    expect(response.status).toBe(201);
    return response.body as { id: number; key: string };
  }

  it('creates a key that works on /v1 at once, and answers the docs key-info JSON', async () => {
    const created = await createKey({ name: 'My Production Key' });
    const response = await request(app).get('/v1/auth/key').set('Authorization', `Bearer ${created.key}`);
    expect(response.status).toBe(200);
    expect(response.headers['content-type']).toBe('application/json');
    expect(response.body).toEqual({
      data: {
        label: 'My Production Key',
        usage: 0,
        limit: 1500.5,
        is_free_tier: false,
        rate_limit: { requests: 1000, interval: '10s' },
        key_limit: null,
        key_limit_remaining: null,
        limit_reset: null,
        expires_at: null,
        models: null,
      },
    });
  });

  it("adds the key's own cap, reset, expiry and models after the docs' key-info fields", async () => {
    const created = await createKey({
      name: 'Capped',
      limit: 5,
      limit_reset: 'daily',
      expires_at: '2027-01-01T00:00:00Z',
      models: ['gpt-4o-mini', 'claude-*'],
    });
    await store.settleSpend({
      keyId: created.id,
      accountId: seeded.account.id,
      holdId: null,
      cost: 1.25,
      period: '2026-11-22',
      now: clock.now(),
    });
    const response = await request(app).get('/v1/auth/key').set('Authorization', `Bearer ${created.key}`);
    expect(response.status).toBe(200);
    expect(response.body).toEqual({
      data: {
        label: 'Capped',
        usage: 1.25,
        limit: 1499.25,
        is_free_tier: false,
        rate_limit: { requests: 1000, interval: '10s' },
        key_limit: 5,
        key_limit_remaining: 3.75,
        limit_reset: 'daily',
        expires_at: '2027-01-01T00:00:00Z',
        models: ['gpt-4o-mini', 'claude-*'],
      },
    });
    expect(Object.keys(response.body.data)).toEqual([
      'label',
      'usage',
      'limit',
      'is_free_tier',
      'rate_limit',
      'key_limit',
      'key_limit_remaining',
      'limit_reset',
      'expires_at',
      'models',
    ]);
    // Past the cap, what remains is 0, never negative; the usage of another day does not count.
    await store.settleSpend({
      keyId: created.id,
      accountId: seeded.account.id,
      holdId: null,
      cost: 10,
      period: '2026-11-22',
      now: clock.now(),
    });
    const spent = await request(app).get('/v1/auth/key').set('Authorization', `Bearer ${created.key}`);
    expect([spent.body.data.usage, spent.body.data.key_limit_remaining]).toEqual([11.25, 0]);
    clock.advance(86_400_000);
    const nextDay = await request(app).get('/v1/auth/key').set('Authorization', `Bearer ${created.key}`);
    expect([nextDay.body.data.usage, nextDay.body.data.key_limit_remaining]).toEqual([0, 5]);
  });

  it('shows a renamed key under its new name on the very next request', async () => {
    const created = await createKey({ name: 'Production' });
    const renamed = await request(app).put(`/api/keys/${created.id}`).set(admin()).send({ name: 'Production v2' });
    expect(renamed.status).toBe(200);
    expect(renamed.body.name).toBe('Production v2');
    const info = await request(app).get('/v1/auth/key').set('Authorization', `Bearer ${created.key}`);
    expect(info.body.data.label).toBe('Production v2');
  });

  it('refuses a deactivated key on its very next request with 403, and accepts it again once reactivated', async () => {
    const created = await createKey({ name: 'Production' });
    const auth = { Authorization: `Bearer ${created.key}` };
    expect((await request(app).get('/v1/whoami').set(auth)).status).toBe(200);
    const off = await request(app).put(`/api/keys/${created.id}`).set(admin()).send({ name: 'Production v2', active: false });
    expect(off.status).toBe(200);
    expect(off.body.active).toBe(false);
    const refused = await request(app).get('/v1/whoami').set(auth);
    expect(refused.status).toBe(403);
    expect(refused.headers['content-type']).toBe('application/json');
    expect(refused.headers['www-authenticate']).toBeUndefined();
    expect(refused.body).toEqual({ error: { message: 'API key has been deactivated', type: 'permission_error', code: 'key_deactivated' } });
    const on = await request(app).patch(`/api/keys/${created.id}`).set(admin()).send({ active: true });
    expect(on.status).toBe(200);
    const accepted = await request(app).get('/v1/whoami').set(auth);
    expect(accepted.status).toBe(200);
    expect(accepted.body).toEqual({ keyId: created.id, accountId: seeded.account.id });
  });

  it('refuses an expired key with 401 expired_api_key from the moment it expires', async () => {
    const created = await createKey({ name: 'Contractor', expires_at: new Date(clock.now() + 3_600_000).toISOString() });
    const auth = { Authorization: `Bearer ${created.key}` };
    clock.advance(3_600_000 - 1);
    expect((await request(app).get('/v1/whoami').set(auth)).status).toBe(200);
    clock.advance(1);
    const refused = await request(app).get('/v1/whoami').set(auth);
    expect(refused.status).toBe(401);
    expect(refused.headers['www-authenticate']).toBe(TOKEN_CHALLENGE);
    expect(refused.body).toEqual({ error: { message: 'API key has expired', type: 'authentication_error', code: 'expired_api_key' } });
  });

  it('lets a key expire and brings it back by moving expires_at to the future', async () => {
    const created = await createKey({ name: 'Contractor', expires_at: new Date(clock.now() + 1000).toISOString() });
    clock.advance(2000);
    const auth = { Authorization: `Bearer ${created.key}` };
    expect((await request(app).get('/v1/whoami').set(auth)).status).toBe(401);
    const extended = await request(app).put(`/api/keys/${created.id}`).set(admin()).send({ expires_at: null });
    expect(extended.body.expiresAt).toBeNull();
    expect((await request(app).get('/v1/whoami').set(auth)).status).toBe(200);
  });

  it('refuses a deleted key with 401 on its very next request, and forgets its id', async () => {
    const created = await createKey({ name: 'Production' });
    const auth = { Authorization: `Bearer ${created.key}` };
    expect((await request(app).get('/v1/whoami').set(auth)).status).toBe(200);
    const deleted = await request(app).delete(`/api/keys/${created.id}`).set(admin());
    expect(deleted.status).toBe(200);
    expect(deleted.body).toEqual({ id: created.id, deleted: true });
    const refused = await request(app).get('/v1/whoami').set(auth);
    expect(refused.status).toBe(401);
    expect(refused.headers['www-authenticate']).toBe(TOKEN_CHALLENGE);
    expect(refused.body).toEqual({ error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } });
    const gone = await request(app).get(`/api/keys/${created.id}`).set(admin());
    expect(gone.status).toBe(404);
    expect(gone.body).toEqual({
      error: { message: `No API key with id ${created.id}`, type: 'not_found_error', code: 'key_not_found', param: 'id' },
    });
  });

  it('refuses a billing key on /v1 and a proxy key on /api with 401 wrong_key_type', async () => {
    const onV1 = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.billingKey}`);
    expect(onV1.status).toBe(401);
    expect(onV1.headers['www-authenticate']).toBe(TOKEN_CHALLENGE);
    expect(onV1.body).toEqual({
      error: {
        message: 'This endpoint needs a proxy key (ms-). Billing keys (mk-) only work with the management API (/api).',
        type: 'authentication_error',
        code: 'wrong_key_type',
      },
    });
    const onApi = await request(app).get('/api/keys').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect(onApi.status).toBe(401);
    expect(onApi.headers['www-authenticate']).toBe(TOKEN_CHALLENGE);
    expect(onApi.body).toEqual({
      error: {
        message: 'This endpoint needs a billing key (mk-). Proxy keys (ms-) only work with the inference API (/v1).',
        type: 'authentication_error',
        code: 'wrong_key_type',
      },
    });
  });

  it('rate limits per key with 429, Retry-After and RateLimit headers, then admits again in the next window', async () => {
    const created = await createKey({ name: 'Limited', rate_limit: { requests: 2, interval: '10s' } });
    const auth = { Authorization: `Bearer ${created.key}` };
    clock.set(Date.parse('2026-11-22T12:00:03Z'));
    const first = await request(app).get('/v1/whoami').set(auth);
    expect(first.status).toBe(200);
    expect([
      first.headers['ratelimit-policy'],
      first.headers['ratelimit-limit'],
      first.headers['ratelimit-remaining'],
      first.headers['ratelimit-reset'],
    ]).toEqual(['2;w=10', '2', '1', '7']);
    expect((await request(app).get('/v1/auth/key').set(auth)).status).toBe(200);
    const refused = await request(app).get('/v1/whoami').set(auth);
    expect(refused.status).toBe(429);
    expect(refused.headers['retry-after']).toBe('7');
    expect(refused.headers['ratelimit-remaining']).toBe('0');
    expect(refused.body).toEqual({
      error: {
        message: 'Rate limit exceeded: 2 requests per 10s for this key. Retry after the window resets.',
        type: 'rate_limit_error',
        code: 'rate_limit_exceeded',
      },
    });
    clock.advance(7000);
    expect((await request(app).get('/v1/whoami').set(auth)).status).toBe(200);
    // Another key of the same account has its own counter.
    expect((await request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`)).status).toBe(200);
  });

  it('sends each key its own RateLimit headers when keys with different limits alternate', async () => {
    const hourly = await createKey({ name: 'Hourly', rate_limit: { requests: 50, interval: '1h' } });
    // The default's number of requests, over another window.
    const perMinute = await createKey({ name: 'Per minute', rate_limit: { requests: 1000, interval: '1m' } });
    clock.set(Date.parse('2026-11-22T12:00:03Z'));
    const headersOf = async (key: string) => {
      const response = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${key}`);
      return [
        response.status,
        response.headers['ratelimit-policy'],
        response.headers['ratelimit-limit'],
        response.headers['ratelimit-remaining'],
        response.headers['ratelimit-reset'],
      ];
    };
    expect([
      await headersOf(hourly.key),
      await headersOf(seeded.proxyKey),
      await headersOf(perMinute.key),
      await headersOf(hourly.key),
      await headersOf(seeded.proxyKey),
      await headersOf(perMinute.key),
    ]).toEqual([
      [200, '50;w=3600', '50', '49', '3597'],
      [200, '1000;w=10', '1000', '999', '7'],
      [200, '1000;w=60', '1000', '999', '57'],
      [200, '50;w=3600', '50', '48', '3597'],
      [200, '1000;w=10', '1000', '998', '7'],
      [200, '1000;w=60', '1000', '998', '57'],
    ]);
  });

  it('still answers key info at a zero balance (it never spends)', async () => {
    await adjustBalance(store, seeded.account.id, -1500.5, { reference: 'spent-elsewhere', now: clock.now() });
    const info = await request(app).get('/v1/auth/key').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect(info.status).toBe(200);
    expect(info.body.data.limit).toBe(0);
  });

  it('records lastUsedAt at most once a minute without slowing requests', async () => {
    const auth = { Authorization: `Bearer ${seeded.proxyKey}` };
    await request(app).get('/v1/whoami').set(auth);
    const first = (await store.getKey(seeded.proxyKeyId))?.lastUsedAt;
    expect(first).toBe(clock.now());
    clock.advance(30_000);
    await request(app).get('/v1/whoami').set(auth);
    expect((await store.getKey(seeded.proxyKeyId))?.lastUsedAt).toBe(first);
    clock.advance(30_000);
    await request(app).get('/v1/whoami').set(auth);
    expect((await store.getKey(seeded.proxyKeyId))?.lastUsedAt).toBe(clock.now());
  });
});
