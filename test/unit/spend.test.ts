import { describe, expect, it } from 'vitest';
import { createAccount, creditBalance, prepareKey } from '../../src/keys/accounts.js';
import {
  MAX_USD,
  addUsage,
  applyReservation,
  applyRotation,
  applySettlement,
  balanceAfter,
  checkBalanceChange,
  checkCounterHit,
  checkLedgerQuery,
  checkReservation,
  checkSettlement,
  checkUsageRange,
  isEarlierPeriod,
  isRetentionDays,
  isUtcDate,
  openingEntry,
  releaseHold,
  retentionCutoff,
  usageCell,
  usageEntry,
} from '../../src/store/spend-rules.js';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import { sampleKeyRecord } from '../../src/testing/index.js';
import type { AccountRecord, BalanceChange, KeyRecord, SpendSettlement } from '../../src/store/types.js';
import { fastHasher } from '../helpers.js';

const hasher = fastHasher();
const BAD_AMOUNTS = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0.01, MAX_USD * 10];

function key(overrides: Partial<KeyRecord> = {}): KeyRecord {
  return { ...sampleKeyRecord('acct_1', { name: 'k', hash: 'x', createdAt: 0 }), id: 1, ...overrides };
}

function account(overrides: Partial<AccountRecord> = {}): AccountRecord {
  return { id: 'acct_1', balance: 100, reserved: 0, isFreeTier: false, createdAt: 0, ...overrides };
}

/** A reservation of `amount` at time 0 whose hold lasts a minute. */
function reservation(amount: number) {
  return { keyId: 1, accountId: 'acct_1', amount, period: null, now: 0, expiresAt: 60_000 };
}

const SETTLEMENT: SpendSettlement = { keyId: 1, accountId: 'acct_1', holdId: null, cost: 1, period: null, now: 10 };

describe('limit periods', () => {
  it('orders periods of one reset rule and refuses to compare periods of different rules', () => {
    expect(isEarlierPeriod('2026-11-21', '2026-11-22')).toBe(true);
    expect(isEarlierPeriod('2026-12-31', '2027-01-01')).toBe(true);
    expect(isEarlierPeriod('2026-W09', '2026-W10')).toBe(true);
    expect(isEarlierPeriod('2026-W53', '2027-W01')).toBe(true);
    expect(isEarlierPeriod('2026-11', '2026-12')).toBe(true);
    expect(isEarlierPeriod('2026-11-22', '2026-11-22')).toBe(false);
    expect(isEarlierPeriod('2026-11-23', '2026-11-22')).toBe(false);
    expect(isEarlierPeriod('2026-11-22', '2026-W48')).toBe(false);
    expect(isEarlierPeriod(null, '2026-11-22')).toBe(false);
    expect(isEarlierPeriod('2026-11-22', null)).toBe(false);
  });
});

