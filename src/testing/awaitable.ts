import assert from 'node:assert/strict';
import { generateApiKey } from '../keys/api-key.js';
import type { AccountRecord, KeyRecord } from '../store/types.js';
import { HOUR, type SuiteGroup } from './group.js';
import { randomAccountId, sampleAccount, sampleKeyRecord } from './samples.js';

/** Whether a store call answered a promise (any thenable) rather than the value itself. */
function isPending(answer: unknown): boolean {
  return typeof (answer as { then?: unknown } | null)?.then === 'function';
}

/**
 * The hot path's three calls (`getKeyByHandle`, `getAccount`, `hitCounter`), which may answer at
 * once or with a promise (`Awaitable`): either way their answers are fresh, agree with the store's
 * other operations, and are the caller's to keep; a refused hit is a TypeError, thrown or rejected.
 * The one group that uses another topic's operation (`hitCounter`): these three are what every
 * authenticated request calls.
 */
export const awaitableTests: SuiteGroup = (test) => {
  test('getKeyByHandle, getAccount and hitCounter answer a value or a promise of one: fresh, and the caller’s to keep', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 7 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { rateLimit: { requests: 5, interval: '1m', tokens: 9 } }));
    const answers = [
      store.getKeyByHandle(inserted.handle),
      store.getAccount(owner.id),
      store.hitCounter(`requests:${owner.id}`, 60_000, HOUR),
    ];
    for (const answer of answers) {
      assert.ok(isPending(answer) || (typeof answer === 'object' && answer !== null), 'a record, or a promise of one');
    }
    const [key, account, counter] = (await Promise.all(answers)) as [KeyRecord, AccountRecord, unknown];
    assert.deepEqual([key, account, counter], [inserted, owner, { count: 1, resetAt: HOUR + 60_000 }]);
    assert.equal(await store.getKeyByHandle(generateApiKey('proxy').handle), null);
    assert.equal(await store.getAccount(randomAccountId()), null);
    // Changing what was answered changes nothing stored.
    key.name = 'changed';
    (key.rateLimit as { requests: number }).requests = 1;
    account.balance = 1_000_000;
    assert.deepEqual(await store.getKeyByHandle(inserted.handle), inserted, 'the key answered is a copy');
    assert.deepEqual(await store.getAccount(owner.id), owner, 'the account answered is a copy');
    await store.updateKey(inserted.id, { active: false });
    assert.equal((await store.getKeyByHandle(inserted.handle))?.active, false, 'reads are fresh, not a snapshot');
    await store.deleteKey(inserted.id);
    assert.equal(await store.getKeyByHandle(inserted.handle), null, 'a deleted key is gone');
    const name = `requests:${randomAccountId()}`;
    await assert.rejects(async () => store.hitCounter(name, 60_000, HOUR, Number.NaN), TypeError);
    assert.deepEqual(await store.hitCounter(name, 60_000, HOUR, 0), { count: 0, resetAt: HOUR + 60_000 }, 'a refused hit counts nothing');
  });
};
