import Keyv from 'keyv';
import { afterAll, describe, expect, it } from 'vitest';
import { KeyvKeyStore } from '../../src/store/keyv/keyv-store.js';
import { keyStoreSuite } from '../../src/testing/index.js';
import { REDIS_URL, redisKeyv, redisSkipReason, removeKeys, runPrefix } from './redis-env.js';

describe('KeyvKeyStore over Keyv’s in-memory Map', () => {
  keyStoreSuite({ it, createStore: () => new KeyvKeyStore(new Keyv()) });
});

describe.skipIf(!REDIS_URL)(`KeyvKeyStore over Redis${redisSkipReason ? ` (${redisSkipReason})` : ''}`, () => {
  const url = REDIS_URL as string;
  const prefix = runPrefix();
  afterAll(() => removeKeys(url, prefix));
  keyStoreSuite({ it, createStore: () => new KeyvKeyStore(redisKeyv(url), { prefix }) });
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

  it('refuses a custom serializer with ERR_MS_STORE, since its Lua scripts edit the stored JSON', () => {
    const keyv = redisKeyv(REDIS_URL as string);
    keyv.serialize = undefined;
    expect(() => new KeyvKeyStore(keyv)).toThrow(expect.objectContaining({ code: 'ERR_MS_STORE' }));
  });
});
