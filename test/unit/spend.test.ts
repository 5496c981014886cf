import { describe, expect, it } from 'vitest';
import { createAccount, creditBalance, prepareKey } from '../../src/keys/accounts.js';
import {
  MAX_USD,
  applyReservation,
  applySettlement,
  checkBalanceDelta,
  checkCounterHit,
  checkReservation,
  checkSettlement,
  isEarlierPeriod,
} from '../../src/store/spend-rules.js';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import { sampleKeyRecord } from '../../src/testing/index.js';
import type { AccountRecord, KeyRecord } from '../../src/store/types.js';
import { fastHasher } from '../helpers.js';

const hasher = fastHasher();
const BAD_AMOUNTS = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0.01, MAX_USD * 10];

function key(overrides: Partial<KeyRecord> = {}): KeyRecord {
  return { ...sampleKeyRecord('acct_1', { name: 'k', hash: 'x', createdAt: 0 }), id: 1, ...overrides };
}

function account(overrides: Partial<AccountRecord> = {}): AccountRecord {
  return { id: 'acct_1', balance: 100, reserved: 0, isFreeTier: false, createdAt: 0, ...overrides };
}

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
    const settlement = { keyId: 1, accountId: 'acct_1', reserved: 2, cost: 1, now: 10 };
    const same = key({ usage: 3, usagePeriod: '2026-11-22', reserved: 2 });
    applySettlement(same, null, { ...settlement, period: '2026-11-22' });
    expect([same.usage, same.usagePeriod, same.reserved]).toEqual([4, '2026-11-22', 0]);

    const older = key({ usage: 3, usagePeriod: '2026-11-21', reserved: 2 });
    applySettlement(older, null, { ...settlement, period: '2026-11-22' });
    expect([older.usage, older.usagePeriod, older.reserved]).toEqual([1, '2026-11-22', 0]);

    const newer = key({ usage: 8, usagePeriod: '2026-11-23', reserved: 2 });
    const owner = account({ reserved: 2 });
    applySettlement(newer, owner, { ...settlement, period: '2026-11-22' });
    expect([newer.usage, newer.usagePeriod, newer.reserved, newer.lastUsedAt]).toEqual([8, '2026-11-23', 0, 10]);
    expect([owner.balance, owner.reserved]).toEqual([99, 0]);
  });

  it('throws a TypeError for a non-finite, negative or huge cost or reservation and changes nothing', () => {
    for (const value of BAD_AMOUNTS) {
      const record = key({ usage: 1, reserved: 1 });
      const owner = account({ reserved: 1 });
      const before = [structuredClone(record), structuredClone(owner)];
      const base = { keyId: 1, accountId: 'acct_1', reserved: 1, cost: 1, period: null, now: 1 };
      expect(() => applySettlement(record, owner, { ...base, cost: value })).toThrow(TypeError);
      expect(() => applySettlement(record, owner, { ...base, reserved: value })).toThrow(TypeError);
      expect([record, owner]).toEqual(before);
    }
    expect(() => checkSettlement({ keyId: 1, accountId: 'a', reserved: 0, cost: 0, period: null, now: Number.NaN })).toThrow(TypeError);
  });
});

describe('applyReservation', () => {
  it('throws a TypeError for NaN instead of admitting it (NaN passes every comparison) and changes nothing', () => {
    for (const value of BAD_AMOUNTS) {
      const record = key({ limit: 10 });
      const owner = account();
      expect(() => applyReservation(record, owner, { keyId: 1, accountId: 'acct_1', amount: value, period: null })).toThrow(TypeError);
      expect([record.reserved, owner.reserved]).toEqual([0, 0]);
    }
    expect(() => checkReservation({ keyId: 1, accountId: 'a', amount: 0, period: null })).not.toThrow();
    expect(() => checkReservation({ keyId: 1, accountId: 'a', amount: MAX_USD, period: null })).not.toThrow();
  });
});

describe('balance deltas and counter hits', () => {
  it('accepts finite deltas of either sign up to MAX_USD and refuses the rest', () => {
    expect(() => checkBalanceDelta(-5)).not.toThrow();
    expect(() => checkBalanceDelta(MAX_USD)).not.toThrow();
    for (const value of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e300, -1e300]) {
      expect(() => checkBalanceDelta(value)).toThrow(TypeError);
    }
  });

  it('refuses counter hits with a non-finite or negative amount or a window that is not positive', () => {
    expect(() => checkCounterHit(1000, 0, 0)).not.toThrow();
    for (const amount of [Number.NaN, Number.POSITIVE_INFINITY, -1]) expect(() => checkCounterHit(1000, 0, amount)).toThrow(TypeError);
    expect(() => checkCounterHit(0, 0, 1)).toThrow(TypeError);
    expect(() => checkCounterHit(1000, Number.NaN, 1)).toThrow(TypeError);
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
    expect((await creditBalance(store, created.id, 2))?.balance).toBe(3);
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
