import { createClient } from '@keyv/redis';
import Keyv from 'keyv';
import { afterAll, describe, expect, it } from 'vitest';
import { KeyvKeyStore } from '../../src/store/keyv/keyv-store.js';
import type { RedisCommandClient } from '../../src/store/keyv/keyv-redis.js';
import { REDIS_SCRIPTS } from '../../src/store/keyv/keyv-redis-scripts.js';
import { keyStoreSuite, sampleAccount, sampleKeyRecord } from '../../src/testing/index.js';
import { REDIS_URL, redisKeyv, redisSkipReason, removeKeys, runPrefix } from './redis-env.js';
import { checkDefaultRetention, checkLazyTrimming } from './retention.js';

describe('KeyvKeyStore over Keyv’s in-memory Map', () => {
  keyStoreSuite({ it, createStore: () => new KeyvKeyStore(new Keyv()) });
});

describe.skipIf(!REDIS_URL)(`KeyvKeyStore over Redis${redisSkipReason ? ` (${redisSkipReason})` : ''}`, () => {
  const url = REDIS_URL as string;
  const prefix = runPrefix();
  afterAll(() => removeKeys(url, prefix));
  keyStoreSuite({ it, createStore: () => new KeyvKeyStore(redisKeyv(url), { prefix }) });

  it('keeps ledger entries 400 days by default, and trimming them moves no balance, key usage or usage aggregate', async () => {
    const store = new KeyvKeyStore(redisKeyv(url), { prefix });
    try {
      await checkDefaultRetention(store);
    } finally {
      await store.close();
    }
  });
});

describe('KeyvKeyStore ledger over Keyv’s in-memory Map (the locked backend)', () => {
  it('trims each account’s ledger lazily, a few old entries per write, with ledgerRetentionDays', async () => {
    await checkLazyTrimming(new KeyvKeyStore(new Keyv(), { ledgerRetentionDays: 1 }));
  });

  it('keeps ledger entries 400 days by default, and trimming them moves no balance, key usage or usage aggregate', async () => {
    await checkDefaultRetention(new KeyvKeyStore(new Keyv()));
  });

  it('keeps the ledger in chunks of at most 100 entries, pages across them and trims across them', async () => {
    const keyv = new Keyv();
    const store = new KeyvKeyStore(keyv);
    const owner = await store.createAccount(sampleAccount({ balance: 0, createdAt: 0 }));
    const key = await store.insertKey(sampleKeyRecord(owner.id));
    for (let i = 0; i < 250; i++) {
      if (i % 2 === 0)
        await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: `c${i}`, note: null, now: i });
      else await store.settleSpend({ keyId: key.id, accountId: owner.id, holdId: null, cost: 0.5, period: null, now: i });
    }
    const values = [...(keyv.store as Map<string, unknown>).values()].map((raw) => (typeof raw === 'string' ? JSON.parse(raw).value : raw));
    const longest = Math.max(...values.filter(Array.isArray).map((value: unknown[]) => value.length));
    expect(longest).toBeLessThanOrEqual(100);
    // 150 entries trimmed: one chunk and a half.
    expect(await store.trimLedger(150)).toBe(150);
    const seen: number[] = [];
    let before: number | undefined;
    for (;;) {
      const page = await store.listLedger(owner.id, { limit: 7, before, type: 'usage' });
      seen.push(...page.entries.map((entry) => entry.createdAt));
      if (!page.hasMore) break;
      before = page.entries.at(-1)?.id;
    }
    expect(seen).toEqual(Array.from({ length: 50 }, (_, i) => 249 - 2 * i));
    const all = (await store.listLedger(owner.id, { limit: 1000 })).entries;
    expect(all.map((entry) => entry.createdAt)).toEqual(Array.from({ length: 100 }, (_, i) => 249 - i));
    expect(all[0]?.balanceAfter).toBe((await store.getAccount(owner.id))?.balance);
  });

  it('refuses a ledgerRetentionDays that is not a positive number with ERR_MS_OPTION', () => {
    for (const ledgerRetentionDays of [0, -3, Number.NaN]) {
      expect(() => new KeyvKeyStore(new Keyv(), { ledgerRetentionDays })).toThrow(
        expect.objectContaining({
          code: 'ERR_MS_OPTION',
          message: 'KeyvKeyStore: ledgerRetentionDays must be a positive number of days (Infinity keeps every entry)',
        }),
      );
    }
  });
});

