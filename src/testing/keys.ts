import assert from 'node:assert/strict';
import { generateApiKey } from '../keys/api-key.js';
import type { SuiteGroup } from './group.js';
import { colonAccountIds, sampleAccount, sampleKeyRecord } from './samples.js';

/** `insertKey`, `getKey`, `getKeyByHandle`, `updateKey`, `deleteKey`, `touchKey`: id allocation, copies, not-found rules. */
export const keyTests: SuiteGroup = (test, { concurrency }) => {
  test('inserts keys with increasing positive integer ids and reads them by id and by handle', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const first = await store.insertKey(
      sampleKeyRecord(owner.id, { name: 'first', expiresAt: 1_800_000_000_000, rateLimit: { requests: 5, interval: '1m' } }),
    );
    const second = await store.insertKey(sampleKeyRecord(owner.id, { name: 'second', limit: 3, limitReset: 'daily' }));
    assert.ok(Number.isSafeInteger(first.id) && first.id > 0, 'id is a positive integer');
    assert.ok(second.id > first.id, 'ids increase');
    assert.deepEqual(await store.getKey(first.id), first);
    assert.deepEqual(await store.getKeyByHandle(second.handle), second);
    assert.equal(first.name, 'first');
    assert.deepEqual(first.rateLimit, { requests: 5, interval: '1m' });
    assert.equal(await store.getKey(second.id + 1_000_000), null);
    assert.equal(await store.getKeyByHandle(generateApiKey('proxy').handle), null);
  });

  test('answers an id that is not a finite number (NaN, ±Infinity) as an unknown key, changing nothing', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    for (const id of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      assert.equal(await store.getKey(id), null, `getKey(${id})`);
      assert.equal(await store.updateKey(id, { name: 'renamed' }), null, `updateKey(${id})`);
      assert.equal(await store.deleteKey(id), false, `deleteKey(${id})`);
      await store.touchKey(id, 1_800_000_000_000);
    }
    assert.deepEqual(await store.getKey(inserted.id), inserted);
  });

  test('rejects a second key with the same handle', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const record = sampleKeyRecord(owner.id);
    await store.insertKey(record);
    await assert.rejects(store.insertKey({ ...record, name: 'copy' }));
  });

  test('allocates unique ids under concurrent inserts', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const records = await Promise.all(Array.from({ length: concurrency }, () => store.insertKey(sampleKeyRecord(owner.id))));
    assert.equal(new Set(records.map((r) => r.id)).size, concurrency, 'every id is distinct');
  });

  test('returns copies: changing a returned record does not change the store', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { rateLimit: { requests: 1, interval: '1s' } }));
    const read = await store.getKey(inserted.id);
    assert.ok(read?.rateLimit);
    read.name = 'changed';
    read.rateLimit.requests = 99;
    const again = await store.getKey(inserted.id);
    assert.equal(again?.name, 'conformance');
    assert.equal(again?.rateLimit?.requests, 1);
  });

  test('updates only the named fields; an unknown id answers null', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { usage: 1.5, usagePeriod: '2026-11-22' }));
    const updated = await store.updateKey(inserted.id, {
      name: 'renamed',
      active: false,
      limit: 9,
      rateLimit: { requests: 2, interval: '1h', tokens: 100 },
    });
    assert.deepEqual(updated, {
      ...inserted,
      name: 'renamed',
      active: false,
      limit: 9,
      rateLimit: { requests: 2, interval: '1h', tokens: 100 },
    });
    assert.deepEqual(await store.getKey(inserted.id), updated);
    const cleared = await store.updateKey(inserted.id, { limit: null, expiresAt: null, rateLimit: null });
    assert.equal(cleared?.limit, null);
    assert.equal(cleared?.rateLimit, null);
    assert.equal(cleared?.usage, 1.5);
    assert.equal(await store.updateKey(inserted.id + 1_000_000, { name: 'x' }), null);
  });

  test('touchKey only moves lastUsedAt forward and ignores unknown ids', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    await store.touchKey(inserted.id, 2_000);
    await store.touchKey(inserted.id, 1_000);
    assert.equal((await store.getKey(inserted.id))?.lastUsedAt, 2_000);
    await store.touchKey(inserted.id + 1_000_000, 5);
  });

  test("keys of an account whose id starts with ':' are inserted, read and deleted", async (store) => {
    for (const id of colonAccountIds()) {
      await store.createAccount(sampleAccount({ id }));
      const inserted = await store.insertKey(sampleKeyRecord(id));
      assert.equal(inserted.accountId, id);
      assert.deepEqual(await store.getKey(inserted.id), inserted);
      assert.deepEqual(await store.getKeyByHandle(inserted.handle), inserted);
      assert.equal(await store.deleteKey(inserted.id), true);
      assert.equal(await store.getKey(inserted.id), null);
    }
  });
};
