import assert from 'node:assert/strict';
import type { SuiteGroup } from './group.js';
import { colonAccountIds, randomAccountId, sampleAccount } from './samples.js';

/** `createAccount` and `getAccount`: the not-found rule and the bounds of an opening balance. Balance changes are the `ledger` group. */
export const accountTests: SuiteGroup = (test) => {
  test('creates and reads accounts; an unknown id is null; a duplicate id rejects', async (store) => {
    const created = sampleAccount({ balance: 12.5, isFreeTier: true });
    assert.deepEqual(await store.createAccount(created), created);
    assert.deepEqual(await store.getAccount(created.id), created);
    assert.equal(await store.getAccount(randomAccountId()), null);
    await assert.rejects(store.createAccount({ ...created, balance: 1 }));
    assert.deepEqual(await store.getAccount(created.id), created);
    const negative = sampleAccount({ balance: -3 });
    assert.deepEqual(await store.createAccount(negative), negative);
    assert.deepEqual(await store.getAccount(negative.id), negative);
  });

  test('refuses an opening balance that is NaN, infinite or beyond ±1e12, or a reserved amount, with a TypeError', async (store) => {
    for (const balance of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e12 + 1, -1e13, 1e300]) {
      const refused = sampleAccount({ balance });
      await assert.rejects(async () => store.createAccount(refused), TypeError, `balance ${balance}`);
      assert.equal(await store.getAccount(refused.id), null, `no account with balance ${balance}`);
    }
    const held = sampleAccount({ reserved: 1 });
    await assert.rejects(async () => store.createAccount(held), TypeError, 'reserved without a hold');
    assert.equal(await store.getAccount(held.id), null);
    const bound = sampleAccount({ balance: 1e12 });
    assert.deepEqual(await store.createAccount(bound), bound, 'up to the bound');
  });

  test("account ids that start with ':' are created and read", async (store) => {
    for (const id of colonAccountIds()) {
      const owner = await store.createAccount(sampleAccount({ id, balance: 10 }));
      assert.deepEqual(await store.getAccount(id), owner);
    }
  });
};