describe('applySettlement', () => {
  it('adds the cost in the same period, starts a later period, and leaves a later stored period alone', () => {
    const same = key({ usage: 3, usagePeriod: '2026-11-22', reserved: 2 });
    applySettlement(same, null, { ...SETTLEMENT, period: '2026-11-22' });
    expect([same.usage, same.usagePeriod, same.reserved]).toEqual([4, '2026-11-22', 2]);

    const older = key({ usage: 3, usagePeriod: '2026-11-21' });
    applySettlement(older, null, { ...SETTLEMENT, period: '2026-11-22' });
    expect([older.usage, older.usagePeriod]).toEqual([1, '2026-11-22']);

    const newer = key({ usage: 8, usagePeriod: '2026-11-23' });
    const owner = account({ reserved: 2 });
    applySettlement(newer, owner, { ...SETTLEMENT, period: '2026-11-22' });
    expect([newer.usage, newer.usagePeriod, newer.lastUsedAt]).toEqual([8, '2026-11-23', 10]);
    expect([owner.balance, owner.reserved]).toEqual([99, 2]);
  });

  it('throws a TypeError for a non-finite, negative or huge cost, a bad clock, hold id or usage, and changes nothing', () => {
    for (const value of BAD_AMOUNTS) {
      const record = key({ usage: 1, reserved: 1 });
      const owner = account({ reserved: 1 });
      const before = [structuredClone(record), structuredClone(owner)];
      expect(() => applySettlement(record, owner, { ...SETTLEMENT, cost: value })).toThrow(TypeError);
      expect([record, owner]).toEqual(before);
    }
    expect(() => checkSettlement({ ...SETTLEMENT, now: Number.NaN })).toThrow(TypeError);
    expect(() => checkSettlement({ ...SETTLEMENT, now: 9e15 })).toThrow(TypeError);
    expect(() => checkSettlement({ ...SETTLEMENT, holdId: 5 as unknown as string })).toThrow(TypeError);
    const usage = { model: 'm', promptTokens: 1, completionTokens: 2, requestId: 'req_1', upstreamId: null };
    expect(() => checkSettlement({ ...SETTLEMENT, usage })).not.toThrow();
    for (const bad of [
      { model: '' },
      { model: 'm'.repeat(201) },
      { promptTokens: -1 },
      { completionTokens: 1.5 },
      { promptTokens: Number.NaN },
      { requestId: '' },
      { upstreamId: '' },
      { upstreamId: 7 },
    ]) {
      expect(() => checkSettlement({ ...SETTLEMENT, usage: { ...usage, ...bad } as typeof usage }), JSON.stringify(bad)).toThrow(TypeError);
    }
  });
});

describe('holds', () => {
  it('releaseHold takes the amount off the key and the account, never below zero, and skips what is gone', () => {
    const record = key({ reserved: 5 });
    const owner = account({ reserved: 6 });
    const hold = { id: '1', keyId: 1, accountId: 'acct_1', amount: 2, expiresAt: 0 };
    releaseHold(hold, record, owner);
    expect([record.reserved, owner.reserved]).toEqual([3, 4]);
    releaseHold({ ...hold, amount: 10 }, null, owner);
    expect(owner.reserved).toBe(0);
  });
});

describe('applyReservation', () => {
  it('throws a TypeError for NaN instead of admitting it (NaN passes every comparison) and changes nothing', () => {
    for (const value of BAD_AMOUNTS) {
      const record = key({ limit: 10 });
      const owner = account();
      expect(() => applyReservation(record, owner, reservation(value))).toThrow(TypeError);
      expect([record.reserved, owner.reserved]).toEqual([0, 0]);
    }
    expect(() => checkReservation(reservation(0))).not.toThrow();
    expect(() => checkReservation(reservation(MAX_USD))).not.toThrow();
  });

  it('refuses a hold deadline that is not a finite time after now', () => {
    for (const expiresAt of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => checkReservation({ ...reservation(1), expiresAt })).toThrow(TypeError);
    }
    expect(() => checkReservation({ ...reservation(1), now: Number.NaN })).toThrow(TypeError);
  });

  it('admits against the account balance net of every hold, and answers the refusal without changing anything', () => {
    const record = key();
    const owner = account({ balance: 5, reserved: 4 });
    expect(applyReservation(record, owner, reservation(2))).toEqual({ ok: false, reason: 'insufficient_balance' });
    expect([record.reserved, owner.reserved]).toEqual([0, 4]);
    expect(applyReservation(record, owner, reservation(1))).toEqual({ ok: true });
    expect([record.reserved, owner.reserved]).toEqual([1, 5]);
  });
});

