import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { generateApiKey } from '../../src/keys/api-key.js';
import type { RedisRunner } from '../../src/store/keyv/keyv-redis.js';
import type { RedisBackend } from '../../src/store/keyv/redis-backend.js';
import { KeyvKeyStore } from '../../src/store/keyv/keyv-store.js';
import type { KeyRecord } from '../../src/store/types.js';
import { REDIS_URL, redisKeyv, redisSkipReason, removeKeys, runPrefix } from './redis-env.js';

// The TypeScript side refuses bad amounts before any script runs; these tests call the Lua scripts
// directly, as a bug or an older client would, to check that they refuse on their own and write nothing.
describe.skipIf(!REDIS_URL)(
  `KeyvKeyStore Lua scripts refuse what they cannot store${redisSkipReason ? ` (${redisSkipReason})` : ''}`,
  () => {
    const url = REDIS_URL as string;
    const prefix = runPrefix();
    const store = new KeyvKeyStore(redisKeyv(url), { prefix });
    const runner = (store as unknown as { backend: RedisBackend }).backend.runner;
    const script = (name: Parameters<RedisRunner['script']>[0], value: unknown) => runner.script(name, JSON.stringify({ value }));

    afterAll(async () => {
      await store.close();
      await removeKeys(url, prefix);
    });

    async function seed(balance: number) {
      const account = await store.createAccount({
        id: `acct_${randomBytes(6).toString('hex')}`,
        balance,
        reserved: 0,
        isFreeTier: false,
        createdAt: 0,
      });
      const generated = generateApiKey('proxy');
      const key = await store.insertKey({
        handle: generated.handle,
        type: 'proxy',
        accountId: account.id,
        name: 'lua',
        prefix: generated.prefix,
        models: null,
        previousHash: null,
        previousKeyExpiresAt: null,
        hash: 'x',
        active: true,
        createdAt: 0,
        expiresAt: null,
        lastUsedAt: null,
        usage: 1,
        usagePeriod: null,
        reserved: 0,
        limit: null,
        limitReset: null,
        rateLimit: null,
      });
      return { account, key };
    }

    async function unchanged(account: { id: string }, key: KeyRecord) {
      expect(await store.getKey(key.id)).toEqual(key);
      expect(await store.getAccount(account.id)).toEqual(account);
    }

    it('refuses negative, missing (NaN/Infinity serialize as null) and huge amounts', async () => {
      const { account, key } = await seed(10);
      const ids = { keyId: key.id, accountId: account.id };
      await expect(script('settleSpend', { ...ids, reserved: 0, cost: -5, period: null, now: 1 })).rejects.toThrow(/refused an amount/);
      await expect(script('settleSpend', { ...ids, reserved: null, cost: 1, period: null, now: 1 })).rejects.toThrow(/refused an amount/);
      await expect(script('reserveSpend', { ...ids, amount: null, period: null })).rejects.toThrow(/refused an amount/);
      await expect(script('reserveSpend', { ...ids, amount: 1e13, period: null })).rejects.toThrow(/refused an amount/);
      await expect(script('adjustBalance', { accountId: account.id, delta: 1e300 })).rejects.toThrow(/refused an amount/);
      await expect(script('hitCounter', { name: `c:${account.id}`, windowStart: 0, amount: -1, ttlMs: 60_000 })).rejects.toThrow(
        /refused a counter amount/,
      );
      await unchanged(account, key);
    });

    it('refuses a settlement whose balance would leave ±1e12 before writing anything, the key included', async () => {
      const { account, key } = await seed(-9.999e11);
      await expect(
        script('settleSpend', { keyId: key.id, accountId: account.id, reserved: 0, cost: 1e9, period: null, now: 5 }),
      ).rejects.toThrow(/not finite or beyond 1e12/);
      await unchanged(account, key);
    });
  },
);
