import express from 'express';
import request from 'supertest';
import { beforeEach, describe, expect, it } from 'vitest';
import { MemoryKeyStore, keysRouter } from '../../src/index.js';
import { FRAMEWORKS, buildApp } from '../app.js';
import { type SeededAccount, fastHasher, seedAccount, testClock, invalid } from '../helpers.js';

const hasher = fastHasher();
const KEY_FIELDS = [
  'id',
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
];

describe.each(FRAMEWORKS)('keysRouter under %s', (framework) => {
  let store: MemoryKeyStore;
  let seeded: SeededAccount;
  let other: SeededAccount;
  let app: ReturnType<typeof buildApp>;
  const clock = testClock();

  beforeEach(async () => {
    store = new MemoryKeyStore();
    seeded = await seedAccount(store, { hasher, now: clock.now() });
    other = await seedAccount(store, { hasher, now: clock.now() });
    app = buildApp(framework, store, { hasher, now: clock.now });
  });

  const admin = () => ({ Authorization: `Bearer ${seeded.billingKey}` });

  it('creates a key with every field and shows the key value only in that answer', async () => {
    const created = await request(app)
      .post('/api/keys')
      .set(admin())
      .send({
        name: 'Production',
        expires_at: '2027-12-31T00:00:00Z',
        limit: 25.5,
        limit_reset: 'monthly',
        rate_limit: { requests: 60, interval: '1m', tokens: 100000 },
        models: ['gpt-4o-mini', 'claude-*'],
      });
    expect(created.status).toBe(201);
    expect(created.headers['content-type']).toBe('application/json');
    expect(created.headers['cache-control']).toBe('no-store');
    expect(created.body).toEqual({
      id: expect.any(Number),
      key: expect.stringMatching(/^ms-[0-9A-Za-z]{38}$/),
      name: 'Production',
      prefix: created.body.key.slice(0, 7),
      active: true,
      createdAt: '2026-11-22T12:00:00Z',
      expiresAt: '2027-12-31T00:00:00Z',
      lastUsedAt: null,
      usage: 0,
      limit: 25.5,
      limitReset: 'monthly',
      rateLimit: { requests: 60, interval: '1m', tokens: 100000 },
      models: ['gpt-4o-mini', 'claude-*'],
    });
    expect(Object.keys(created.body)).toEqual(['id', 'key', ...KEY_FIELDS.slice(1)]);
    const read = await request(app).get(`/api/keys/${created.body.id}`).set(admin());
    expect(read.status).toBe(200);
    const { key: _key, ...withoutKey } = created.body;
    expect(read.body).toEqual(withoutKey);
    expect(JSON.stringify(read.body)).not.toContain(created.body.key);
  });

  it("lists only the caller's proxy keys, in pages, with has_more", async () => {
    const ids: number[] = [];
    for (let i = 0; i < 5; i++)
      ids.push(
        (
          await request(app)
            .post('/api/keys')
            .set(admin())
            .send({ name: `k${i}` })
        ).body.id,
      );
    await request(app)
      .post('/api/keys')
      .set({ Authorization: `Bearer ${other.billingKey}` })
      .send({ name: 'theirs' });
    const all = [seeded.proxyKeyId, ...ids];
    const first = await request(app).get('/api/keys?limit=4').set(admin());
    expect(first.status).toBe(200);
    expect(first.body.has_more).toBe(true);
    expect(first.body.keys.map((k: { id: number }) => k.id)).toEqual(all.slice(0, 4));
    for (const key of first.body.keys) expect(Object.keys(key)).toEqual(KEY_FIELDS);
    const second = await request(app).get(`/api/keys?limit=4&after=${all[3]}`).set(admin());
    expect(second.body).toEqual({ keys: expect.any(Array), has_more: false });
    expect(second.body.keys.map((k: { id: number }) => k.id)).toEqual(all.slice(4));
    const everything = await request(app).get('/api/keys').set(admin());
    expect(everything.body.keys).toHaveLength(6);
    expect(JSON.stringify(everything.body)).not.toMatch(/m[sk]-[0-9A-Za-z]{38}/);
  });

  it.each([
    ['limit=0', invalid('limit must be an integer from 1 to 1000', 'limit')],
    ['limit=1001', invalid('limit must be an integer from 1 to 1000', 'limit')],
    ['limit=abc', invalid('limit must be an integer from 1 to 1000', 'limit')],
    ['limit=1.5', invalid('limit must be an integer from 1 to 1000', 'limit')],
    ['after=-1', invalid('after must be a positive integer', 'after')],
    ['after=x', invalid('after must be a positive integer', 'after')],
    ['offset=3', invalid('Unknown query parameter offset', 'offset')],
  ])('answers 400 for the list query %s', async (query, body) => {
    const response = await request(app).get(`/api/keys?${query}`).set(admin());
    expect({ status: response.status, body: response.body }).toEqual({ status: 400, body });
  });

  it.each([
    ['no body', undefined, invalid('Request body must be a JSON object')],
    ['an array', [], invalid('Request body must be a JSON object')],
    ['a string', '"name"', invalid('Request body must be a JSON object')],
    ['no name', {}, invalid('name is required', 'name')],
    ['an empty name', { name: '' }, invalid('name must be 1 to 100 characters', 'name')],
    ['a blank name', { name: '   ' }, invalid('name must not be blank', 'name')],
    ['a 101-character name', { name: 'x'.repeat(101) }, invalid('name must be 1 to 100 characters', 'name')],
    ['a numeric name', { name: 5 }, invalid('name must be a string', 'name')],
    ['a name with a newline', { name: 'a\nb' }, invalid('name must not contain control characters', 'name')],
    ['an unknown field', { name: 'x', color: 'red' }, invalid('Unknown field color', 'color')],
    ['a __proto__ field', '{"name":"x","__proto__":{"admin":true}}', invalid('Unknown field __proto__', '__proto__')],
    ['an id', { name: 'x', id: 7 }, invalid('id cannot be set', 'id')],
    ['an accountId', { name: 'x', accountId: 'acct_other' }, invalid('accountId cannot be set', 'accountId')],
    ['a usage', { name: 'x', usage: 0 }, invalid('usage cannot be set', 'usage')],
    ['a hash', { name: 'x', hash: 'h' }, invalid('hash cannot be set', 'hash')],
    ['a type', { name: 'x', type: 'billing' }, invalid('type cannot be set', 'type')],
    ['active on create', { name: 'x', active: false }, invalid('Unknown field active', 'active')],
    ['a past expires_at', { name: 'x', expires_at: '2020-01-01T00:00:00Z' }, invalid('expires_at must be in the future', 'expires_at')],
    ['expires_at now', { name: 'x', expires_at: '2026-11-22T12:00:00Z' }, invalid('expires_at must be in the future', 'expires_at')],
    [
      'an impossible date',
      { name: 'x', expires_at: '2027-02-30T00:00:00Z' },
      invalid('expires_at must be an ISO 8601 date-time with a time zone, e.g. 2025-12-31T00:00:00Z', 'expires_at'),
    ],
    [
      'a date-time without zone',
      { name: 'x', expires_at: '2027-01-01T00:00:00' },
      invalid('expires_at must be an ISO 8601 date-time with a time zone, e.g. 2025-12-31T00:00:00Z', 'expires_at'),
    ],
    ['a lone surrogate in the name', '{"name":"\\ud800"}', invalid('name must be valid Unicode text', 'name')],
    [
      'hour 24',
      { name: 'x', expires_at: '2027-01-01T24:00:00Z' },
      invalid('expires_at must be an ISO 8601 date-time with a time zone, e.g. 2025-12-31T00:00:00Z', 'expires_at'),
    ],
    [
      'an offset without a colon',
      { name: 'x', expires_at: '2027-01-01T10:00:00+0200' },
      invalid('expires_at must be an ISO 8601 date-time with a time zone, e.g. 2025-12-31T00:00:00Z', 'expires_at'),
    ],
    [
      'a free-text date',
      { name: 'x', expires_at: 'next tuesday' },
      invalid('expires_at must be an ISO 8601 date-time with a time zone, e.g. 2025-12-31T00:00:00Z', 'expires_at'),
    ],
    [
      'a numeric expires_at',
      { name: 'x', expires_at: 1893456000 },
      invalid('expires_at must be an ISO 8601 date-time string or null', 'expires_at'),
    ],
    [
      'minute 60',
      { name: 'x', expires_at: '2027-01-01T10:60:00Z' },
      invalid('expires_at must be an ISO 8601 date-time with a time zone, e.g. 2025-12-31T00:00:00Z', 'expires_at'),
    ],
    ['a date in year 50', { name: 'x', expires_at: '0050-01-01' }, invalid('expires_at must be in the future', 'expires_at')],
    [
      'an extended year',
      { name: 'x', expires_at: '+002027-01-01' },
      invalid('expires_at must be an ISO 8601 date-time with a time zone, e.g. 2025-12-31T00:00:00Z', 'expires_at'),
    ],
    [
      'ten digits of a second',
      { name: 'x', expires_at: '2027-01-01T10:00:00.1234567891Z' },
      invalid('expires_at must be an ISO 8601 date-time with a time zone, e.g. 2025-12-31T00:00:00Z', 'expires_at'),
    ],
    ['a negative limit', { name: 'x', limit: -1 }, invalid('limit must be a number of USD ≥ 0, or null', 'limit')],
    ['a limit over $1e12', { name: 'x', limit: 1e12 + 1 }, invalid('limit must be a number of USD ≥ 0, or null', 'limit')],
    ['a string limit', { name: 'x', limit: '5' }, invalid('limit must be a number of USD ≥ 0, or null', 'limit')],
    [
      'an unknown limit_reset',
      { name: 'x', limit_reset: 'hourly' },
      invalid('limit_reset must be "daily", "weekly", "monthly" or null', 'limit_reset'),
    ],
    [
      'a rate_limit array',
      { name: 'x', rate_limit: [] },
      invalid('rate_limit must be an object {requests, interval, tokens?} or null', 'rate_limit'),
    ],
    [
      'a numeric rate_limit',
      { name: 'x', rate_limit: 5 },
      invalid('rate_limit must be an object {requests, interval, tokens?} or null', 'rate_limit'),
    ],
    [
      'rate_limit requests 0',
      { name: 'x', rate_limit: { requests: 0, interval: '1m' } },
      invalid('rate_limit.requests must be an integer ≥ 1', 'rate_limit.requests'),
    ],
    [
      'rate_limit requests 1.5',
      { name: 'x', rate_limit: { requests: 1.5, interval: '1m' } },
      invalid('rate_limit.requests must be an integer ≥ 1', 'rate_limit.requests'),
    ],
    [
      'rate_limit interval 10x',
      { name: 'x', rate_limit: { requests: 1, interval: '10x' } },
      invalid('rate_limit.interval must look like "10s", "1m", "1h" or "1d" (at most 366 days)', 'rate_limit.interval'),
    ],
    [
      'rate_limit interval in an array',
      { name: 'x', rate_limit: { requests: 1, interval: ['1m'] } },
      invalid('rate_limit.interval must look like "10s", "1m", "1h" or "1d" (at most 366 days)', 'rate_limit.interval'),
    ],
    [
      'rate_limit interval 0s',
      { name: 'x', rate_limit: { requests: 1, interval: '0s' } },
      invalid('rate_limit.interval must look like "10s", "1m", "1h" or "1d" (at most 366 days)', 'rate_limit.interval'),
    ],
    [
      'rate_limit tokens 0',
      { name: 'x', rate_limit: { requests: 1, interval: '1m', tokens: 0 } },
      invalid('rate_limit.tokens must be an integer ≥ 1', 'rate_limit.tokens'),
    ],
    [
      'a rate_limit extra field',
      { name: 'x', rate_limit: { requests: 1, interval: '1m', burst: 2 } },
      invalid('Unknown field rate_limit.burst', 'rate_limit.burst'),
    ],
    ['invalid JSON', '{"name": "x",', invalid('Request body is not valid JSON')],
  ])('answers 400 to a create with %s and stores nothing', async (_label, body, expected) => {
    let pending = request(app).post('/api/keys').set(admin());
    if (typeof body === 'string') pending = pending.set('Content-Type', 'application/json').send(body);
    else if (body !== undefined) pending = pending.send(body as object);
    const response = await pending;
    expect({ status: response.status, type: response.headers['content-type'], body: response.body }).toEqual({
      status: 400,
      type: 'application/json',
      body: expected,
    });
    expect((await store.listKeys(seeded.account.id, { type: 'proxy', limit: 100 })).keys).toHaveLength(1);
  });

  it('answers 400 with the param for a bad models list on create and update, and stores nothing', async () => {
    const many = Array.from({ length: 101 }, (_, i) => `m${i}`);
    for (const [models, message, param] of [
      ['gpt-4o', 'models must be null (every model) or an array of 1 to 100 model names', 'models'],
      [[], 'models must be null (every model) or an array of 1 to 100 model names', 'models'],
      [many, 'models must be null (every model) or an array of 1 to 100 model names', 'models'],
      [['gpt-4o', 7], 'models[1] must be a model name of 1 to 200 characters', 'models[1]'],
      [[''], 'models[0] must be a model name of 1 to 200 characters', 'models[0]'],
      [['x'.repeat(201)], 'models[0] must be a model name of 1 to 200 characters', 'models[0]'],
      [['gpt 4o'], 'models[0] must not contain whitespace or control characters', 'models[0]'],
      [['gpt\u00004o'], 'models[0] must not contain whitespace or control characters', 'models[0]'],
      [['*'], 'models[0] cannot be a lone "*": use null to allow every model', 'models[0]'],
      [['gpt-*-mini'], 'models[0] may contain "*" only at its end (a prefix, e.g. "gpt-4o*")', 'models[0]'],
      [['a', 'b', 'a'], 'models[2] repeats "a"', 'models[2]'],
      [[seeded.proxyKey], 'models[0] must not contain an API key', 'models[0]'],
    ] as const) {
      const created = await request(app).post('/api/keys').set(admin()).send({ name: 'x', models });
      expect({ status: created.status, body: created.body }).toEqual({ status: 400, body: invalid(message, param) });
      const updated = await request(app).patch(`/api/keys/${seeded.proxyKeyId}`).set(admin()).send({ models });
      expect({ status: updated.status, body: updated.body }).toEqual({ status: 400, body: invalid(message, param) });
    }
    expect((await store.listKeys(seeded.account.id, { type: 'proxy', limit: 100 })).keys).toHaveLength(1);
    expect((await store.getKey(seeded.proxyKeyId))?.models).toBeNull();
  });

  it('accepts every field at the edge of what it takes, on create and on update', async () => {
    // 100 code points, the last one two UTF-16 units long; a model name of 200 characters.
    const name = `${'n'.repeat(99)}\u{1F511}`;
    const model = 'm'.repeat(200);
    const created = await request(app)
      .post('/api/keys')
      .set(admin())
      .send({ name, expires_at: null, limit: 0, limit_reset: 'daily', models: [model] });
    const expected = {
      id: expect.any(Number),
      name,
      prefix: expect.any(String),
      active: true,
      createdAt: '2026-11-22T12:00:00Z',
      expiresAt: null,
      lastUsedAt: null,
      usage: 0,
      limit: 0,
      limitReset: 'daily',
      rateLimit: null,
      models: [model],
    };
    expect({ status: created.status, body: created.body }).toEqual({ status: 201, body: { ...expected, key: expect.any(String) } });
    const updated = await request(app)
      .patch(`/api/keys/${created.body.id}`)
      .set(admin())
      .send({ expires_at: '2026-11-22T23:59:59Z', limit: 1e12 });
    expect({ status: updated.status, body: updated.body }).toEqual({
      status: 200,
      body: { ...expected, id: created.body.id, expiresAt: '2026-11-22T23:59:59Z', limit: 1e12 },
    });
    const cleared = await request(app).patch(`/api/keys/${created.body.id}`).set(admin()).send({ expires_at: null });
    expect({ status: cleared.status, body: cleared.body }).toEqual({ status: 200, body: { ...updated.body, expiresAt: null } });
  });

  it('takes expires_at without seconds, with up to nine digits of a second, or with an offset, and answers it in UTC', async () => {
    const before = await request(app).get(`/api/keys/${seeded.proxyKeyId}`).set(admin());
    for (const [expiresAt, expected] of [
      ['2027-01-01T10:00Z', '2027-01-01T10:00:00Z'],
      ['2027-01-01T10:00:00.123456789Z', '2027-01-01T10:00:00.123Z'],
      ['2027-01-01T10:00:00+02:00', '2027-01-01T08:00:00Z'],
      ['2027-01-01T10:00:00-05:30', '2027-01-01T15:30:00Z'],
    ] as const) {
      const response = await request(app).patch(`/api/keys/${seeded.proxyKeyId}`).set(admin()).send({ expires_at: expiresAt });
      expect({ status: response.status, body: response.body }).toEqual({ status: 200, body: { ...before.body, expiresAt: expected } });
    }
  });

  it('keeps a models list of 100 names in the order given', async () => {
    const models = Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? `model-${i}` : `family-${i}*`));
    const created = await request(app).post('/api/keys').set(admin()).send({ name: 'wide', models });
    expect(created.status).toBe(201);
    expect(created.body.models).toEqual(models);
    expect((await request(app).get(`/api/keys/${created.body.id}`).set(admin())).body.models).toEqual(models);
  });

  it('answers 400 to a query parameter on routes that take none', async () => {
    for (const [pending, name] of [
      [request(app).get(`/api/keys/${seeded.proxyKeyId}?expand=1`).set(admin()), 'expand'],
      [request(app).delete(`/api/keys/${seeded.proxyKeyId}?force=1`).set(admin()), 'force'],
      [request(app).post('/api/keys?dry_run=1').set(admin()).send({ name: 'x' }), 'dry_run'],
    ] as const) {
      const response = await pending;
      expect({ status: response.status, body: response.body }).toEqual({
        status: 400,
        body: invalid(`Unknown query parameter ${name}`, name),
      });
    }
    expect(await store.getKey(seeded.proxyKeyId)).not.toBeNull();
    expect((await store.listKeys(seeded.account.id, { type: 'proxy', limit: 100 })).keys).toHaveLength(1);
  });

  it('answers 413 to a body over the limit and stores nothing', async () => {
    const response = await request(app)
      .post('/api/keys')
      .set(admin())
      .send({ name: 'x', padding: 'y'.repeat(20_000) });
    expect({ status: response.status, body: response.body }).toEqual({
      status: 413,
      body: {
        error: {
          message: 'Request body is larger than the limit of 16384 bytes',
          type: 'invalid_request_error',
          code: 'request_too_large',
        },
      },
    });
    expect((await store.listKeys(seeded.account.id, { type: 'proxy', limit: 100 })).keys).toHaveLength(1);
  });

  it('answers 400 to an update with a bad field and leaves the key unchanged', async () => {
    const before = await store.getKey(seeded.proxyKeyId);
    for (const [body, expected] of [
      [{ active: 'no' }, invalid('active must be true or false', 'active')],
      [{ name: 'ok', limit: -5 }, invalid('limit must be a number of USD ≥ 0, or null', 'limit')],
      [{ usage: 0 }, invalid('usage cannot be set', 'usage')],
      [{ id: 99 }, invalid('id cannot be set', 'id')],
      [{ expires_at: '1999-01-01' }, invalid('expires_at must be in the future', 'expires_at')],
    ] as const) {
      const response = await request(app).put(`/api/keys/${seeded.proxyKeyId}`).set(admin()).send(body);
      expect({ status: response.status, body: response.body }).toEqual({ status: 400, body: expected });
    }
    expect(await store.getKey(seeded.proxyKeyId)).toEqual(before);
  });

  it('updates every mutable field with PUT and PATCH', async () => {
    const response = await request(app)
      .patch(`/api/keys/${seeded.proxyKeyId}`)
      .set(admin())
      .send({
        name: 'Renamed',
        active: false,
        expires_at: '2027-01-01',
        limit: 3,
        limit_reset: 'weekly',
        rate_limit: { requests: 5, interval: '1h' },
        models: ['gpt-4o*'],
      });
    expect(response.status).toBe(200);
    expect(response.body).toEqual({
      id: seeded.proxyKeyId,
      name: 'Renamed',
      prefix: seeded.proxyKey.slice(0, 7),
      active: false,
      createdAt: '2026-11-22T12:00:00Z',
      expiresAt: '2027-01-01T00:00:00Z',
      lastUsedAt: null,
      usage: 0,
      limit: 3,
      limitReset: 'weekly',
      rateLimit: { requests: 5, interval: '1h' },
      models: ['gpt-4o*'],
    });
    const cleared = await request(app)
      .put(`/api/keys/${seeded.proxyKeyId}`)
      .set(admin())
      .send({ limit: null, limit_reset: null, rate_limit: null, models: null });
    expect([cleared.body.limit, cleared.body.limitReset, cleared.body.rateLimit, cleared.body.models]).toEqual([null, null, null, null]);
  });

  it.each(['abc', '0', '-1', '1.5', '1e3', '99999999999999999999'])('answers 400 for the id %s', async (id) => {
    const response = await request(app).get(`/api/keys/${id}`).set(admin());
    expect({ status: response.status, body: response.body }).toEqual({ status: 400, body: invalid('id must be a positive integer', 'id') });
  });

  it('answers 404 for an unknown id on every route', async () => {
    const notFound = { error: { message: 'No API key with id 424242', type: 'not_found_error', code: 'key_not_found', param: 'id' } };
    for (const method of ['get', 'put', 'patch', 'delete'] as const) {
      const response = await request(app)
        [method]('/api/keys/424242')
        .set(admin())
        .send(method === 'get' || method === 'delete' ? undefined : { name: 'x' });
      expect({ status: response.status, body: response.body }).toEqual({ status: 404, body: notFound });
    }
  });

  it("answers 404 for another account's key on GET, PUT, PATCH and DELETE, and leaves it unchanged (no BOLA)", async () => {
    const theirs = other.proxyKeyId;
    const before = await store.getKey(theirs);
    const notFound = { error: { message: `No API key with id ${theirs}`, type: 'not_found_error', code: 'key_not_found', param: 'id' } };
    const calls = [
      request(app).get(`/api/keys/${theirs}`).set(admin()),
      request(app).put(`/api/keys/${theirs}`).set(admin()).send({ name: 'pwned', active: false }),
      request(app).patch(`/api/keys/${theirs}`).set(admin()).send({ active: false }),
      request(app).delete(`/api/keys/${theirs}`).set(admin()),
    ];
    for (const response of await Promise.all(calls)) {
      expect({ status: response.status, body: response.body }).toEqual({ status: 404, body: notFound });
    }
    expect(await store.getKey(theirs)).toEqual(before);
    const stillWorks = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${other.proxyKey}`);
    expect(stillWorks.status).toBe(200);
  });

  it("answers 404 for the caller's own billing keys: /api/keys manages proxy keys only", async () => {
    const billing = (await store.listKeys(seeded.account.id, { type: 'billing', limit: 10 })).keys[0];
    const response = await request(app).delete(`/api/keys/${billing?.id}`).set(admin());
    expect(response.status).toBe(404);
    expect(await store.getKey(billing?.id as number)).not.toBeNull();
  });

  it('answers 405 with Allow for other methods, and passes unknown paths to the host', async () => {
    const response = await request(app).delete('/api/keys').set(admin());
    expect({ status: response.status, allow: response.headers.allow, body: response.body }).toEqual({
      status: 405,
      allow: 'GET, HEAD, POST',
      body: { error: { message: 'DELETE is not supported on this route', type: 'invalid_request_error', code: 'method_not_allowed' } },
    });
    const elsewhere = await request(app).get('/api/balance').set(admin());
    expect({ status: elsewhere.status, body: elsewhere.body }).toEqual({ status: 404, body: { host: 'not found' } });
  });
});

describe('keysRouter behind a host body parser', () => {
  it('uses the body express.json() already parsed', async () => {
    const store = new MemoryKeyStore();
    const seeded = await seedAccount(store, { hasher });
    const app = express();
    app.use(express.json());
    app.use('/api', keysRouter(store, { hasher }));
    const created = await request(app)
      .post('/api/keys')
      .set('Authorization', `Bearer ${seeded.billingKey}`)
      .send({ name: 'parsed by host' });
    expect(created.status).toBe(201);
    expect(created.body.name).toBe('parsed by host');
    const unknown = await request(app).post('/api/keys').set('Authorization', `Bearer ${seeded.billingKey}`).send({ name: 'x', extra: 1 });
    expect(unknown.body).toEqual(invalid('Unknown field extra', 'extra'));
  });
});

describe('keysRouter behind a middleware that consumed the body', () => {
  it('answers 400 instead of waiting for a stream that already ended', async () => {
    const store = new MemoryKeyStore();
    const seeded = await seedAccount(store, { hasher });
    const app = express();
    // A raw-body logger that reads the stream and leaves no req.body behind.
    app.use((req, _res, next) => {
      req.on('data', () => {});
      req.on('end', () => next());
    });
    app.use('/api', keysRouter(store, { hasher }));
    const response = await request(app).post('/api/keys').set('Authorization', `Bearer ${seeded.billingKey}`).send({ name: 'x' });
    expect({ status: response.status, body: response.body }).toEqual({
      status: 400,
      body: invalid('The request body was already consumed by another middleware; mount this router before it'),
    });
  });
});