describe('balance changes and counter hits', () => {
  const change: BalanceChange = { accountId: 'acct_1', type: 'credit', amount: 5, reference: 'pay_1', note: null, now: 0 };

  it('accepts credits above 0 and adjustments of either sign up to MAX_USD, and refuses the rest', () => {
    expect(() => checkBalanceChange(change)).not.toThrow();
    expect(() => checkBalanceChange({ ...change, type: 'adjustment', amount: -MAX_USD })).not.toThrow();
    for (const bad of [
      { amount: 0 },
      { amount: -5 },
      { type: 'adjustment', amount: 0 },
      { amount: Number.NaN },
      { amount: 1e300 },
      { type: 'adjustment', amount: -1e300 },
      { type: 'gift' },
      { reference: '' },
      { reference: 'r'.repeat(201) },
      { note: 'n'.repeat(1001) },
      { note: 3 },
      { now: Number.POSITIVE_INFINITY },
    ]) {
      expect(() => checkBalanceChange({ ...change, ...bad } as BalanceChange), JSON.stringify(bad)).toThrow(TypeError);
    }
  });

  it('computes the balance after a change, rounded, and refuses one beyond ±MAX_USD', () => {
    expect(balanceAfter(0.1, 0.2)).toBe(0.3);
    expect(balanceAfter(MAX_USD - 1, 1)).toBe(MAX_USD);
    expect(() => balanceAfter(MAX_USD, 1)).toThrow(TypeError);
    expect(() => balanceAfter(-MAX_USD, -1)).toThrow(TypeError);
    expect(() => balanceAfter(Number.NaN, 1)).toThrow(TypeError);
  });

  it('refuses counter hits with a non-finite or negative amount or a window that is not positive', () => {
    expect(() => checkCounterHit(1000, 0, 0)).not.toThrow();
    for (const amount of [Number.NaN, Number.POSITIVE_INFINITY, -1]) expect(() => checkCounterHit(1000, 0, amount)).toThrow(TypeError);
    expect(() => checkCounterHit(0, 0, 1)).toThrow(TypeError);
    expect(() => checkCounterHit(1000, Number.NaN, 1)).toThrow(TypeError);
  });
});

describe('ledger entries and usage aggregates', () => {
  it('writes a free request as amount 0, never -0, and a paid one as minus its cost', () => {
    expect(Object.is(usageEntry(1, { ...SETTLEMENT, cost: 0 }, 5).amount, 0)).toBe(true);
    expect(usageEntry(2, SETTLEMENT, 99)).toEqual({
      id: 2,
      accountId: 'acct_1',
      type: 'usage',
      amount: -1,
      balanceAfter: 99,
      keyId: 1,
      model: null,
      promptTokens: null,
      completionTokens: null,
      requestId: null,
      upstreamId: null,
      reference: null,
      note: null,
      createdAt: 10,
    });
  });

  it('opens a positive balance with a credit, a negative one with an adjustment, and 0 with nothing', () => {
    expect(openingEntry(1, account({ balance: 3, createdAt: 7 }))).toMatchObject({
      type: 'credit',
      amount: 3,
      balanceAfter: 3,
      reference: 'opening',
      createdAt: 7,
    });
    expect(openingEntry(1, account({ balance: -3 }))).toMatchObject({ type: 'adjustment', amount: -3, reference: 'opening' });
    expect(openingEntry(1, account({ balance: 0 }))).toBeNull();
  });

  it('counts a settlement in the UTC day of its time, its key and its model (unknown without usage)', () => {
    const at = Date.parse('2026-03-01T23:59:59.999Z');
    const withUsage = {
      ...SETTLEMENT,
      now: at,
      usage: { model: 'gpt-4o', promptTokens: 3, completionTokens: 4, requestId: 'r', upstreamId: null },
    };
    expect(usageCell(withUsage)).toEqual({ date: '2026-03-01', keyId: 1, model: 'gpt-4o' });
    expect(usageCell({ ...SETTLEMENT, now: at + 1 })).toEqual({ date: '2026-03-02', keyId: 1, model: 'unknown' });
    const row = addUsage(undefined, usageCell(withUsage), withUsage);
    expect(addUsage(row, usageCell(withUsage), { ...withUsage, cost: 0.2 })).toEqual({
      date: '2026-03-01',
      keyId: 1,
      model: 'gpt-4o',
      requests: 2,
      promptTokens: 6,
      completionTokens: 8,
      cost: 1.2,
    });
  });

  it('reads UTC dates strictly and checks ledger queries and usage ranges', () => {
    expect(isUtcDate('2024-02-29')).toBe(true);
    for (const bad of ['2023-02-29', '2026-13-01', '2026-1-01', '20260101', '', ' 2026-01-01', 20260101])
      expect(isUtcDate(bad)).toBe(false);
    expect(() => checkUsageRange({ from: '2026-01-01', to: '2025-01-01' })).not.toThrow();
    expect(() => checkUsageRange({ from: '2026-01-01', to: 'today' })).toThrow(TypeError);
    expect(() => checkLedgerQuery({ limit: 1000, before: 1, keyId: 1, type: 'usage' })).not.toThrow();
    for (const bad of [{ limit: 0 }, { limit: 1001 }, { limit: 2, before: 0 }, { limit: 2, keyId: -1 }, { limit: 2, type: 'gift' }]) {
      expect(() => checkLedgerQuery(bad as never), JSON.stringify(bad)).toThrow(TypeError);
    }
  });

  it('trims entries older than the retention, or none for Infinity', () => {
    expect(retentionCutoff(10 * 86_400_000, 4)).toBe(6 * 86_400_000);
    expect(retentionCutoff(0, Number.POSITIVE_INFINITY)).toBe(Number.NEGATIVE_INFINITY);
    expect([400, 0.5, Number.POSITIVE_INFINITY].map(isRetentionDays)).toEqual([true, true, true]);
    expect([0, -1, Number.NaN, '400'].map(isRetentionDays)).toEqual([false, false, false, false]);
  });
});

