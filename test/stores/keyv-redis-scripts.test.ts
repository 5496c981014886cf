import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { generateApiKey } from '../../src/keys/api-key.js';
import type { RedisRunner } from '../../src/store/keyv/keyv-redis.js';
import type { RedisBackend } from '../../src/store/keyv/redis-backend.js';
import { KeyvKeyStore } from '../../src/store/keyv/keyv-store.js';
import type { AccountRecord, KeyRecord } from '../../src/store/types.js';
import { REDIS_URL, redisKeyv, redisSkipReason, removeKeys, runPrefix } from './redis-env.js';

const T0 = Date.parse('2026-11-22T12:00:00Z');
const RETENTION = { trimBefore: T0 - 400 * 86_400_000, trimPerWrite: 10 };

// The TypeScript side refuses bad arguments before any script runs; these tests call the Lua scripts
// directly, as a bug or an older client would, to check that they refuse on their own and write
// nothing: not the records, not a hold, not a ledger entry, not a counter.
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

    /**
     * An account of 10 USD, one of its keys with a live hold of 1 and a stale one of 2 (deadline T0),
     * then an adjustment to `balance`: records, holds and ledger entries to compare with afterwards.
     */
    async function seed(balance = 10) {
      const account = await store.createAccount({
        id: `acct_${randomBytes(6).toString('hex')}`,
        balance: 10,
        reserved: 0,
        isFreeTier: false,
        createdAt: T0,
      });
      const generated = generateApiKey('proxy');
      const key = await store.insertKey({
        handle: generated.handle,
        type: 'proxy',
        accountId: account.id,
        name: 'lua',
        prefix: generated.prefix,
        hash: 'x',
        active: true,
        createdAt: T0,
        expiresAt: null,
        lastUsedAt: null,
        usage: 1,
        usagePeriod: null,
        reserved: 0,
        limit: null,
        limitReset: null,
        rateLimit: null,
        models: ['gpt-4o'],
        previousHash: null,
        previousKeyExpiresAt: null,
      });
      const ids = { keyId: key.id, accountId: account.id };
      const live = await store.reserveSpend({ ...ids, amount: 1, period: null, now: T0 - 10, expiresAt: T0 + 1000 });
      const stale = await store.reserveSpend({ ...ids, amount: 2, period: null, now: T0 - 10, expiresAt: T0 });
      if (!live.ok || !stale.ok) throw new Error('seed: the reservations were refused');
      if (balance !== 10) {
        await store.changeBalance({
          accountId: account.id,
          type: 'adjustment',
          amount: balance - 10,
          reference: 'seed',
          note: null,
          now: T0,
        });
      }
      return {
        ids,
        holdId: live.holdId,
        staleHoldId: stale.holdId,
        account: (await store.getAccount(account.id)) as AccountRecord,
        key: (await store.getKey(key.id)) as KeyRecord,
        entries: (await store.listLedger(account.id, { limit: 10 })).entries,
      };
    }

    /** Everything the seed wrote is as it was: records, both holds (extendable, so not released), the one entry, no counters. */
    async function unchanged(seeded: Awaited<ReturnType<typeof seed>>) {
      const { account, key, ids } = seeded;
      expect(await store.getKey(key.id)).toEqual(key);
      expect(await store.getAccount(account.id)).toEqual(account);
      expect(account.reserved).toBe(3);
      expect((await store.listLedger(account.id, { limit: 10 })).entries).toEqual(seeded.entries);
      expect(await store.getUsage(account.id, { from: '1970-01-01', to: '2999-12-31' })).toEqual([]);
      expect(await script('extendHold', { holdId: seeded.staleHoldId, accountId: ids.accountId, expiresAt: T0 })).toBe(1);
      expect(await script('extendHold', { holdId: seeded.holdId, accountId: ids.accountId, expiresAt: T0 + 1000 })).toBe(1);
    }

    it('settleSpend refuses bad amounts, usage details, days and hold ids, and writes nothing', async () => {
      const seeded = await seed();
      const good = {
        ...seeded.ids,
        holdId: seeded.holdId,
        cost: 0.5,
        period: null,
        now: T0,
        day: '2026-11-22',
        ...RETENTION,
        usage: { model: 'gpt-4o', promptTokens: 1, completionTokens: 2, requestId: 'req_1', upstreamId: null },
      };
      const refusals: Array<[Record<string, unknown>, RegExp]> = [
        [{ cost: -5 }, /refused an amount/],
        // NaN and Infinity serialize as null.
        [{ cost: null }, /refused an amount/],
        [{ cost: 1e13 }, /refused an amount/],
        [{ now: null }, /refused a time/],
        [{ holdId: 7 }, /refused a hold id/],
        [{ day: '2026-11-2' }, /refused a day/],
        [{ trimBefore: 'soon' }, /refused a trim time/],
        [{ trimPerWrite: null }, /refused a trim count/],
        [{ usage: { ...good.usage, promptTokens: -1 } }, /refused a token count/],
        [{ usage: { ...good.usage, completionTokens: 1.5 } }, /refused a token count/],
        [{ usage: { ...good.usage, promptTokens: null } }, /refused a token count/],
        [{ usage: { ...good.usage, model: 5 } }, /refused a model/],
        [{ usage: { ...good.usage, requestId: null } }, /refused a request id/],
        [{ usage: { ...good.usage, upstreamId: 5 } }, /refused an upstream id/],
      ];
      for (const [change, message] of refusals) {
        await expect(script('settleSpend', { ...good, ...change }), JSON.stringify(change)).rejects.toThrow(message);
      }
      await unchanged(seeded);
    });

    it('settleSpend refuses a balance beyond ±1e12 before writing anything: the hold, the key and the entry included', async () => {
      const seeded = await seed(-9.999e11);
      const refused = script('settleSpend', {
        ...seeded.ids,
        holdId: seeded.holdId,
        cost: 1e9,
        period: null,
        now: T0,
        day: '2026-11-22',
        ...RETENTION,
      });
      // A refusal is a TypeError (a value no store may write), as the store's own checks throw, not an outage.
      await expect(refused).rejects.toThrow(TypeError);
      await expect(refused).rejects.toThrow(/^KeyvKeyStore on Redis: settleSpend refused a USD amount that is not finite or beyond 1e12$/);
      await unchanged(seeded);
    });

    it('reserveSpend refuses bad amounts, clocks and deadlines before releasing the expired holds it would release', async () => {
      const seeded = await seed();
      const good = { ...seeded.ids, amount: 1, period: null, now: T0 + 1, expiresAt: T0 + 100 };
      const refusals: Array<[Record<string, unknown>, RegExp]> = [
        [{ amount: null }, /refused an amount/],
        [{ amount: -1 }, /refused an amount/],
        [{ amount: 1e13 }, /refused an amount/],
        [{ now: null }, /refused a time/],
        [{ expiresAt: null }, /refused a hold deadline/],
        [{ expiresAt: T0 + 1 }, /not after now/],
        [{ accountId: 5 }, /refused an account id/],
      ];
      for (const [change, message] of refusals) {
        await expect(script('reserveSpend', { ...good, ...change }), JSON.stringify(change)).rejects.toThrow(message);
      }
      await unchanged(seeded);
    });

    it('changeBalance refuses bad amounts, types, references, notes and balances, and writes nothing', async () => {
      const seeded = await seed();
      const good = { accountId: seeded.ids.accountId, type: 'credit', amount: 1, reference: 'pay_1', note: null, now: T0, ...RETENTION };
      const refusals: Array<[Record<string, unknown>, RegExp]> = [
        [{ amount: 1e300 }, /refused an amount/],
        [{ amount: null }, /refused an amount/],
        [{ amount: -1 }, /credit <= 0/],
        [{ type: 'adjustment', amount: 0 }, /adjustment of 0/],
        [{ type: 'refund' }, /balance change type/],
        [{ reference: '' }, /empty or overlong reference/],
        [{ reference: 'r'.repeat(601) }, /empty or overlong reference/],
        [{ reference: 5 }, /refused a reference/],
        [{ note: 5 }, /refused a note/],
        [{ now: null }, /refused a time/],
        [{ trimPerWrite: -1 }, /refused a trim count/],
        [{ amount: 1e12 }, /not finite or beyond 1e12/],
      ];
      for (const [change, message] of refusals) {
        await expect(script('changeBalance', { ...good, ...change }), JSON.stringify(change)).rejects.toThrow(message);
      }
      await unchanged(seeded);
      // The refused reference is still free.
      expect(await store.changeBalance({ ...good, type: 'credit', reference: 'pay_1' })).toMatchObject({ applied: true });
    });

    it('createAccount, extendHold, rotateKey, releaseExpiredHolds and hitCounter refuse what they cannot store', async () => {
      const seeded = await seed();
      const account = { id: `acct_${randomBytes(6).toString('hex')}`, balance: 1, reserved: 0, isFreeTier: false, createdAt: T0 };
      await expect(script('createAccount', { ...account, balance: null })).rejects.toThrow(/refused an amount/);
      await expect(script('createAccount', { ...account, balance: 1e13 })).rejects.toThrow(/refused an amount/);
      await expect(script('createAccount', { ...account, createdAt: null })).rejects.toThrow(/refused a creation time/);
      expect(await store.getAccount(account.id)).toBeNull();
      expect((await store.listLedger(account.id, { limit: 10 })).entries).toEqual([]);
      await expect(script('extendHold', { holdId: seeded.holdId, accountId: seeded.ids.accountId, expiresAt: null })).rejects.toThrow(
        /refused a hold deadline/,
      );
      await expect(script('rotateKey', { id: seeded.ids.keyId, hash: 5, previousKeyExpiresAt: null, now: T0 })).rejects.toThrow(
        /refused a hash/,
      );
      await expect(script('rotateKey', { id: seeded.ids.keyId, hash: 'h', previousKeyExpiresAt: null, now: null })).rejects.toThrow(
        /refused a time/,
      );
      await expect(script('releaseExpiredHolds', { now: null, limit: 10 })).rejects.toThrow(/refused a time/);
      await expect(script('releaseExpiredHolds', { now: T0, limit: 1.5 })).rejects.toThrow(/refused a limit/);
      await expect(script('hitCounter', { name: `c:${seeded.ids.accountId}`, windowStart: 0, amount: -1, ttlMs: 60_000 })).rejects.toThrow(
        /refused a counter amount/,
      );
      await unchanged(seeded);
    });

    it('the ledger reads refuse malformed arguments', async () => {
      const { ids } = await seed();
      await expect(script('getUsage', { accountId: ids.accountId, from: '2026-3-1', to: '2026-03-03' })).rejects.toThrow(/refused a day/);
      await expect(script('listLedger', { accountId: ids.accountId, limit: null })).rejects.toThrow(/refused a limit/);
      await expect(script('listLedger', { accountId: ids.accountId, limit: 5, before: null })).resolves.toEqual(expect.any(String));
      await expect(script('findUsageEntry', { accountId: ids.accountId, id: 5 })).rejects.toThrow(/refused an id/);
      await expect(script('trimLedger', { before: null, cursor: '0', budget: 10 })).rejects.toThrow(/refused a time/);
    });
  },
);
