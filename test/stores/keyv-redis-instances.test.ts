import { randomBytes } from 'node:crypto';
import Keyv from 'keyv';
import request from 'supertest';
import { afterAll, describe, expect, it } from 'vitest';
import { KeyvKeyStore } from '../../src/store/keyv/keyv-store.js';
import { sampleKeyRecord } from '../../src/testing/index.js';
import type { KeyStore, LedgerEntry, NewKeyRecord } from '../../src/store/types.js';
import { buildApp } from '../app.js';
import { fastHasher, recordingLogger, seedAccount, testClock } from '../helpers.js';
import { REDIS_URL, redisKeyv, redisSkipReason, removeKeys, runPrefix } from './redis-env.js';

const hasher = fastHasher();
const INVALID_TOKEN = 'Bearer realm="modelswitch", error="invalid_token"';

/** A proxy key record with a filler hash: listing tests need many keys, not scrypt. */
function fillerKey(accountId: string, name: string): NewKeyRecord {
  return sampleKeyRecord(accountId, { name, hash: randomBytes(48).toString('base64') });
}

async function insertMany(store: KeyStore, accountId: string, count: number, concurrency = 100): Promise<void> {
  let next = 0;
  async function worker(): Promise<void> {
    while (next < count) {
      next++;
      await store.insertKey(fillerKey(accountId, `k${next}`));
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
}

describe.skipIf(!REDIS_URL)(`several gateway instances sharing one Redis${redisSkipReason ? ` (${redisSkipReason})` : ''}`, () => {
  const url = REDIS_URL as string;
  const prefix = runPrefix();
  const clock = testClock();
  // Two apps, each with its own store and its own Redis connection, as two processes would have.
  const storeA = new KeyvKeyStore(redisKeyv(url), { prefix });
  const storeB = new KeyvKeyStore(redisKeyv(url), { prefix });
  const appA = buildApp('express5', storeA, { hasher, logger: recordingLogger(), now: clock.now });
  const appB = buildApp('express4', storeB, { hasher, logger: recordingLogger(), now: clock.now });

  afterAll(async () => {
    await Promise.all([storeA.close(), storeB.close()]);
    await removeKeys(url, prefix);
  });

  it('a key created on one instance works on the other, and a deactivation or delete on one is refused on the other at once', async () => {
    const seeded = await seedAccount(storeA, { hasher, now: clock.now() });
    const created = await request(appA).post('/api/keys').set('Authorization', `Bearer ${seeded.billingKey}`).send({ name: 'shared' });
    expect(created.status).toBe(201);
    const key = created.body.key as string;
    const info = await request(appB).get('/v1/auth/key').set('Authorization', `Bearer ${key}`);
    expect({ status: info.status, body: info.body }).toEqual({
      status: 200,
      body: {
        data: {
          label: 'shared',
          usage: 0,
          limit: 10,
          is_free_tier: false,
          rate_limit: { requests: 1000, interval: '10s' },
          key_limit: null,
          key_limit_remaining: null,
          limit_reset: null,
          expires_at: null,
          models: null,
        },
      },
    });

    const deactivated = await request(appA)
      .patch(`/api/keys/${created.body.id}`)
      .set('Authorization', `Bearer ${seeded.billingKey}`)
      .send({ active: false });
    expect(deactivated.status).toBe(200);
    const refused = await request(appB).get('/v1/whoami').set('Authorization', `Bearer ${key}`);
    expect({ status: refused.status, type: refused.headers['content-type'], body: refused.body }).toEqual({
      status: 403,
      type: 'application/json',
      body: { error: { message: 'API key has been deactivated', type: 'permission_error', code: 'key_deactivated' } },
    });

    const deleted = await request(appB).delete(`/api/keys/${created.body.id}`).set('Authorization', `Bearer ${seeded.billingKey}`);
    expect({ status: deleted.status, body: deleted.body }).toEqual({ status: 200, body: { id: created.body.id, deleted: true } });
    const gone = await request(appA).get('/v1/whoami').set('Authorization', `Bearer ${key}`);
    expect({ status: gone.status, challenge: gone.headers['www-authenticate'], body: gone.body }).toEqual({
      status: 401,
      challenge: INVALID_TOKEN,
      body: { error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } },
    });
  });

  it('a rate limit of N per interval admits exactly N across both instances under a concurrent burst', async () => {
    const seeded = await seedAccount(storeB, { hasher, now: clock.now() });
    const created = await request(appB)
      .post('/api/keys')
      .set('Authorization', `Bearer ${seeded.billingKey}`)
      .send({ name: 'limited', rate_limit: { requests: 10, interval: '1m' } });
    const key = created.body.key as string;
    const burst = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        request(i % 2 === 0 ? appA : appB)
          .get('/v1/whoami')
          .set('Authorization', `Bearer ${key}`),
      ),
    );
    expect(burst.filter((r) => r.status === 200)).toHaveLength(10);
    expect(burst.filter((r) => r.status === 429)).toHaveLength(50);
    const limited = burst.find((r) => r.status === 429) as request.Response;
    expect({
      status: limited.status,
      retryAfter: limited.headers['retry-after'],
      remaining: limited.headers['ratelimit-remaining'],
      body: limited.body,
    }).toEqual({
      status: 429,
      retryAfter: '60',
      remaining: '0',
      body: {
        error: {
          message: 'Rate limit exceeded: 10 requests per 1m for this key. Retry after the window resets.',
          type: 'rate_limit_error',
          code: 'rate_limit_exceeded',
        },
      },
    });
  });

  it('200 concurrent settlements split across both instances lose no usage, balance or ledger entry, and reservations hold the limit across both', async () => {
    const seeded = await seedAccount(storeA, { hasher, balance: 100, now: clock.now() });
    const day = new Date(clock.now()).toISOString().slice(0, 10);
    const entries = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        (i % 2 === 0 ? storeA : storeB).settleSpend({
          keyId: seeded.proxyKeyId,
          accountId: seeded.account.id,
          holdId: null,
          cost: 0.01,
          period: null,
          now: clock.now() + i,
          usage: {
            model: i % 4 < 2 ? 'gpt-4o' : 'gpt-4o-mini',
            promptTokens: 3,
            completionTokens: 5,
            requestId: `req_${i}`,
            upstreamId: null,
          },
        }),
      ),
    );
    const key = await storeB.getKey(seeded.proxyKeyId);
    expect(key?.usage).toBeCloseTo(2, 10);
    const account = await storeA.getAccount(seeded.account.id);
    expect(account?.balance).toBeCloseTo(98, 10);
    // One entry per settlement, ids unique, and in id order each balanceAfter follows from the previous one.
    const ledger = await storeB.listLedger(seeded.account.id, { limit: 1000 });
    expect(ledger.hasMore).toBe(false);
    expect(ledger.entries).toHaveLength(201);
    expect(new Set(entries.map((entry) => entry?.id)).size).toBe(200);
    const ordered = [...ledger.entries].reverse();
    expect(ordered[0]).toMatchObject({ type: 'credit', reference: 'opening', amount: 100, balanceAfter: 100 });
    for (let i = 1; i < ordered.length; i++) {
      expect((ordered[i] as LedgerEntry).balanceAfter).toBeCloseTo((ordered[i - 1] as LedgerEntry).balanceAfter - 0.01, 9);
    }
    expect(ordered.at(-1)?.balanceAfter).toBe(account?.balance);
    const rows = await storeA.getUsage(seeded.account.id, { from: day, to: day });
    expect(rows.map((row) => ({ ...row, cost: Math.round(row.cost * 1e9) / 1e9 })).sort((a, b) => a.model.localeCompare(b.model))).toEqual([
      { date: day, keyId: seeded.proxyKeyId, model: 'gpt-4o', requests: 100, promptTokens: 300, completionTokens: 500, cost: 1 },
      { date: day, keyId: seeded.proxyKeyId, model: 'gpt-4o-mini', requests: 100, promptTokens: 300, completionTokens: 500, cost: 1 },
    ]);

    await storeA.updateKey(seeded.proxyKeyId, { limit: 12 });
    const now = clock.now();
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        (i % 2 === 0 ? storeA : storeB).reserveSpend({
          keyId: seeded.proxyKeyId,
          accountId: seeded.account.id,
          amount: 1,
          period: null,
          now,
          expiresAt: now + 60_000,
        }),
      ),
    );
    expect(results.filter((r) => r.ok)).toHaveLength(10);
  });

  it('lists 100,000 keys of one account in pages of 1000 through /api/keys without scanning other keys', { timeout: 120_000 }, async () => {
    const seeded = await seedAccount(storeA, { hasher, now: clock.now() });
    await insertMany(storeA, seeded.account.id, 100_000, 200);
    const seen: number[] = [];
    let after: number | undefined;
    for (;;) {
      const page = await request(after === undefined || seen.length % 2 === 0 ? appB : appA)
        .get(`/api/keys?limit=1000${after === undefined ? '' : `&after=${after}`}`)
        .set('Authorization', `Bearer ${seeded.billingKey}`);
      expect(page.status).toBe(200);
      const ids = (page.body.keys as Array<{ id: number }>).map((k) => k.id);
      seen.push(...ids);
      if (!page.body.has_more) break;
      after = ids.at(-1);
    }
    // The seeded proxy key plus the 100,000 inserted, in ascending order, each once.
    expect(seen).toHaveLength(100_001);
    expect(seen.every((id, i) => i === 0 || id > (seen[i - 1] as number))).toBe(true);
  });
});

describe('KeyvKeyStore listing on a non-Redis adapter (chunked index)', () => {
  it('lists across index chunks in order after deletes, in pages', async () => {
    const store = new KeyvKeyStore(new Keyv());
    const owner = await store.createAccount({ id: 'acct_chunks', balance: 0, reserved: 0, isFreeTier: false, createdAt: 0 });
    await insertMany(store, owner.id, 2500, 10);
    const all = await store.listKeys(owner.id, { type: 'proxy', limit: 1000 });
    const ids = all.keys.map((k) => k.id);
    // Delete a whole first chunk's tail, one in the middle chunk and the very last key.
    for (const id of [...ids.slice(990, 1000), 1500, 2500]) await store.deleteKey(id);
    const seen: number[] = [];
    let after: number | undefined;
    for (;;) {
      const page = await store.listKeys(owner.id, { type: 'proxy', limit: 333, ...(after === undefined ? {} : { after }) });
      seen.push(...page.keys.map((k) => k.id));
      if (!page.hasMore) break;
      after = seen.at(-1);
    }
    const expected = Array.from({ length: 2500 }, (_, i) => i + 1).filter((id) => !(id > 990 && id <= 1000) && id !== 1500 && id !== 2500);
    expect(seen).toEqual(expected);
  });
});
