import assert from 'node:assert/strict';
import { type SuiteGroup, assertUsd } from './group.js';
import { colonAccountIds, randomAccountId, sampleAccount } from './samples.js';

/** `createAccount`, `getAccount`, `adjustBalance`: the not-found rules and the bounds of a balance. */
export const accountTests: SuiteGroup = (test) => {
  test('creates and reads accounts; an unknown id is null; a duplicate id rejects', async (store) => {
    const created = sampleAccount({ balance: 12.5, isFreeTier: true });
    assert.deepEqual(await store.createAccount(created), created);
    assert.deepEqual(await store.getAccount(created.id), created);
    assert.equal(await store.getAccount(randomAccountId()), null);
    await assert.rejects(store.createAccount({ ...created, balance: 1 }));
    assert.deepEqual(await store.getAccount(created.id), created);
  });

  test('adjusts balances; an unknown account answers null', async (store) => {
    const created = await store.createAccount(sampleAccount({ balance: 10 }));
    assertUsd((await store.adjustBalance(created.id, 2.5))?.balance, 12.5, 'credit');
    assertUsd((await store.adjustBalance(created.id, -20))?.balance, -7.5, 'debit below zero');
    assert.equal(await store.adjustBalance(randomAccountId(), 1), null);
  });

  test('refuses a balance change that is NaN, infinite or beyond ±1e12 with a TypeError and changes nothing', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    for (const delta of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e13, -1e13, 1e300]) {
      await assert.rejects(async () => store.adjustBalance(owner.id, delta), TypeError, `delta ${delta}`);
    }
    assert.deepEqual(await store.getAccount(owner.id), owner);
  });

  test('refuses a balance beyond ±1e12 USD and keeps the account readable', async (store) => {
    const near = await store.createAccount(sampleAccount({ balance: 9e11 }));
    await assert.rejects(async () => store.adjustBalance(near.id, 2e11), 'credit past the bound');
    assert.deepEqual(await store.getAccount(near.id), near);
    assertUsd((await store.adjustBalance(near.id, 1e11))?.balance, 1e12, 'up to the bound');
    // A record written with a larger balance (by hand, or before the bound existed) is never turned into garbage.
    const huge = await store.createAccount(sampleAccount({ balance: 1e300 }));
    await assert.rejects(async () => store.adjustBalance(huge.id, 1), 'adjusting a balance beyond the bound');
    assert.deepEqual(await store.getAccount(huge.id), huge);
  });

  test("account ids that start with ':' are created, read and adjusted", async (store) => {
    for (const id of colonAccountIds()) {
      const owner = await store.createAccount(sampleAccount({ id, balance: 10 }));
      assert.deepEqual(await store.getAccount(id), owner);
      assertUsd((await store.adjustBalance(id, 1))?.balance, 11, 'adjustBalance finds it');
      assertUsd((await store.getAccount(id))?.balance, 11, 'and the change is stored');
    }
  });
};
