import assert from 'node:assert/strict';
import { generateApiKey } from '../keys/api-key.js';
import { HOUR, type SuiteGroup } from './group.js';
import { randomAccountId, sampleAccount, sampleKeyRecord } from './samples.js';

/**
 * The optional `sync` member (in-process stores only): its reads and counter answer exactly like the
 * async methods, so it compares `sync.hitCounter` with `hitCounter` (the one group that uses another
 * topic's operation: a store with `sync` keeps everything in memory and has counters). A store
 * without `sync` passes it, as there is nothing to check.
 */
export const syncTests: SuiteGroup = (test) => {
  test('a store with `sync` answers its synchronous reads and counter exactly like the async ones', async (store) => {
    const sync = store.sync;
    if (sync === undefined) return; // Optional: only in-process stores have it.
    assert.equal(sync.standsFor.getKeyByHandle, store.getKeyByHandle, 'sync.standsFor names the store’s own getKeyByHandle');
    assert.equal(sync.standsFor.getAccount, store.getAccount, 'sync.standsFor names the store’s own getAccount');
    assert.equal(sync.standsFor.hitCounter, store.hitCounter, 'sync.standsFor names the store’s own hitCounter');
    const owner = await store.createAccount(sampleAccount({ balance: 7 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { rateLimit: { requests: 5, interval: '1m', tokens: 9 } }));
    assert.deepEqual(sync.getKeyByHandle(inserted.handle), inserted);
    assert.equal(sync.getKeyByHandle(generateApiKey('proxy').handle), null);
    assert.deepEqual(sync.getAccount(owner.id), owner);
    assert.equal(sync.getAccount(randomAccountId()), null);
    await store.updateKey(inserted.id, { active: false });
    assert.equal(sync.getKeyByHandle(inserted.handle)?.active, false, 'reads are fresh, not a snapshot');
    await store.deleteKey(inserted.id);
    assert.equal(sync.getKeyByHandle(inserted.handle), null, 'a deleted key is gone');
    // One counter, whichever way it is hit.
    const name = `requests:${randomAccountId()}`;
    assert.deepEqual(sync.hitCounter(name, 60_000, HOUR), { count: 1, resetAt: HOUR + 60_000 });
    assert.deepEqual(await store.hitCounter(name, 60_000, HOUR), { count: 2, resetAt: HOUR + 60_000 });
    assert.deepEqual(sync.hitCounter(name, 60_000, HOUR, 0), { count: 2, resetAt: HOUR + 60_000 });
    assert.deepEqual(sync.hitCounter(name, 60_000, HOUR + 60_000), { count: 1, resetAt: HOUR + 120_000 });
    assert.throws(() => sync.hitCounter(name, 60_000, HOUR, Number.NaN), TypeError);
  });
};
