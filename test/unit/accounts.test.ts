import request from 'supertest';
import { describe, expect, it, vi } from 'vitest';
import { ConfigurationError } from '../../src/errors/configuration-error.js';
import {
  MemoryKeyStore,
  adjustBalance,
  createAccount,
  creditBalance,
  generateApiKey,
  issueKey,
  keysRouter,
  modelSwitchAuth,
  parseApiKey,
  prepareRotation,
} from '../../src/index.js';
import { buildApp } from '../app.js';
import { fastHasher, seedAccount } from '../helpers.js';

const hasher = fastHasher();

describe('accounts and billing keys (programmatic API)', () => {
  it('creates an account with a random id, a balance and a free-tier flag', async () => {
    const store = new MemoryKeyStore();
    const account = await createAccount(store, { balance: 10, isFreeTier: true, now: 1000 });
    expect(account).toEqual({ id: expect.stringMatching(/^acct_[\w-]{16}$/), balance: 10, reserved: 0, isFreeTier: true, createdAt: 1000 });
    expect(await store.getAccount(account.id)).toEqual(account);
  });

  it("takes the host's own account id and refuses a duplicate", async () => {
    const store = new MemoryKeyStore();
    await createAccount(store, { id: 'user-42' });
    await expect(createAccount(store, { id: 'user-42' })).rejects.toThrow();
    await expect(createAccount(store, { id: 'has space' })).rejects.toThrow(TypeError);
  });

  it('credits and debits balances atomically', async () => {
    const store = new MemoryKeyStore();
    const account = await createAccount(store, { balance: 1 });
    await Promise.all(Array.from({ length: 100 }, () => creditBalance(store, account.id, 0.5)));
    expect((await store.getAccount(account.id))?.balance).toBe(51);
    expect(await creditBalance(store, 'nobody', 1)).toBeNull();
    await expect(creditBalance(store, account.id, Number.NaN)).rejects.toThrow(TypeError);
  });

  it('writes an opening balance as the first ledger entry, and none for 0', async () => {
    const store = new MemoryKeyStore();
    const account = await createAccount(store, { balance: 10, now: 1000 });
    expect(await store.listLedger(account.id, { limit: 10 })).toEqual({
      entries: [
        {
          id: expect.any(Number),
          accountId: account.id,
          type: 'credit',
          amount: 10,
          balanceAfter: 10,
          keyId: null,
          model: null,
          promptTokens: null,
          completionTokens: null,
          requestId: null,
          upstreamId: null,
          reference: 'opening',
          note: null,
          createdAt: 1000,
        },
      ],
      hasMore: false,
    });
    const empty = await createAccount(store);
    expect(await store.listLedger(empty.id, { limit: 10 })).toEqual({ entries: [], hasMore: false });
  });

  it('credits once per reference and answers the first entry for a repeat (a webhook delivered twice)', async () => {
    const store = new MemoryKeyStore();
    const account = await createAccount(store, { balance: 1, now: 0 });
    const first = await creditBalance(store, account.id, 25, { reference: 'evt_1', note: 'Stripe checkout', now: 5000 });
    expect(first).toEqual({
      account: { ...account, balance: 26 },
      entry: expect.objectContaining({
        type: 'credit',
        amount: 25,
        balanceAfter: 26,
        reference: 'evt_1',
        note: 'Stripe checkout',
        createdAt: 5000,
      }),
      applied: true,
    });
    const again = await creditBalance(store, account.id, 25, { reference: 'evt_1', now: 6000 });
    expect(again).toEqual({ account: { ...account, balance: 26 }, entry: first?.entry, applied: false });
    // Without a reference each call is a new credit: not idempotent, as documented.
    const loose = await creditBalance(store, account.id, 1);
    const looseAgain = await creditBalance(store, account.id, 1);
    expect(loose?.entry.reference).toMatch(/^credit_[\w-]{16}$/);
    expect(looseAgain?.entry.reference).not.toBe(loose?.entry.reference);
    expect((await store.getAccount(account.id))?.balance).toBe(28);
    for (const bad of [0, -1, Number.NaN]) await expect(creditBalance(store, account.id, bad)).rejects.toThrow(TypeError);
    await expect(creditBalance(store, account.id, 1, { reference: '' })).rejects.toThrow(
      new TypeError('creditBalance: reference must be a string of 1–200 characters'),
    );
    await expect(creditBalance(store, account.id, 1, { reference: 'r', note: 'n'.repeat(1001) })).rejects.toThrow(TypeError);
    expect((await store.getAccount(account.id))?.balance).toBe(28);
  });

  it('adjusts a balance either way once per reference; 0 or a missing reference is refused', async () => {
    const store = new MemoryKeyStore();
    const account = await createAccount(store, { balance: 10 });
    const refund = await adjustBalance(store, account.id, -4.5, { reference: 'ticket-812', note: 'duplicate top-up', now: 7 });
    expect(refund?.applied).toBe(true);
    expect(refund?.entry).toMatchObject({
      type: 'adjustment',
      amount: -4.5,
      balanceAfter: 5.5,
      reference: 'ticket-812',
      note: 'duplicate top-up',
    });
    expect((await adjustBalance(store, account.id, -4.5, { reference: 'ticket-812' }))?.applied).toBe(false);
    expect((await adjustBalance(store, account.id, 2, { reference: 'goodwill' }))?.account.balance).toBe(7.5);
    expect(await adjustBalance(store, 'nobody', 1, { reference: 'x' })).toBeNull();
    await expect(adjustBalance(store, account.id, 0, { reference: 'zero' })).rejects.toThrow(TypeError);
    await expect(adjustBalance(store, account.id, 1, {} as never)).rejects.toThrow(TypeError);
    await expect(adjustBalance(store, account.id, -2e12, { reference: 'huge' })).rejects.toThrow(TypeError);
    expect((await store.getAccount(account.id))?.balance).toBe(7.5);
  });

  it('prepares a rotation: the same handle and prefix, a new secret that verifies, and the grace deadline', async () => {
    const store = new MemoryKeyStore();
    const account = await createAccount(store);
    const issued = await issueKey(store, { accountId: account.id, type: 'proxy', name: 'ci' }, { hasher });
    const { key, rotation } = await prepareRotation(issued.record, { hasher, now: 1000, gracePeriodMs: 60_000 });
    const parsed = parseApiKey(key);
    expect(parsed).toMatchObject({ type: 'proxy', handle: issued.record.handle, prefix: issued.record.prefix });
    expect(key).not.toBe(issued.key);
    expect(rotation).toEqual({ id: issued.record.id, hash: expect.any(String), previousKeyExpiresAt: 61_000, now: 1000 });
    expect(await hasher.verify(key, rotation.hash, issued.record.handle)).toBe(true);
    expect(await hasher.verify(issued.key, rotation.hash, issued.record.handle)).toBe(false);
    const rotated = await store.rotateKey(rotation);
    expect(rotated).toEqual({ ...issued.record, hash: rotation.hash, previousHash: issued.record.hash, previousKeyExpiresAt: 61_000 });
    expect((await prepareRotation(issued.record, { hasher, now: 1000 })).rotation.previousKeyExpiresAt).toBeNull();
    for (const gracePeriodMs of [-1, Number.NaN, 7 * 86_400_000 + 1]) {
      await expect(prepareRotation(issued.record, { hasher, gracePeriodMs })).rejects.toThrow(TypeError);
    }
    await expect(prepareRotation({ ...issued.record, handle: 'short' }, { hasher })).rejects.toThrow(TypeError);
  });

  it('issues a billing key, returned once, that works on /api and only its hash is stored', async () => {
    const store = new MemoryKeyStore();
    const account = await createAccount(store, { balance: 5 });
    const issued = await issueKey(store, { accountId: account.id, type: 'billing', name: 'ops' }, { hasher });
    expect(parseApiKey(issued.key)?.type).toBe('billing');
    expect(issued.record).toMatchObject({
      type: 'billing',
      accountId: account.id,
      name: 'ops',
      prefix: issued.key.slice(0, 7),
      active: true,
    });
    expect(JSON.stringify(issued.record)).not.toContain(issued.key.slice(13));
    expect(await hasher.verify(issued.key, issued.record.hash, issued.record.handle)).toBe(true);
    const response = await request(buildApp('express5', store, { hasher }))
      .get('/api/keys')
      .set('Authorization', `Bearer ${issued.key}`);
    expect(response.status).toBe(200);
    expect(response.body).toEqual({ keys: [], has_more: false });
  });
});

