import assert from 'node:assert/strict';
import { HOUR, type SuiteGroup, T0, holdOf, spendOf } from './group.js';
import { sampleAccount, sampleKeyRecord } from './samples.js';

/** `rotateKey`: hashes swap atomically, a second rotation in the grace period drops the oldest secret, everything else is kept. */
export const rotationTests: SuiteGroup = (test) => {
  test('a new key has no previous secret', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    assert.equal(inserted.previousHash, null);
    assert.equal(inserted.previousKeyExpiresAt, null);
    assert.deepEqual(await store.getKey(inserted.id), inserted);
  });

  test('rotateKey swaps the hashes and keeps the handle, usage, limits, holds, state and lastUsedAt', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 50 }));
    const inserted = await store.insertKey(
      sampleKeyRecord(owner.id, {
        hash: 'hash-1',
        active: false,
        limit: 20,
        limitReset: 'monthly',
        usage: 1.5,
        usagePeriod: '2023-11',
        rateLimit: { requests: 3, interval: '1m' },
        models: ['gpt-4o*'],
        expiresAt: T0 + 100 * HOUR,
      }),
    );
    holdOf(await store.reserveSpend(spendOf({ keyId: inserted.id, accountId: owner.id }, 2, '2023-11')));
    await store.touchKey(inserted.id, T0 + 7);
    const before = await store.getKey(inserted.id);
    assert.ok(before);
    const rotated = await store.rotateKey({ id: inserted.id, hash: 'hash-2', previousKeyExpiresAt: T0 + HOUR, now: T0 });
    assert.deepEqual(rotated, { ...before, hash: 'hash-2', previousHash: 'hash-1', previousKeyExpiresAt: T0 + HOUR });
    assert.deepEqual(await store.getKey(inserted.id), rotated);
    assert.deepEqual(await store.getKeyByHandle(inserted.handle), rotated, 'the same handle finds it');
    assert.equal(rotated?.active, false, 'a deactivated key stays deactivated');
  });

  test('a second rotation within the grace period ends the oldest secret at once; after the grace the current one is kept', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { hash: 'hash-1' }));
    await store.rotateKey({ id: inserted.id, hash: 'hash-2', previousKeyExpiresAt: T0 + HOUR, now: T0 });
    const again = await store.rotateKey({ id: inserted.id, hash: 'hash-3', previousKeyExpiresAt: T0 + 2 * HOUR, now: T0 + 60_000 });
    assert.deepEqual([again?.hash, again?.previousHash, again?.previousKeyExpiresAt], ['hash-3', 'hash-2', T0 + 2 * HOUR]);
    const later = await store.rotateKey({ id: inserted.id, hash: 'hash-4', previousKeyExpiresAt: T0 + 4 * HOUR, now: T0 + 3 * HOUR });
    assert.deepEqual([later?.hash, later?.previousHash, later?.previousKeyExpiresAt], ['hash-4', 'hash-3', T0 + 4 * HOUR]);
  });

  test('a rotation without a grace period (none, now, or past) leaves no previous secret', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { hash: 'hash-1' }));
    await store.rotateKey({ id: inserted.id, hash: 'hash-2', previousKeyExpiresAt: T0 + HOUR, now: T0 });
    let n = 3;
    for (const previousKeyExpiresAt of [null, T0, T0 - 1]) {
      const rotated = await store.rotateKey({ id: inserted.id, hash: `hash-${n}`, previousKeyExpiresAt, now: T0 });
      assert.deepEqual(
        [rotated?.hash, rotated?.previousHash, rotated?.previousKeyExpiresAt],
        [`hash-${n}`, null, null],
        `grace ${previousKeyExpiresAt}`,
      );
      n += 1;
    }
  });

  test('rotating an unknown key answers null; bad hashes and times are refused with a TypeError and change nothing', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    assert.equal(await store.rotateKey({ id: inserted.id + 1_000_000, hash: 'h', previousKeyExpiresAt: null, now: T0 }), null);
    const good = { id: inserted.id, hash: 'hash-2', previousKeyExpiresAt: T0 + HOUR, now: T0 };
    for (const bad of [
      { hash: '' },
      { hash: 5 },
      { now: Number.NaN },
      { previousKeyExpiresAt: Number.NaN },
      { previousKeyExpiresAt: Number.POSITIVE_INFINITY },
    ]) {
      await assert.rejects(async () => store.rotateKey({ ...good, ...bad } as typeof good), TypeError, JSON.stringify(bad));
    }
    assert.deepEqual(await store.getKey(inserted.id), inserted);
  });
};
