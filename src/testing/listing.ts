import assert from 'node:assert/strict';
import type { SuiteGroup } from './group.js';
import { colonAccountIds, randomAccountId, sampleAccount, sampleKeyRecord } from './samples.js';

/** `listKeys`: id order, pages, one account and one key type only, and deleted keys gone. */
export const listingTests: SuiteGroup = (test) => {
  test("lists one account's keys of one type in id order, paginated, never another account's", async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const other = await store.createAccount(sampleAccount());
    const ids: number[] = [];
    for (let i = 0; i < 25; i++) {
      ids.push((await store.insertKey(sampleKeyRecord(owner.id, { name: `k${i}` }))).id);
      await store.insertKey(sampleKeyRecord(other.id));
    }
    const billing = await store.insertKey(sampleKeyRecord(owner.id, { type: 'billing' }));
    const first = await store.listKeys(owner.id, { type: 'proxy', limit: 10 });
    assert.deepEqual(
      first.keys.map((k) => k.id),
      ids.slice(0, 10),
    );
    assert.equal(first.hasMore, true);
    const second = await store.listKeys(owner.id, { type: 'proxy', limit: 10, after: ids[9] as number });
    assert.deepEqual(
      second.keys.map((k) => k.id),
      ids.slice(10, 20),
    );
    const third = await store.listKeys(owner.id, { type: 'proxy', limit: 10, after: ids[19] as number });
    assert.deepEqual(
      third.keys.map((k) => k.id),
      ids.slice(20),
    );
    assert.equal(third.hasMore, false);
    const exact = await store.listKeys(owner.id, { type: 'proxy', limit: 25 });
    assert.equal(exact.keys.length, 25);
    assert.equal(exact.hasMore, false);
    assert.deepEqual(
      (await store.listKeys(owner.id, { type: 'billing', limit: 10 })).keys.map((k) => k.id),
      [billing.id],
    );
    assert.deepEqual(await store.listKeys(randomAccountId(), { type: 'proxy', limit: 10 }), { keys: [], hasMore: false });
    for (const key of exact.keys) assert.equal(key.accountId, owner.id);
  });

  test('deletes a key everywhere: by id, by handle and from listings', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const kept = await store.insertKey(sampleKeyRecord(owner.id));
    const gone = await store.insertKey(sampleKeyRecord(owner.id));
    assert.equal(await store.deleteKey(gone.id), true);
    assert.equal(await store.deleteKey(gone.id), false);
    assert.equal(await store.getKey(gone.id), null);
    assert.equal(await store.getKeyByHandle(gone.handle), null);
    assert.deepEqual(
      (await store.listKeys(owner.id, { type: 'proxy', limit: 10 })).keys.map((k) => k.id),
      [kept.id],
    );
    const next = await store.insertKey(sampleKeyRecord(owner.id));
    assert.ok(next.id > gone.id, 'ids are never reused');
  });

  test("lists the keys of an account whose id starts with ':'", async (store) => {
    for (const id of colonAccountIds()) {
      await store.createAccount(sampleAccount({ id }));
      const inserted = await store.insertKey(sampleKeyRecord(id));
      assert.deepEqual(
        (await store.listKeys(id, { type: 'proxy', limit: 10 })).keys.map((k) => [k.id, k.accountId]),
        [[inserted.id, id]],
      );
      await store.deleteKey(inserted.id);
      assert.deepEqual(await store.listKeys(id, { type: 'proxy', limit: 10 }), { keys: [], hasMore: false });
    }
  });
};
