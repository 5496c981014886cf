import assert from 'node:assert/strict';
import { type SuiteGroup, T0, assertUsd, holdOf } from './group.js';
import { sampleAccount, sampleKeyRecord } from './samples.js';

/**
 * Spend holds with deadlines: a hold past its deadline is released by the next reservation of its key
 * or account, or by `releaseExpiredHolds`, exactly once; a late settlement of a released hold charges
 * but releases nothing; `extendHold` keeps a hold alive.
 */
export const holdTests: SuiteGroup = (test, { concurrency }) => {
  test('a hold past its deadline is released by the next reservation of its key, once; its late settlement charges only', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { limit: 5 }));
    const ids = { keyId: inserted.id, accountId: owner.id };
    const stale = holdOf(await store.reserveSpend({ ...ids, amount: 4, period: null, now: T0, expiresAt: T0 + 100 }));
    // Before the deadline the hold counts.
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 2, period: null, now: T0 + 99, expiresAt: T0 + 1000 }), {
      ok: false,
      reason: 'spend_limit_reached',
    });
    // At the deadline it is released first, so the key's whole limit is free again.
    const fresh = holdOf(await store.reserveSpend({ ...ids, amount: 5, period: null, now: T0 + 100, expiresAt: T0 + 1000 }));
    assert.notEqual(fresh, stale);
    assertUsd((await store.getKey(inserted.id))?.reserved, 5, 'key reserved: the new hold only');
    assertUsd((await store.getAccount(owner.id))?.reserved, 5, 'account reserved: the new hold only');
    // The gateway that made the stale hold was alive after all: its settlement charges and releases nothing.
    await store.settleSpend({ ...ids, holdId: stale, cost: 1, period: null, now: T0 + 101 });
    const key = await store.getKey(inserted.id);
    const account = await store.getAccount(owner.id);
    assertUsd(key?.reserved, 5, 'the new hold is not released by the stale one');
    assertUsd(key?.usage, 1, 'the late cost is charged');
    assertUsd(account?.reserved, 5, 'account reserved');
    assertUsd(account?.balance, 9, 'balance');
    assert.equal(await store.extendHold(stale, owner.id, T0 + 5000), false, 'a released hold cannot be extended');
  });

  test('a hold past its deadline is released by the next reservation of another key of its account', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 5 }));
    const first = { keyId: (await store.insertKey(sampleKeyRecord(owner.id))).id, accountId: owner.id };
    const second = { keyId: (await store.insertKey(sampleKeyRecord(owner.id))).id, accountId: owner.id };
    holdOf(await store.reserveSpend({ ...first, amount: 4, period: null, now: T0, expiresAt: T0 + 100 }));
    assert.deepEqual(await store.reserveSpend({ ...second, amount: 2, period: null, now: T0 + 50, expiresAt: T0 + 1000 }), {
      ok: false,
      reason: 'insufficient_balance',
    });
    holdOf(await store.reserveSpend({ ...second, amount: 2, period: null, now: T0 + 150, expiresAt: T0 + 1000 }));
    assertUsd((await store.getKey(first.keyId))?.reserved, 0, "the dead hold left its key's reserved");
    assertUsd((await store.getKey(second.keyId))?.reserved, 2, 'second key reserved');
    assertUsd((await store.getAccount(owner.id))?.reserved, 2, 'account reserved');
  });

  test('releaseExpiredHolds releases holds of any account past their deadline, up to a limit, each once', async (store) => {
    const owners = await Promise.all([0, 1, 2].map(() => store.createAccount(sampleAccount({ balance: 10 }))));
    const keys = await Promise.all(owners.map((owner) => store.insertKey(sampleKeyRecord(owner.id))));
    // Far in the past, so a store shared with other tests has no other holds due by then.
    const at = 1_000_000;
    const holds: string[] = [];
    const live: Array<{ keyId: number; accountId: string; holdId: string }> = [];
    for (const [i, owner] of owners.entries()) {
      const ids = { keyId: (keys[i] as { id: number }).id, accountId: owner.id };
      holds.push(holdOf(await store.reserveSpend({ ...ids, amount: 1, period: null, now: at - 100, expiresAt: at })));
      live.push({
        ...ids,
        holdId: holdOf(await store.reserveSpend({ ...ids, amount: 2, period: null, now: at - 100, expiresAt: at + 10_000 })),
      });
    }
    assert.equal(await store.releaseExpiredHolds(at - 1), 0, 'nothing is due before the deadline');
    assert.equal(await store.releaseExpiredHolds(at, 2), 2, 'up to the limit');
    assert.equal(await store.releaseExpiredHolds(at), 1, 'the rest');
    assert.equal(await store.releaseExpiredHolds(at), 0, 'each once');
    for (const [i, owner] of owners.entries()) {
      assertUsd((await store.getAccount(owner.id))?.reserved, 2, `account ${i}: the live hold only`);
      assertUsd((await store.getKey((keys[i] as { id: number }).id))?.reserved, 2, `key ${i}: the live hold only`);
    }
    const ids = { keyId: (keys[0] as { id: number }).id, accountId: (owners[0] as { id: string }).id };
    await store.settleSpend({ ...ids, holdId: holds[0] as string, cost: 0.5, period: null, now: at + 1 });
    assertUsd((await store.getAccount(ids.accountId))?.reserved, 2, 'a late settlement releases nothing');
    assertUsd((await store.getAccount(ids.accountId))?.balance, 9.5, 'and charges its cost');
    for (const limit of [0, -1, 1.5, Number.NaN]) {
      await assert.rejects(async () => store.releaseExpiredHolds(at, limit), TypeError, `limit ${limit}`);
    }
    await assert.rejects(async () => store.releaseExpiredHolds(Number.NaN), TypeError);
    // Settled, so a store shared with the next tests holds nothing of this one.
    for (const hold of live) await store.settleSpend({ ...hold, cost: 0, period: null, now: at + 2 });
    assertUsd((await store.getAccount(ids.accountId))?.reserved, 0, 'settled');
  });

  test('extendHold keeps a hold alive past its first deadline; only its own account may extend it', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const other = await store.createAccount(sampleAccount({ balance: 10 }));
    const ids = { keyId: (await store.insertKey(sampleKeyRecord(owner.id, { limit: 5 }))).id, accountId: owner.id };
    const holdId = holdOf(await store.reserveSpend({ ...ids, amount: 4, period: null, now: T0, expiresAt: T0 + 100 }));
    assert.equal(await store.extendHold(holdId, other.id, T0 + 10_000), false, "another account's hold");
    assert.equal(await store.extendHold(holdId, owner.id, T0 + 1000), true);
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 2, period: null, now: T0 + 500, expiresAt: T0 + 2000 }), {
      ok: false,
      reason: 'spend_limit_reached',
    });
    assertUsd((await store.getKey(ids.keyId))?.reserved, 4, 'still held after the first deadline');
    await store.settleSpend({ ...ids, holdId, cost: 1, period: null, now: T0 + 600 });
    assertUsd((await store.getKey(ids.keyId))?.reserved, 0, 'released by its settlement');
    assert.equal(await store.extendHold(holdId, owner.id, T0 + 5000), false, 'a settled hold is gone');
    assert.equal(await store.extendHold('no-such-hold', owner.id, T0 + 5000), false);
    await assert.rejects(async () => store.extendHold(holdId, owner.id, Number.NaN), TypeError);
  });

  test("a hold is released once, and by its own key's settlement only: settling it twice, or another key's, releases nothing more", async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const ids = { keyId: (await store.insertKey(sampleKeyRecord(owner.id))).id, accountId: owner.id };
    const other = await store.createAccount(sampleAccount({ balance: 10 }));
    const stranger = { keyId: (await store.insertKey(sampleKeyRecord(other.id))).id, accountId: other.id };
    const foreign = holdOf(await store.reserveSpend({ ...stranger, amount: 2, period: null, now: T0, expiresAt: T0 + 1000 }));
    await store.settleSpend({ ...ids, holdId: foreign, cost: 0, period: null, now: T0 });
    assertUsd((await store.getAccount(other.id))?.reserved, 2, "another account's hold is not released");
    assertUsd((await store.getKey(stranger.keyId))?.reserved, 2, "another key's hold is not released");
    await store.settleSpend({ ...stranger, holdId: foreign, cost: 0, period: null, now: T0 });
    assertUsd((await store.getAccount(other.id))?.reserved, 0, 'its own settlement releases it');
    const first = holdOf(await store.reserveSpend({ ...ids, amount: 4, period: null, now: T0, expiresAt: T0 + 1000 }));
    await store.settleSpend({ ...ids, holdId: first, cost: 0, period: null, now: T0 + 1 });
    holdOf(await store.reserveSpend({ ...ids, amount: 3, period: null, now: T0 + 2, expiresAt: T0 + 1000 }));
    await store.settleSpend({ ...ids, holdId: first, cost: 0, period: null, now: T0 + 3 });
    await store.settleSpend({ ...ids, holdId: 'no-such-hold', cost: 0, period: null, now: T0 + 4 });
    assertUsd((await store.getKey(ids.keyId))?.reserved, 3, 'key reserved');
    assertUsd((await store.getAccount(owner.id))?.reserved, 3, 'account reserved');
    assertUsd((await store.getAccount(owner.id))?.balance, 10, 'nothing charged');
  });

  test(`expired holds released by sweeps, reservations and late settlements at once are each released exactly once (${concurrency} calls)`, async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 1000 }));
    const ids = { keyId: (await store.insertKey(sampleKeyRecord(owner.id))).id, accountId: owner.id };
    const at = 2_000_000;
    const count = Math.max(4, Math.floor(concurrency / 4));
    const holds = await Promise.all(
      Array.from({ length: count }, async () =>
        holdOf(await store.reserveSpend({ ...ids, amount: 1, period: null, now: at - 10, expiresAt: at })),
      ),
    );
    const fresh = Math.max(2, Math.floor(count / 4));
    const answers = await Promise.all([
      ...Array.from({ length: fresh }, () => store.releaseExpiredHolds(at)),
      ...holds.map((holdId) => store.settleSpend({ ...ids, holdId, cost: 0.5, period: null, now: at + 1 })),
      ...Array.from({ length: fresh }, () => store.reserveSpend({ ...ids, amount: 1, period: null, now: at, expiresAt: at + 10_000 })),
    ]);
    for (const answer of answers.slice(fresh + count)) holdOf(answer as Parameters<typeof holdOf>[0]);
    const swept = answers.slice(0, fresh).reduce<number>((total, n) => total + (n as number), 0);
    assert.ok(swept <= count, `the sweeps released ${swept} of ${count} holds`);
    const account = await store.getAccount(owner.id);
    assertUsd(account?.reserved, fresh, 'only the new holds are held');
    assertUsd((await store.getKey(ids.keyId))?.reserved, fresh, 'key reserved');
    assertUsd(account?.balance, 1000 - count * 0.5, 'every late settlement charged');
  });
};
