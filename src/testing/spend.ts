import assert from 'node:assert/strict';
import type { KeyStore, ReservationResult } from '../store/types.js';
import { type SpendIds, type SuiteGroup, T0, assertUsd, holdOf, outcome, spendOf } from './group.js';
import { colonAccountIds, randomAccountId, sampleAccount, sampleKeyRecord } from './samples.js';

/**
 * `reserveSpend` and `settleSpend`: holds against the key's limit and the account's balance under
 * concurrency (two keys of one account share one balance), limit periods (including clocks that
 * disagree), unknown records and bad arguments. What settlements write to the ledger, and how holds
 * expire, are the `ledger` and `holds` groups.
 */
export const spendTests: SuiteGroup = (test, { concurrency }) => {
  test(`loses no usage or balance change under ${concurrency} concurrent settlements`, async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 1000 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    await Promise.all(
      Array.from({ length: concurrency }, (_, i) =>
        store.settleSpend({ keyId: inserted.id, accountId: owner.id, holdId: null, cost: 0.25, period: null, now: 10_000 + i }),
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
    assert.deepEqual(results.map(outcome).sort(byOutcome), outcomes(10, 'spend_limit_reached'));
    const holds = results.filter((result) => result.ok).map(holdOf);
    assert.equal(new Set(holds).size, 10, 'every hold has its own id');
    assertUsd((await store.getKey(inserted.id))?.reserved, 10, 'key reserved');
    assertUsd((await store.getAccount(owner.id))?.reserved, 10, 'account reserved');
  });

  test('reservations never let concurrent requests overdraw the balance', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 5 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    const results = await reserveAtOnce(store, { keyId: inserted.id, accountId: owner.id });
    assert.deepEqual(results.map(outcome).sort(byOutcome), outcomes(5, 'insufficient_balance'));
    const empty = await store.createAccount(sampleAccount({ balance: 0 }));
    const emptyKey = await store.insertKey(sampleKeyRecord(empty.id));
    assert.deepEqual(await store.reserveSpend(spendOf({ keyId: emptyKey.id, accountId: empty.id }, 0)), {
      ok: false,
      reason: 'insufficient_balance',
    });
  });

  test("two keys of one account reserve against the account's available balance, not each key's own holds", async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 5 }));
    const first = { keyId: (await store.insertKey(sampleKeyRecord(owner.id))).id, accountId: owner.id };
    const second = { keyId: (await store.insertKey(sampleKeyRecord(owner.id))).id, accountId: owner.id };
    const held = holdOf(await store.reserveSpend(spendOf(first, 4)));
    assert.deepEqual(await store.reserveSpend(spendOf(second, 2)), { ok: false, reason: 'insufficient_balance' });
    assertUsd((await store.getKey(second.keyId))?.reserved, 0, 'the refused key holds nothing');
    // The second key holds nothing itself, but the account has only 1 of its 5 available.
    holdOf(await store.reserveSpend(spendOf(second, 1)));
    assertUsd((await store.getAccount(owner.id))?.reserved, 5, 'the account holds both keys’ reservations');
    assertUsd((await store.getKey(second.keyId))?.reserved, 1, 'the second key holds its own only');
    assert.deepEqual(await store.reserveSpend(spendOf(second, 0)), { ok: false, reason: 'insufficient_balance' });
    // The first key's settlement makes room for the second again.
    await store.settleSpend({ ...first, holdId: held, cost: 0.5, period: null, now: T0 });
    holdOf(await store.reserveSpend(spendOf(second, 3.5)));
    assert.deepEqual(await store.reserveSpend(spendOf(second, 0.01)), { ok: false, reason: 'insufficient_balance' });
    assert.deepEqual(await store.reserveSpend(spendOf(first, 0.5)), { ok: false, reason: 'insufficient_balance' });
    const account = await store.getAccount(owner.id);
    assertUsd(account?.balance, 4.5, 'balance');
    assertUsd(account?.reserved, 4.5, 'account reserved');
    assertUsd((await store.getKey(first.keyId))?.reserved, 0, 'first key reserved');
    assertUsd((await store.getKey(second.keyId))?.reserved, 4.5, 'second key reserved');
  });

  test('a key at its limit is refused even a reservation of zero', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 100 }));
    const atZero = await store.insertKey(sampleKeyRecord(owner.id, { limit: 0 }));
    assert.deepEqual(await store.reserveSpend(spendOf({ keyId: atZero.id, accountId: owner.id }, 0)), {
      ok: false,
      reason: 'spend_limit_reached',
    });
    const spent = await store.insertKey(sampleKeyRecord(owner.id, { limit: 2, usage: 2 }));
    assert.deepEqual(await store.reserveSpend(spendOf({ keyId: spent.id, accountId: owner.id }, 0)), {
      ok: false,
      reason: 'spend_limit_reached',
    });
    const below = await store.insertKey(sampleKeyRecord(owner.id, { limit: 2, usage: 1.5 }));
    holdOf(await store.reserveSpend(spendOf({ keyId: below.id, accountId: owner.id }, 0)));
  });

  test('reserve, then settle: the hold is released and the real cost charged', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { limit: 5 }));
    const ids = { keyId: inserted.id, accountId: owner.id };
    const holdId = holdOf(await store.reserveSpend(spendOf(ids, 4)));
    await store.settleSpend({ ...ids, holdId, cost: 1.5, period: null, now: 42 });
    const key = await store.getKey(inserted.id);
    const owned = await store.getAccount(owner.id);
    assertUsd(key?.usage, 1.5, 'usage');
    assertUsd(key?.reserved, 0, 'key reserved');
    assert.equal(key?.lastUsedAt, 42);
    assertUsd(owned?.balance, 8.5, 'balance');
    assertUsd(owned?.reserved, 0, 'account reserved');
    assert.equal((await store.reserveSpend(spendOf(ids, 3.6))).ok, false);
    holdOf(await store.reserveSpend(spendOf(ids, 3.5)));
  });

  test('a new limit period starts usage again from zero', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 100 }));
    const inserted = await store.insertKey(
      sampleKeyRecord(owner.id, { limit: 2, limitReset: 'daily', usage: 2, usagePeriod: '2026-11-21' }),
    );
    const ids = { keyId: inserted.id, accountId: owner.id };
    assert.deepEqual(await store.reserveSpend(spendOf(ids, 1, '2026-11-21')), { ok: false, reason: 'spend_limit_reached' });
    const holdId = holdOf(await store.reserveSpend(spendOf(ids, 1, '2026-11-22')));
    await store.settleSpend({ ...ids, holdId, cost: 0.5, period: '2026-11-22', now: 1 });
    const key = await store.getKey(inserted.id);
    assertUsd(key?.usage, 0.5, 'usage in the new period');
    assert.equal(key?.usagePeriod, '2026-11-22');
    assertUsd(key?.reserved, 0, 'released');
  });

  test('reservation and settlement of unknown keys and accounts', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    const ids = { keyId: inserted.id, accountId: owner.id };
    assert.deepEqual(await store.reserveSpend(spendOf({ ...ids, keyId: inserted.id + 1_000_000 }, 1)), {
      ok: false,
      reason: 'key_not_found',
    });
    assert.deepEqual(await store.reserveSpend(spendOf({ ...ids, accountId: randomAccountId() }, 1)), {
      ok: false,
      reason: 'account_not_found',
    });
    assertUsd((await store.getKey(inserted.id))?.reserved, 0, 'a refusal holds nothing');
    const holdId = holdOf(await store.reserveSpend(spendOf(ids, 2)));
    await store.deleteKey(inserted.id);
    await store.settleSpend({ ...ids, holdId, cost: 1, period: null, now: 1 });
    const owned = await store.getAccount(owner.id);
    assertUsd(owned?.balance, 9, 'a deleted key still debits its account');
    assertUsd(owned?.reserved, 0, 'and releases its hold');
    // Settling for an account that does not exist changes nothing and writes nothing.
    assert.equal(await store.settleSpend({ ...ids, accountId: randomAccountId(), holdId: null, cost: 1, period: null, now: 2 }), null);
    assertUsd((await store.getAccount(owner.id))?.balance, 9, 'another account is not charged');
  });

  test("a settlement from an earlier period never replaces a later period's usage", async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 100 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { limit: 10, limitReset: 'daily', usagePeriod: '2026-11-21' }));
    const ids = { keyId: inserted.id, accountId: owner.id };
    // A long request reserves on day 1; a day-2 request reserves and settles before it ends.
    const dayOne = holdOf(await store.reserveSpend(spendOf(ids, 4, '2026-11-21')));
    const dayTwo = holdOf(await store.reserveSpend(spendOf(ids, 6, '2026-11-22')));
    await store.settleSpend({ ...ids, holdId: dayTwo, cost: 6, period: '2026-11-22', now: 2 });
    await store.settleSpend({ ...ids, holdId: dayOne, cost: 4, period: '2026-11-21', now: 3 });
    let key = await store.getKey(inserted.id);
    assertUsd(key?.usage, 6, "day 2's usage stays");
    assert.equal(key?.usagePeriod, '2026-11-22', 'the period does not move back');
    assertUsd(key?.reserved, 0, 'both holds are released');
    assert.equal(key?.lastUsedAt, 3);
    const owned = await store.getAccount(owner.id);
    assertUsd(owned?.balance, 90, 'both costs are debited');
    assertUsd(owned?.reserved, 0, 'account reserved');
    // So day 2 has 4 of its 10 left, not 6.
    assert.deepEqual(await store.reserveSpend(spendOf(ids, 4.5, '2026-11-22')), { ok: false, reason: 'spend_limit_reached' });
    const rest = holdOf(await store.reserveSpend(spendOf(ids, 4, '2026-11-22')));
    await store.settleSpend({ ...ids, holdId: rest, cost: 0, period: '2026-11-22', now: 4 });
    // Another reset rule's period (the limit reset changed meanwhile) is not comparable: usage stays too.
    await store.settleSpend({ ...ids, holdId: null, cost: 1, period: '2026-W47', now: 5 });
    await store.settleSpend({ ...ids, holdId: null, cost: 1, period: null, now: 6 });
    key = await store.getKey(inserted.id);
    assertUsd(key?.usage, 6, 'usage after settlements of other rules');
    assert.equal(key?.usagePeriod, '2026-11-22');
    // A settlement for a later period than the stored one starts that period, as before.
    await store.settleSpend({ ...ids, holdId: null, cost: 1.5, period: '2026-11-23', now: 7 });
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
    assert.deepEqual(await store.reserveSpend(spendOf(ids, 2, '2026-W09')), { ok: false, reason: 'spend_limit_reached' });
    holdOf(await store.reserveSpend(spendOf(ids, 1, '2026-W09')));
    const key = await store.getKey(inserted.id);
    assertUsd(key?.usage, 9, 'usage');
    assert.equal(key?.usagePeriod, '2026-W10');
    assertUsd(key?.reserved, 1, 'reserved');
  });

  test('refuses NaN, infinite, negative and huge amounts, and bad clocks, with a TypeError and changes nothing', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { limit: 5, limitReset: 'daily', usagePeriod: '2026-11-22' }));
    const ids = { keyId: inserted.id, accountId: owner.id };
    const period = '2026-11-22';
    const holdId = holdOf(await store.reserveSpend(spendOf(ids, 1, period)));
    const keyBefore = await store.getKey(inserted.id);
    const accountBefore = await store.getAccount(owner.id);
    for (const value of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1, 1e13]) {
      await assert.rejects(async () => store.reserveSpend(spendOf(ids, value, period)), TypeError, `reserve ${value}`);
      await assert.rejects(async () => store.settleSpend({ ...ids, holdId, cost: value, period, now: 9 }), TypeError, `cost ${value}`);
    }
    for (const now of [Number.NaN, Number.POSITIVE_INFINITY]) {
      await assert.rejects(async () => store.reserveSpend({ ...spendOf(ids, 1, period), now }), TypeError, `reserve now ${now}`);
      await assert.rejects(async () => store.settleSpend({ ...ids, holdId, cost: 1, period, now }), TypeError, `settle now ${now}`);
    }
    // A deadline that is not a time after `now` would be released by the next reservation.
    for (const expiresAt of [Number.NaN, Number.POSITIVE_INFINITY, T0, T0 - 1]) {
      await assert.rejects(async () => store.reserveSpend({ ...spendOf(ids, 1, period), expiresAt }), TypeError, `expiresAt ${expiresAt}`);
    }
    await assert.rejects(
      async () => store.settleSpend({ ...ids, holdId: 7 as unknown as string, cost: 1, period, now: 9 }),
      TypeError,
      'a hold id that is not a string',
    );
    assert.deepEqual(await store.getKey(inserted.id), keyBefore);
    assert.deepEqual(await store.getAccount(owner.id), accountBefore);
  });

  test("reserves and settles for an account whose id starts with ':'", async (store) => {
    for (const id of colonAccountIds()) {
      await store.createAccount(sampleAccount({ id, balance: 10 }));
      const inserted = await store.insertKey(sampleKeyRecord(id));
      const ids = { keyId: inserted.id, accountId: id };
      const holdId = holdOf(await store.reserveSpend(spendOf(ids, 2)));
      await store.settleSpend({ ...ids, holdId, cost: 1, period: null, now: 5 });
      const owned = await store.getAccount(id);
      assertUsd(owned?.balance, 9, 'settled');
      assertUsd(owned?.reserved, 0, 'released');
      assertUsd((await store.getKey(inserted.id))?.usage, 1, 'key usage');
    }
  });
};

const AT_ONCE = 50;

/** {@link AT_ONCE} reservations of 1 USD for one key at once, as concurrent requests make them. */
function reserveAtOnce(store: KeyStore, ids: SpendIds): Promise<ReservationResult[]> {
  return Promise.all(Array.from({ length: AT_ONCE }, () => store.reserveSpend(spendOf(ids, 1))));
}

/** Accepted reservations first. */
function byOutcome(a: { ok: boolean }, b: { ok: boolean }): number {
  return Number(b.ok) - Number(a.ok);
}

/** What {@link reserveAtOnce} must answer, sorted {@link byOutcome}: `accepted` times ok, every other one refused for `reason`. */
function outcomes(accepted: number, reason: Exclude<ReservationResult, { ok: true }>['reason']): ReturnType<typeof outcome>[] {
  return Array.from({ length: AT_ONCE }, (_, i) => (i < accepted ? { ok: true } : { ok: false, reason }));
}
