import request from 'supertest';
import { describe, expect, it, vi } from 'vitest';
import { ConfigurationError } from '../../src/errors/configuration-error.js';
import {
  MemoryKeyStore,
  createAccount,
  creditBalance,
  generateApiKey,
  issueKey,
  keysRouter,
  modelSwitchAuth,
  parseApiKey,
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

  it('throws TypeError for a bad default rate limit, key type, timeout or body limit', () => {
    const store = new MemoryKeyStore();
    expect(() => modelSwitchAuth(store, { defaultRateLimit: { requests: 0, interval: '1s' } })).toThrow(TypeError);
    expect(() => modelSwitchAuth(store, { defaultRateLimit: { requests: 1, interval: 'soon' } })).toThrow(TypeError);
    expect(() => modelSwitchAuth(store, { keyType: 'admin' as never })).toThrow(TypeError);
    expect(() => modelSwitchAuth(store, { storeTimeoutMs: 0 })).toThrow(TypeError);
    expect(() => keysRouter(store, { maxBodyBytes: -1 })).toThrow(TypeError);
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