describe('KeyvKeyStore errors', () => {
  /** A Keyv adapter whose backend is down: every call fails, as a lost database connection would. */
  function brokenAdapter() {
    const fail = async () => {
      throw new Error('ECONNREFUSED 127.0.0.1:5432');
    };
    return { get: fail, set: fail, delete: fail, clear: fail, on: () => {} };
  }

  it('rejects instead of answering "not found" when the Keyv adapter fails, even if Keyv was told to swallow errors', async () => {
    const keyv = new Keyv({ store: brokenAdapter(), throwOnErrors: false });
    const store = new KeyvKeyStore(keyv);
    expect(keyv.throwOnErrors).toBe(true);
    await expect(store.getKeyByHandle('AbCdEfGhIj')).rejects.toThrow('ECONNREFUSED');
    await expect(store.getAccount('acct_1')).rejects.toThrow('ECONNREFUSED');
    await expect(store.hitCounter('requests:1', 1000, 0)).rejects.toThrow('ECONNREFUSED');
  });

  it('says it is shared across processes only on Redis', () => {
    expect(new KeyvKeyStore(new Keyv()).sharedAcrossProcesses).toBe(false);
  });

  it('refuses a value that is not a Keyv instance with ERR_MS_STORE', () => {
    expect(() => new KeyvKeyStore({} as Keyv)).toThrow(
      expect.objectContaining({
        code: 'ERR_MS_STORE',
        message: 'new KeyvKeyStore(keyv): pass a Keyv instance, e.g. new Keyv(new KeyvRedis(url))',
      }),
    );
  });
});

