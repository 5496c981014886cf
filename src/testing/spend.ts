import assert from 'node:assert/strict';
import type { KeyStore, ReservationResult } from '../store/types.js';
import { type SuiteGroup, assertUsd } from './group.js';
import { colonAccountIds, randomAccountId, sampleAccount, sampleKeyRecord } from './samples.js';

/**
 * `reserveSpend` and `settleSpend`: holds against the key's limit and the account's balance under
 * concurrency, limit periods (including clocks that disagree), unknown records and bad amounts.
 */
export const spendTests: SuiteGroup = (test, { concurrency }) => {
  test(`loses no usage or balance change under ${concurrency} concurrent settlements`, async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 1000 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    await Promise.all(
      Array.from({ length: concurrency }, (_, i) =>
        store.settleSpend({ keyId: inserted.id, accountId: owner.id, reserved: 0, cost: 0.25, period: null, now: 10_000 + i }),
      ),
    );
    const key = await store.getKey(inserted.id);
    assertUsd(key?.usage, concurrency * 0.25, 'key usage');
    assert.equal(key?.lastUsedAt, 10_000 + concurrency - 1);
    assertUsd((await store.getAccount(owner.id))?.balance, 1000 - concurrency * 0.25, 'account balance');
  });

  test('reservations never let concurrent requests pass the key limit', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 1000 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { limit: 10 }));
    const results = await reserveAtOnce(store, { keyId: inserted.id, accountId: owner.id });
    assert.deepEqual(results.sort(byOutcome), outcomes(10, 'spend_limit_reached'));
    assertUsd((await store.getKey(inserted.id))?.reserved, 10, 'key reserved');
    assertUsd((await store.getAccount(owner.id))?.reserved, 10, 'account reserved');
  });

  test('reservations never let concurrent requests overdraw the balance', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 5 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    const results = await reserveAtOnce(store, { keyId: inserted.id, accountId: owner.id });
    assert.deepEqual(results.sort(byOutcome), outcomes(5, 'insufficient_balance'));
    const empty = await store.createAccount(sampleAccount({ balance: 0 }));
    const emptyKey = await store.insertKey(sampleKeyRecord(empty.id));
    assert.deepEqual(await store.reserveSpend({ keyId: emptyKey.id, accountId: empty.id, amount: 0, period: null }), {
      ok: false,
      reason: 'insufficient_balance',
    });
  });

  test("two keys of one account reserve against the account's available balance, not each key's own holds", async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 5 }));
    const keyA = await store.insertKey(sampleKeyRecord(owner.id));
    const keyB = await store.insertKey(sampleKeyRecord(owner.id));
    assert.deepEqual(await store.reserveSpend({ keyId: keyA.id, accountId: owner.id, amount: 4, period: null }), { ok: true });
    // Key B holds nothing itself, but the account has only 1 of its 5 available.
    assert.deepEqual(await store.reserveSpend({ keyId: keyB.id, accountId: owner.id, amount: 2, period: null }), {
      ok: false,
      reason: 'insufficient_balance',
    });
    assert.deepEqual(await store.reserveSpend({ keyId: keyB.id, accountId: owner.id, amount: 1, period: null }), { ok: true });
    assertUsd((await store.getAccount(owner.id))?.reserved, 5, 'account reserved');
    assertUsd((await store.getKey(keyB.id))?.reserved, 1, 'key B reserved');
    // A's release makes room for B again.
    await store.settleSpend({ keyId: keyA.id, accountId: owner.id, reserved: 4, cost: 1, period: null, now: 1 });
    assert.deepEqual(await store.reserveSpend({ keyId: keyB.id, accountId: owner.id, amount: 3, period: null }), { ok: true });
    assert.deepEqual(await store.reserveSpend({ keyId: keyA.id, accountId: owner.id, amount: 0.5, period: null }), {
      ok: false,
      reason: 'insufficient_balance',
    });
  });

  test('a key at its limit is refused even a reservation of zero', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 100 }));
    const atZero = await store.insertKey(sampleKeyRecord(owner.id, { limit: 0 }));
    assert.deepEqual(await store.reserveSpend({ keyId: atZero.id, accountId: owner.id, amount: 0, period: null }), {
      ok: false,
      reason: 'spend_limit_reached',
    });
    const spent = await store.insertKey(sampleKeyRecord(owner.id, { limit: 2, usage: 2 }));
    assert.deepEqual(await store.reserveSpend({ keyId: spent.id, accountId: owner.id, amount: 0, period: null }), {
      ok: false,
      reason: 'spend_limit_reached',
    });
    const below = await store.insertKey(sampleKeyRecord(owner.id, { limit: 2, usage: 1.5 }));
    assert.deepEqual(await store.reserveSpend({ keyId: below.id, accountId: owner.id, amount: 0, period: null }), { ok: true });
  });

  test('reserve, then settle: the reservation is released and the real cost charged', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { limit: 5 }));
    assert.deepEqual(await store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 4, period: null }), { ok: true });
    await store.settleSpend({ keyId: inserted.id, accountId: owner.id, reserved: 4, cost: 1.5, period: null, now: 42 });
    const key = await store.getKey(inserted.id);
    const owned = await store.getAccount(owner.id);
    assertUsd(key?.usage, 1.5, 'usage');
    assertUsd(key?.reserved, 0, 'key reserved');
    assertUsd(owned?.balance, 8.5, 'balance');
    assertUsd(owned?.reserved, 0, 'account reserved');
    assert.equal((await store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 3.6, period: null })).ok, false);
    assert.equal((await store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 3.5, period: null })).ok, true);
  });

  test('a new limit period starts usage again from zero', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 100 }));
    const inserted = await store.insertKey(
      sampleKeyRecord(owner.id, { limit: 2, limitReset: 'daily', usage: 2, usagePeriod: '2026-11-21' }),
    );
    assert.deepEqual(await store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 1, period: '2026-11-21' }), {
      ok: false,
      reason: 'spend_limit_reached',
    });
    assert.deepEqual(await store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 1, period: '2026-11-22' }), { ok: true });
    await store.settleSpend({ keyId: inserted.id, accountId: owner.id, reserved: 1, cost: 0.5, period: '2026-11-22', now: 1 });
    const key = await store.getKey(inserted.id);
    assertUsd(key?.usage, 0.5, 'usage in the new period');
    assert.equal(key?.usagePeriod, '2026-11-22');
  });

  test('reservation and settlement of unknown keys and accounts', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    assert.deepEqual(await store.reserveSpend({ keyId: inserted.id + 1_000_000, accountId: owner.id, amount: 1, period: null }), {
      ok: false,
      reason: 'key_not_found',
    });
    assert.deepEqual(await store.reserveSpend({ keyId: inserted.id, accountId: randomAccountId(), amount: 1, period: null }), {
      ok: false,
      reason: 'account_not_found',
    });
    await store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 2, period: null });
    await store.deleteKey(inserted.id);
    await store.settleSpend({ keyId: inserted.id, accountId: owner.id, reserved: 2, cost: 1, period: null, now: 1 });
    const owned = await store.getAccount(owner.id);
    assertUsd(owned?.balance, 9, 'a deleted key still debits its account');
    assertUsd(owned?.reserved, 0, 'and releases its reservation');
  });

  test("a settlement from an earlier period never replaces a later period's usage", async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 100 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { limit: 10, limitReset: 'daily', usagePeriod: '2026-11-21' }));
    const ids = { keyId: inserted.id, accountId: owner.id };
    // A long request reserves on day 1; a day-2 request reserves and settles before it ends.
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 4, period: '2026-11-21' }), { ok: true });
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 6, period: '2026-11-22' }), { ok: true });
    await store.settleSpend({ ...ids, reserved: 6, cost: 6, period: '2026-11-22', now: 2 });
    await store.settleSpend({ ...ids, reserved: 4, cost: 4, period: '2026-11-21', now: 3 });
    let key = await store.getKey(inserted.id);
    assertUsd(key?.usage, 6, "day 2's usage stays");
    assert.equal(key?.usagePeriod, '2026-11-22', 'the period does not move back');
    assertUsd(key?.reserved, 0, 'both reservations are released');
    assert.equal(key?.lastUsedAt, 3);
    const owned = await store.getAccount(owner.id);
    assertUsd(owned?.balance, 90, 'both costs are debited');
    assertUsd(owned?.reserved, 0, 'account reserved');
    // So day 2 has 4 of its 10 left, not 6.
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 4.5, period: '2026-11-22' }), { ok: false, reason: 'spend_limit_reached' });
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 4, period: '2026-11-22' }), { ok: true });
    await store.settleSpend({ ...ids, reserved: 4, cost: 0, period: '2026-11-22', now: 4 });
    // Another reset rule's period (the limit reset changed meanwhile) is not comparable: usage stays too.
    await store.settleSpend({ ...ids, reserved: 0, cost: 1, period: '2026-W47', now: 5 });
    await store.settleSpend({ ...ids, reserved: 0, cost: 1, period: null, now: 6 });
    key = await store.getKey(inserted.id);
    assertUsd(key?.usage, 6, 'usage after settlements of other rules');
    assert.equal(key?.usagePeriod, '2026-11-22');
    // A settlement for a later period than the stored one starts that period, as before.
    await store.settleSpend({ ...ids, reserved: 0, cost: 1.5, period: '2026-11-23', now: 7 });
    key = await store.getKey(inserted.id);
    assertUsd(key?.usage, 1.5, 'usage of the later period');
    assert.equal(key?.usagePeriod, '2026-11-23');
    assertUsd((await store.getAccount(owner.id))?.balance, 86.5, 'every cost is debited');
  });

  test("a reservation for an earlier period (a clock behind) counts the stored later period's usage and keeps it", async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 100 }));
    const inserted = await store.insertKey(
      sampleKeyRecord(owner.id, { limit: 10, limitReset: 'weekly', usage: 9, usagePeriod: '2026-W10' }),
    );
    const ids = { keyId: inserted.id, accountId: owner.id };
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 2, period: '2026-W09' }), { ok: false, reason: 'spend_limit_reached' });
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 1, period: '2026-W09' }), { ok: true });
    const key = await store.getKey(inserted.id);
    assertUsd(key?.usage, 9, 'usage');
    assert.equal(key?.usagePeriod, '2026-W10');
    assertUsd(key?.reserved, 1, 'reserved');
  });

  test('refuses NaN, infinite, negative and huge amounts with a TypeError and changes nothing', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { limit: 5, limitReset: 'daily', usagePeriod: '2026-11-22' }));
    const ids = { keyId: inserted.id, accountId: owner.id };
    const period = '2026-11-22';
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 1, period }), { ok: true });
    const keyBefore = await store.getKey(inserted.id);
    const accountBefore = await store.getAccount(owner.id);
    for (const value of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1, 1e13]) {
      await assert.rejects(async () => store.reserveSpend({ ...ids, amount: value, period }), TypeError, `reserve ${value}`);
      await assert.rejects(async () => store.settleSpend({ ...ids, reserved: 1, cost: value, period, now: 9 }), TypeError, `cost ${value}`);
      await assert.rejects(
        async () => store.settleSpend({ ...ids, reserved: value, cost: 0, period, now: 9 }),
        TypeError,
        `reserved ${value}`,
      );
    }
    assert.deepEqual(await store.getKey(inserted.id), keyBefore);
    assert.deepEqual(await store.getAccount(owner.id), accountBefore);
  });

  test("reserves and settles for an account whose id starts with ':'", async (store) => {
    for (const id of colonAccountIds()) {
      await store.createAccount(sampleAccount({ id, balance: 10 }));
      const inserted = await store.insertKey(sampleKeyRecord(id));
      assert.deepEqual(await store.reserveSpend({ keyId: inserted.id, accountId: id, amount: 2, period: null }), { ok: true });
      await store.settleSpend({ keyId: inserted.id, accountId: id, reserved: 2, cost: 1, period: null, now: 5 });
      const owned = await store.getAccount(id);
      assertUsd(owned?.balance, 9, 'settled');
      assertUsd(owned?.reserved, 0, 'released');
      assertUsd((await store.getKey(inserted.id))?.usage, 1, 'key usage');
    }
  });
};

const AT_ONCE = 50;

/** {@link AT_ONCE} reservations of 1 USD for one key at once, as concurrent requests make them. */
function reserveAtOnce(store: KeyStore, ids: { keyId: number; accountId: string }): Promise<ReservationResult[]> {
  return Promise.all(Array.from({ length: AT_ONCE }, () => store.reserveSpend({ ...ids, amount: 1, period: null })));
}

/** Accepted reservations first. */
function byOutcome(a: ReservationResult, b: ReservationResult): number {
  return Number(b.ok) - Number(a.ok);
}

/** What {@link reserveAtOnce} must answer, sorted {@link byOutcome}: `accepted` times ok, every other one refused for `reason`. */
function outcomes(accepted: number, reason: Exclude<ReservationResult, { ok: true }>['reason']): ReservationResult[] {
  return Array.from({ length: AT_ONCE }, (_, i) => (i < accepted ? { ok: true } : { ok: false, reason }));
}