describe('the hot path before the store', () => {
  it('never reads the store for an invented or mistyped key, a wrong type or a malformed header', async () => {
    const store = new MemoryKeyStore();
    const seeded = await seedAccount(store, { hasher });
    const reads = vi.spyOn(store, 'getKeyByHandle');
    const app = buildApp('express5', store, { hasher });
    const invented = generateApiKey('proxy').value;
    for (const header of [
      `Bearer ${invented.slice(0, -1)}${invented.at(-1) === 'x' ? 'y' : 'x'}`,
      `Bearer ms-${'a'.repeat(38)}`,
      `Bearer ${seeded.billingKey}`,
      'Bearer',
      'Basic abc',
    ]) {
      expect((await request(app).get('/v1/whoami').set('Authorization', header)).status).toBe(401);
    }
    expect(reads).not.toHaveBeenCalled();
  });
});

describe('lastUsedAt writes', () => {
  it('writes lastUsedAt once for a burst of concurrent requests of one key', async () => {
    const store = new MemoryKeyStore();
    const seeded = await seedAccount(store, { hasher });
    const touches = vi.spyOn(store, 'touchKey');
    const app = buildApp('express5', store, { hasher });
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`)),
    );
    expect(answers.map((a) => a.status)).toEqual(Array.from({ length: 20 }, () => 200));
    expect(touches).toHaveBeenCalledTimes(1);
  });
});

describe('misconfiguration is caught when the middleware is created', () => {
  it('throws ConfigurationError ERR_MS_STORE without a store', () => {
    expect(() => modelSwitchAuth(undefined as never)).toThrow(ConfigurationError);
    expect(() => keysRouter({} as never)).toThrowError(/store must implement KeyStore/);
    try {
      modelSwitchAuth(null as never);
    } catch (error) {
      expect((error as ConfigurationError).code).toBe('ERR_MS_STORE');
    }
  });

  it('turns off rate limiting with defaultRateLimit: null (and key info says so)', async () => {
    const store = new MemoryKeyStore();
    const seeded = await seedAccount(store, { hasher });
    const app = buildApp('express5', store, { hasher, defaultRateLimit: null });
    const response = await request(app).get('/v1/auth/key').set('Authorization', `Bearer ${seeded.proxyKey}`);
    expect(response.headers['ratelimit-limit']).toBeUndefined();
    expect(response.body.data.rate_limit).toBeNull();
  });
});