describe('rotation', () => {
  it('keeps the current hash as the previous one only while a grace period is ahead', () => {
    const record = key({ hash: 'h1' });
    applyRotation(record, { id: 1, hash: 'h2', previousKeyExpiresAt: 100, now: 50 });
    expect([record.hash, record.previousHash, record.previousKeyExpiresAt]).toEqual(['h2', 'h1', 100]);
    applyRotation(record, { id: 1, hash: 'h3', previousKeyExpiresAt: 50, now: 50 });
    expect([record.hash, record.previousHash, record.previousKeyExpiresAt]).toEqual(['h3', null, null]);
  });
});

describe('account inputs', () => {
  it('creditBalance and createAccount refuse amounts beyond ±1e12 USD with a TypeError, changing nothing', async () => {
    const store = new MemoryKeyStore();
    const created = await createAccount(store, { balance: 5 });
    await expect(creditBalance(store, created.id, 1e300)).rejects.toThrow(TypeError);
    await expect(creditBalance(store, created.id, -1e13)).rejects.toThrow(TypeError);
    expect((await store.getAccount(created.id))?.balance).toBe(5);
    await expect(createAccount(store, { balance: 1e13 })).rejects.toThrow(TypeError);
    await expect(createAccount(store, { balance: Number.NaN })).rejects.toThrow(TypeError);
    expect((await createAccount(store, { balance: MAX_USD })).balance).toBe(MAX_USD);
  });

  it("accepts an account id that starts with ':'", async () => {
    const store = new MemoryKeyStore();
    const created = await createAccount(store, { id: ':team-1', balance: 1 });
    expect((await creditBalance(store, created.id, 2))?.account.balance).toBe(3);
  });
});

describe('prepareKey', () => {
  it('counts the name in characters (code points), as the HTTP validation does: 100 emoji are fine, 101 are not', async () => {
    const hundred = '🔑'.repeat(100);
    expect(hundred.length).toBe(200);
    const prepared = await prepareKey({ accountId: 'acct_1', type: 'proxy', name: hundred }, { hasher, now: 0 });
    expect(prepared.record.name).toBe(hundred);
    await expect(prepareKey({ accountId: 'acct_1', type: 'proxy', name: '🔑'.repeat(101) }, { hasher })).rejects.toThrow(
      new TypeError('issueKey: name must be 1–100 characters'),
    );
    await expect(prepareKey({ accountId: 'acct_1', type: 'proxy', name: '' }, { hasher })).rejects.toThrow(TypeError);
    await expect(prepareKey({ accountId: 'acct_1', type: 'proxy', name: 'a'.repeat(101) }, { hasher })).rejects.toThrow(TypeError);
  });
});