describe.skipIf(!REDIS_URL)(`KeyvKeyStore configuration on Redis${redisSkipReason ? ` (${redisSkipReason})` : ''}`, () => {
  it('turns on throwOnErrors on the @keyv/redis adapter and shares atomic operations across processes', async () => {
    const keyv = redisKeyv(REDIS_URL as string);
    const store = new KeyvKeyStore(keyv, { prefix: runPrefix() });
    expect((keyv.store as { throwOnErrors: boolean }).throwOnErrors).toBe(true);
    expect(store.sharedAcrossProcesses).toBe(true);
    await store.close();
  });

  it("reads with the instance's own deserializer when one is set, even after the store was built, called on the instance", async () => {
    const prefix = runPrefix();
    const keyv = redisKeyv(REDIS_URL as string);
    const store = new KeyvKeyStore(keyv, { prefix });
    try {
      const account = await store.createAccount({ id: 'acct_:own', balance: 5, reserved: 0, isFreeTier: false, createdAt: 0 });
      expect(await store.getAccount(account.id)).toEqual(account);
      const standard = keyv.deserialize as NonNullable<typeof keyv.deserialize>;
      const calledOn: unknown[] = [];
      keyv.deserialize = function own(this: unknown, raw: string) {
        calledOn.push(this);
        return standard(raw);
      };
      expect(await store.getAccount(account.id)).toEqual(account);
      expect(calledOn).toHaveLength(1);
      expect(calledOn[0]).toBe(keyv);
    } finally {
      await store.close();
      await removeKeys(REDIS_URL as string, prefix);
    }
  });

  it('runs every operation as one Redis command or script: one round trip each, as Redis sees it', async () => {
    const url = REDIS_URL as string;
    const prefix = runPrefix();
    const keyv = redisKeyv(url);
    const store = new KeyvKeyStore(keyv, { prefix });
    const monitor = createClient({ url });
    try {
      const account = await store.createAccount(sampleAccount({ balance: 10 }));
      const client = (keyv.store as { client: RedisCommandClient }).client;
      // Loaded beforehand, so no EVALSHA meets NOSCRIPT (the reload after a Redis restart is a second trip by design).
      for (const script of Object.values(REDIS_SCRIPTS)) await client.sendCommand(['SCRIPT', 'LOAD', script.source]);
      const address = /addr=(\S+)/.exec(String(await client.sendCommand(['CLIENT', 'INFO'])))?.[1];
      expect(address).toMatch(/^[\d.:[\]a-f]+:\d+$/);
      // MONITOR lists every command Redis runs, in order: `<time> [<db> <client address>] "NAME" …`.
      const seen: string[] = [];
      let marked: (() => void) | undefined;
      await monitor.connect();
      await monitor.monitor((line: string) => {
        const tag = ` ${address}] `;
        const at = line.indexOf(tag);
        if (at < 0) return; // Another connection, or a command a Lua script ran (`[0 lua]`).
        const [name, first] = line.slice(at + tag.length).split(' ');
        if (name === '"ECHO"' && first === '"trips-marker"') marked?.();
        else seen.push((name as string).replaceAll('"', '').toUpperCase());
      });
      // The commands the store's connection sent during `operation`: a marker sent after it shows where they end.
      const trips = async (operation: () => Promise<unknown>) => {
        const from = seen.length;
        await operation();
        await new Promise<void>((resolve, reject) => {
          marked = resolve;
          client.sendCommand(['ECHO', 'trips-marker']).catch(reject);
        });
        return seen.slice(from);
      };
      const record = sampleKeyRecord(account.id);
      let id = 0;
      const one = ['EVALSHA'];
      expect(await trips(() => store.createAccount(sampleAccount({ balance: 5 })))).toEqual(one);
      expect(await trips(() => store.getAccount(account.id))).toEqual(['GET']);
      const change = { accountId: account.id, type: 'credit', amount: 1, reference: 'pay_1', note: null, now: 5 } as const;
      expect(await trips(() => store.changeBalance(change))).toEqual(one);
      expect(await trips(() => store.changeBalance(change))).toEqual(one);
      expect(await trips(async () => (id = (await store.insertKey(record)).id))).toEqual(one);
      expect(await trips(() => store.getKey(id))).toEqual(one);
      expect(await trips(() => store.getKeyByHandle(record.handle))).toEqual(['GET']);
      expect(await trips(() => store.listKeys(account.id, { type: 'proxy', limit: 10 }))).toEqual(one);
      expect(await trips(() => store.updateKey(id, { name: 'renamed', models: ['gpt-4o'] }))).toEqual(one);
      expect(await trips(() => store.touchKey(id, 5))).toEqual(one);
      expect(await trips(() => store.rotateKey({ id, hash: 'hash-2', previousKeyExpiresAt: 60_000, now: 5 }))).toEqual(one);
      let holdId: string | null = null;
      const reservation = { keyId: id, accountId: account.id, amount: 1, period: null, now: 5, expiresAt: 60_005 };
      expect(
        await trips(async () => {
          const result = await store.reserveSpend(reservation);
          holdId = result.ok ? result.holdId : null;
        }),
      ).toEqual(one);
      expect(await trips(() => store.extendHold(holdId as string, account.id, 90_000))).toEqual(one);
      const usage = { model: 'gpt-4o', promptTokens: 1, completionTokens: 2, requestId: 'req_1', upstreamId: 'chatcmpl-1' };
      const settlement = { keyId: id, accountId: account.id, holdId, cost: 0.5, period: null, now: 6, usage };
      expect(await trips(() => store.settleSpend(settlement))).toEqual(one);
      expect(await trips(() => store.releaseExpiredHolds(6))).toEqual(one);
      expect(await trips(() => store.listLedger(account.id, { limit: 10, keyId: id }))).toEqual(one);
      expect(await trips(() => store.findUsageEntry(account.id, 'chatcmpl-1'))).toEqual(one);
      expect(await trips(() => store.getUsage(account.id, { from: '1970-01-01', to: '1970-01-01' }))).toEqual(one);
      expect(await trips(() => store.hitCounter(`requests:${account.id}`, 60_000, 0))).toEqual(one);
      expect(await trips(() => store.deleteKey(id))).toEqual(one);
      expect(await store.getKey(id)).toBeNull();
    } finally {
      monitor.destroy();
      await store.close();
      await removeKeys(url, prefix);
    }
  });

  it('refuses a custom serializer with ERR_MS_STORE, since its Lua scripts edit the stored JSON', () => {
    const keyv = redisKeyv(REDIS_URL as string);
    keyv.serialize = undefined;
    expect(() => new KeyvKeyStore(keyv)).toThrow(expect.objectContaining({ code: 'ERR_MS_STORE' }));
  });
});
