import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { API_KEY_PATTERN, MemoryKeyStore, parseApiKey } from '../../src/index.js';
import { buildApp } from '../app.js';
import { fastHasher, recordingLogger, seedAccount, testClock } from '../helpers.js';

/**
 * One scenario that exercises every path a key value could leak through: creation, listing,
 * use, wrong secrets, expiry, deactivation, deletion and a store outage. Every response, every
 * console call and every logger line is recorded and searched for key values.
 */
describe('key values never leak', () => {
  const consoleLines: string[] = [];
  const spies = (['log', 'info', 'warn', 'error', 'debug', 'trace'] as const).map((method) =>
    vi.spyOn(console, method).mockImplementation((...args: unknown[]) => {
      consoleLines.push(args.map(String).join(' '));
    }),
  );
  const logger = recordingLogger();
  const responses: { label: string; text: string }[] = [];
  const keys: string[] = [];
  const store = new MemoryKeyStore();
  const hasher = fastHasher();
  const clock = testClock();
  let createdKey = '';
  let accountId = '';

  beforeAll(async () => {
    const seeded = await seedAccount(store, { hasher, now: clock.now() });
    keys.push(seeded.billingKey, seeded.proxyKey);
    accountId = seeded.account.id;
    const app = buildApp('express5', store, { hasher, logger, now: clock.now });
    const record = async (label: string, pending: request.Test) => {
      const response = await pending;
      responses.push({ label, text: `${JSON.stringify(response.headers)}\n${response.text}` });
      return response;
    };
    const admin = { Authorization: `Bearer ${seeded.billingKey}` };
    const created = await record(
      'create',
      request(app).post('/api/keys').set(admin).send({ name: 'leak test', expires_at: '2026-11-23T00:00:00Z' }),
    );
    createdKey = created.body.key;
    keys.push(createdKey);
    await record('list', request(app).get('/api/keys').set(admin));
    await record('get', request(app).get(`/api/keys/${created.body.id}`).set(admin));
    await record('update', request(app).put(`/api/keys/${created.body.id}`).set(admin).send({ name: 'renamed' }));
    await record('use', request(app).get('/v1/whoami').set('Authorization', `Bearer ${createdKey}`));
    await record('key info', request(app).get('/v1/auth/key').set('Authorization', `Bearer ${createdKey}`));
    const wrongSecret = `${createdKey.slice(0, 20)}${createdKey[20] === 'a' ? 'b' : 'a'}${createdKey.slice(21)}`;
    await record('bad checksum', request(app).get('/v1/whoami').set('Authorization', `Bearer ${wrongSecret}`));
    await record('wrong type', request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.billingKey}`));
    await record('wrong type on /api', request(app).get('/api/keys').set('Authorization', `Bearer ${createdKey}`));
    await record('query token', request(app).get(`/v1/whoami?key=${createdKey}`));
    await record(
      'two headers',
      request(app)
        .get('/v1/whoami')
        // supertest's types take arrays only for Cookie; Node sends one header line per element.
        .set('Authorization' as 'Cookie', [`Bearer ${createdKey}`, `Bearer ${createdKey}`]),
    );
    await record('deactivate', request(app).put(`/api/keys/${created.body.id}`).set(admin).send({ active: false }));
    await record('deactivated', request(app).get('/v1/whoami').set('Authorization', `Bearer ${createdKey}`));
    await record('reactivate', request(app).put(`/api/keys/${created.body.id}`).set(admin).send({ active: true }));
    clock.advance(86_400_000);
    await record('expired', request(app).get('/v1/whoami').set('Authorization', `Bearer ${createdKey}`));
    const original = store.getKeyByHandle.bind(store);
    store.getKeyByHandle = () => Promise.reject(new Error('store down'));
    await record('outage', request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`));
    store.getKeyByHandle = original;
    await record('delete', request(app).delete(`/api/keys/${created.body.id}`).set(admin));
    await record('deleted', request(app).get('/v1/whoami').set('Authorization', `Bearer ${createdKey}`));
  });

  afterAll(() => {
    for (const spy of spies) spy.mockRestore();
  });

  it('exercised the scenario (sanity check of the recording)', () => {
    expect(responses).toHaveLength(18);
    expect(parseApiKey(createdKey)?.type).toBe('proxy');
    expect(logger.lines.length).toBeGreaterThan(0);
  });

  it('shows the key value in the create response and in no other response', () => {
    const containing = responses.filter((r) => keys.some((key) => r.text.includes(key)) || API_KEY_PATTERN.test(r.text));
    expect(containing.map((r) => r.label)).toEqual(['create']);
  });

  it('never writes a key value, or its secret part, to the console or the logger', () => {
    const everything = [...consoleLines, ...logger.lines].join('\n');
    for (const key of keys) {
      expect(everything).not.toContain(key);
      expect(everything).not.toContain(key.slice(13, 35));
    }
    expect(API_KEY_PATTERN.test(everything)).toBe(false);
  });

  it('never stores the key value or its secret, only the non-secret handle and prefix', async () => {
    const stored = JSON.stringify([
      await store.listKeys(accountId, { type: 'proxy', limit: 100 }),
      await store.listKeys(accountId, { type: 'billing', limit: 100 }),
    ]);
    expect(stored).toContain(parseApiKey(keys[0] as string)?.handle);
    for (const key of keys) {
      expect(stored).not.toContain(key);
      expect(stored).not.toContain(key.slice(13, 35));
    }
  });
});
