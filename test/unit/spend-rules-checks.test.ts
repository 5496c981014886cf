import { describe, expect, it } from 'vitest';
import { ConfigurationError } from '../../src/errors/configuration-error.js';
import {
  MAX_USD,
  applyReservation,
  applyRotation,
  applySettlement,
  isUtcDate,
  releaseHold,
  usageInPeriod,
  balanceAfter,
  checkBalanceChange,
  checkCounterHit,
  checkHoldDeadline,
  checkHoldSweep,
  checkLedgerQuery,
  checkNewAccount,
  checkReservation,
  checkRotation,
  checkSettlement,
  checkTrimBefore,
  checkUsageRange,
  limitPeriod,
  resolveRetentionDays,
} from '../../src/store/spend-rules.js';
import { sampleKeyRecord } from '../../src/testing/index.js';
import type { AccountRecord, KeyRecord, BalanceChange, SpendReservation, SpendSettlement, UsageDetails } from '../../src/store/types.js';

/*
 * The argument checks every store makes answer a TypeError naming the operation, the argument and
 * the rule it broke: the message a store author (or an operator reading a 503's log line) gets.
 * Each case below breaks one rule of otherwise valid arguments and expects that rule's own message,
 * so a check that stopped firing (and let a later check answer instead) fails here too.
 */

/** What `run` threw, as `{ name, message }`, or `'no error'`. */
function thrown(run: () => unknown): { name: string; message: string } | 'no error' {
  try {
    run();
  } catch (error) {
    return { name: (error as Error).name, message: (error as Error).message };
  }
  return 'no error';
}

function typeError(message: string) {
  return { name: 'TypeError', message };
}

const RESERVATION: SpendReservation = { keyId: 1, accountId: 'acct_1', amount: 1, period: null, now: 0, expiresAt: 60_000 };
const USAGE: UsageDetails = { model: 'm', promptTokens: 1, completionTokens: 2, requestId: 'req_1', upstreamId: null };
const SETTLEMENT: SpendSettlement = { keyId: 1, accountId: 'acct_1', holdId: null, cost: 1, period: null, now: 10, usage: USAGE };
const CHANGE: BalanceChange = { accountId: 'acct_1', type: 'credit', amount: 5, reference: 'pay_1', note: null, now: 0 };
const ACCOUNT: AccountRecord = { id: 'acct_1', balance: 0, reserved: 0, isFreeTier: false, createdAt: 0 };

const AMOUNT = `must be a finite number between 0 and ${MAX_USD} (USD)`;
const SIGNED = `must be a finite number between -${MAX_USD} and ${MAX_USD} (USD)`;
const TIME = 'must be a finite number of epoch ms within ±8640000000000000';

describe('the argument checks of the store contract', () => {
  it('reserveSpend: names the rule each bad reservation breaks', () => {
    const cases: [Partial<Record<keyof SpendReservation, unknown>>, string][] = [
      [{ amount: '1' }, `reserveSpend: amount ${AMOUNT}`],
      [{ amount: Number.NaN }, `reserveSpend: amount ${AMOUNT}`],
      [{ amount: Number.POSITIVE_INFINITY }, `reserveSpend: amount ${AMOUNT}`],
      [{ amount: MAX_USD + 1 }, `reserveSpend: amount ${AMOUNT}`],
      [{ amount: -0.01 }, `reserveSpend: amount ${AMOUNT}`],
      [{ period: 7 }, 'reserveSpend: period must be a string or null'],
      [{ period: undefined }, 'reserveSpend: period must be a string or null'],
      [{ now: '0' }, `reserveSpend: now ${TIME}`],
      [{ now: Number.NEGATIVE_INFINITY }, `reserveSpend: now ${TIME}`],
      [{ now: -8.64e15 - 1, expiresAt: 1 }, `reserveSpend: now ${TIME}`],
      [{ expiresAt: 8.64e15 + 1 }, `reserveSpend: expiresAt ${TIME}`],
      [{ expiresAt: 0 }, 'reserveSpend: expiresAt must be after now'],
    ];
    for (const [change, message] of cases) {
      expect(
        thrown(() => checkReservation({ ...RESERVATION, ...change } as SpendReservation)),
        JSON.stringify(change),
      ).toEqual(typeError(message));
    }
    for (const valid of [
      { amount: 0 },
      { amount: MAX_USD },
      { period: '2026-11-22' },
      { now: -8.64e15, expiresAt: 8.64e15 },
      { expiresAt: 1 },
    ]) {
      expect(
        thrown(() => checkReservation({ ...RESERVATION, ...valid })),
        JSON.stringify(valid),
      ).toBe('no error');
    }
  });

  it('settleSpend: names the rule each bad settlement or usage breaks', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ cost: -1 }, `settleSpend: cost ${AMOUNT}`],
      [{ period: 1 }, 'settleSpend: period must be a string or null'],
      [{ now: Number.NaN }, `settleSpend: now ${TIME}`],
      [{ holdId: 5 }, 'settleSpend: holdId must be a string or null'],
      [{ usage: null }, 'settleSpend: usage must be an object or undefined'],
      [{ usage: 'usage' }, 'settleSpend: usage must be an object or undefined'],
      [{ usage: { ...USAGE, model: 5 } }, 'settleSpend: usage.model must be a string of 1–200 characters'],
      [{ usage: { ...USAGE, model: '' } }, 'settleSpend: usage.model must be a string of 1–200 characters'],
      [{ usage: { ...USAGE, model: 'm'.repeat(201) } }, 'settleSpend: usage.model must be a string of 1–200 characters'],
      [{ usage: { ...USAGE, promptTokens: '1' } }, 'settleSpend: usage.promptTokens must be an integer ≥ 0'],
      [{ usage: { ...USAGE, promptTokens: 1.5 } }, 'settleSpend: usage.promptTokens must be an integer ≥ 0'],
      [{ usage: { ...USAGE, promptTokens: -1 } }, 'settleSpend: usage.promptTokens must be an integer ≥ 0'],
      [{ usage: { ...USAGE, completionTokens: 2 ** 53 } }, 'settleSpend: usage.completionTokens must be an integer ≥ 0'],
      [{ usage: { ...USAGE, requestId: '' } }, 'settleSpend: usage.requestId must be a string of 1–200 characters'],
      [{ usage: { ...USAGE, upstreamId: '' } }, 'settleSpend: usage.upstreamId must be a string of 1–200 characters'],
      [{ usage: { ...USAGE, upstreamId: undefined } }, 'settleSpend: usage.upstreamId must be a string of 1–200 characters'],
    ];
    for (const [change, message] of cases) {
      expect(
        thrown(() => checkSettlement({ ...SETTLEMENT, ...change } as SpendSettlement)),
        JSON.stringify(change),
      ).toEqual(typeError(message));
    }
    for (const valid of [
      { cost: 0 },
      { cost: MAX_USD },
      { holdId: 'h1' },
      { usage: undefined },
      { usage: { ...USAGE, model: 'm'.repeat(200), promptTokens: 0, completionTokens: 0, upstreamId: 'u'.repeat(200) } },
    ]) {
      expect(
        thrown(() => checkSettlement({ ...SETTLEMENT, ...valid })),
        JSON.stringify(valid),
      ).toBe('no error');
    }
  });

  it('changeBalance: names the rule each bad change breaks', () => {
    const cases: [Record<string, unknown>, string][] = [
      [{ type: 'usage' }, "changeBalance: type must be 'credit' or 'adjustment'"],
      [{ type: 'adjustment', amount: -MAX_USD - 1 }, `changeBalance: amount ${SIGNED}`],
      [{ amount: 0 }, 'changeBalance: a credit must be more than 0'],
      [{ amount: -1 }, 'changeBalance: a credit must be more than 0'],
      [{ type: 'adjustment', amount: 0 }, 'changeBalance: an adjustment must not be 0'],
      [{ reference: '' }, 'changeBalance: reference must be a string of 1–200 characters'],
      [{ reference: 'r'.repeat(201) }, 'changeBalance: reference must be a string of 1–200 characters'],
      [{ note: 1 }, 'changeBalance: note must be null or a string of at most 1000 characters'],
      [{ note: 'n'.repeat(1001) }, 'changeBalance: note must be null or a string of at most 1000 characters'],
      [{ now: Number.NaN }, `changeBalance: now ${TIME}`],
    ];
    for (const [change, message] of cases) {
      expect(
        thrown(() => checkBalanceChange({ ...CHANGE, ...change } as BalanceChange)),
        JSON.stringify(change),
      ).toEqual(typeError(message));
    }
    for (const valid of [
      { type: 'adjustment' as const, amount: -MAX_USD },
      { amount: MAX_USD },
      { reference: 'r'.repeat(200), note: 'n'.repeat(1000) },
      { note: '' },
    ]) {
      expect(
        thrown(() => checkBalanceChange({ ...CHANGE, ...valid })),
        JSON.stringify(valid),
      ).toBe('no error');
    }
    expect(thrown(() => balanceAfter(MAX_USD, 0.5))).toEqual(
      typeError(`changeBalance: the balance would leave the range -${MAX_USD}..${MAX_USD} USD`),
    );
    expect(thrown(() => balanceAfter(Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY))).toEqual(
      typeError(`changeBalance: the balance would leave the range -${MAX_USD}..${MAX_USD} USD`),
    );
  });

  it('createAccount, rotateKey, listLedger and getUsage: name the rule each bad argument breaks', () => {
    expect(thrown(() => checkNewAccount({ ...ACCOUNT, balance: -MAX_USD }))).toBe('no error');
    expect(thrown(() => checkNewAccount({ ...ACCOUNT, balance: MAX_USD * 2 }))).toEqual(typeError(`createAccount: balance ${SIGNED}`));
    expect(thrown(() => checkNewAccount({ ...ACCOUNT, reserved: 1 }))).toEqual(
      typeError('createAccount: reserved must be 0 (a new account holds nothing)'),
    );

    const rotation = { id: 1, hash: 'h2', previousKeyExpiresAt: null, now: 0 };
    expect(thrown(() => checkRotation(rotation))).toBe('no error');
    expect(thrown(() => checkRotation({ ...rotation, previousKeyExpiresAt: 1 }))).toBe('no error');
    expect(thrown(() => checkRotation({ ...rotation, hash: '' }))).toEqual(typeError('rotateKey: hash must be a non-empty string'));
    expect(thrown(() => checkRotation({ ...rotation, hash: 5 as unknown as string }))).toEqual(
      typeError('rotateKey: hash must be a non-empty string'),
    );
    expect(thrown(() => checkRotation({ ...rotation, now: Number.NaN }))).toEqual(typeError(`rotateKey: now ${TIME}`));
    expect(thrown(() => checkRotation({ ...rotation, previousKeyExpiresAt: Number.NaN }))).toEqual(
      typeError(`rotateKey: previousKeyExpiresAt ${TIME}`),
    );

    const query = { limit: 10 };
    for (const [bad, message] of [
      [null, 'listLedger: query must be an object'],
      ['10', 'listLedger: query must be an object'],
      [{ limit: 0 }, 'listLedger: limit must be an integer ≥ 1'],
      [{ limit: 1001 }, 'listLedger: limit must be an integer 1–1000'],
      [{ ...query, before: 0 }, 'listLedger: before must be an integer ≥ 1'],
      [{ ...query, keyId: 0 }, 'listLedger: keyId must be an integer ≥ 1'],
      [{ ...query, type: 'gift' }, "listLedger: type must be 'usage', 'credit' or 'adjustment'"],
    ] as const) {
      expect(
        thrown(() => checkLedgerQuery(bad as never)),
        JSON.stringify(bad),
      ).toEqual(typeError(message));
    }
    for (const valid of [
      { limit: 1 },
      { limit: 1000, before: 1, keyId: 1, type: 'credit' as const },
      { limit: 1, type: 'adjustment' as const },
    ]) {
      expect(
        thrown(() => checkLedgerQuery(valid)),
        JSON.stringify(valid),
      ).toBe('no error');
    }

    const range = 'getUsage: from and to must be UTC dates written YYYY-MM-DD';
    const dates = { from: '2026-01-01', to: '2026-01-31' };
    expect(thrown(() => checkUsageRange(dates))).toBe('no error');
    for (const bad of [
      null,
      'range',
      Object.assign(() => {}, dates),
      { from: '2026-01-01' },
      { from: 'x', to: '2026-01-01' },
      { from: '2026-01-01', to: '2026-02-30' },
      // Date.parse reads an extended year and a month alone, and they print back the same: only the pattern refuses them.
      { from: '2026-01-01', to: '+010000-01' },
    ]) {
      expect(
        thrown(() => checkUsageRange(bad as never)),
        JSON.stringify(bad),
      ).toEqual(typeError(range));
    }
  });

  it('releaseExpiredHolds, extendHold, trimLedger and hitCounter: name the rule each bad argument breaks', () => {
    expect(thrown(() => checkHoldSweep(0, 1))).toBe('no error');
    expect(thrown(() => checkHoldSweep(Number.NaN, 1))).toEqual(typeError(`releaseExpiredHolds: now ${TIME}`));
    expect(thrown(() => checkHoldSweep(0, 0))).toEqual(typeError('releaseExpiredHolds: limit must be an integer ≥ 1'));
    expect(thrown(() => checkHoldDeadline(1))).toBe('no error');
    expect(thrown(() => checkHoldDeadline(Number.NaN))).toEqual(typeError(`extendHold: expiresAt ${TIME}`));
    expect(thrown(() => checkTrimBefore(1))).toBe('no error');
    expect(thrown(() => checkTrimBefore(Number.NaN))).toEqual(typeError(`trimLedger: before ${TIME}`));

    expect(thrown(() => checkCounterHit(1, -8.64e15, 0))).toBe('no error');
    const amount = 'hitCounter: amount must be a finite number ≥ 0';
    const windowMs = 'hitCounter: windowMs must be a finite number > 0';
    const now = 'hitCounter: now must be a finite number';
    for (const [args, message] of [
      [[1000, 0, '1'], amount],
      [[1000, 0, Number.NaN], amount],
      [[1000, 0, -1], amount],
      [['1000', 0, 1], windowMs],
      [[Number.POSITIVE_INFINITY, 0, 1], windowMs],
      [[0, 0, 1], windowMs],
      [[1000, '0', 1], now],
      [[1000, Number.POSITIVE_INFINITY, 1], now],
    ] as const) {
      expect(
        thrown(() => checkCounterHit(...(args as unknown as [number, number, number]))),
        JSON.stringify(args),
      ).toEqual(typeError(message));
    }
  });

  it('resolves ledgerRetentionDays: the default for undefined, the value if valid, ERR_MS_OPTION naming the store otherwise', () => {
    expect(resolveRetentionDays(undefined, 'S')).toBe(400);
    expect(resolveRetentionDays(0.5, 'S')).toBe(0.5);
    expect(resolveRetentionDays(Number.POSITIVE_INFINITY, 'S')).toBe(Number.POSITIVE_INFINITY);
    for (const bad of [0, -1, '30', Number.NaN]) {
      let error: unknown;
      try {
        resolveRetentionDays(bad, 'KeyvKeyStore');
      } catch (caught) {
        error = caught;
      }
      expect(error, String(bad)).toBeInstanceOf(ConfigurationError);
      expect({ code: (error as ConfigurationError).code, message: (error as Error).message }).toEqual({
        code: 'ERR_MS_OPTION',
        message: 'KeyvKeyStore: ledgerRetentionDays must be a positive number of days (Infinity keeps every entry)',
      });
    }
  });

  it('names the limit period of every reset rule, ISO weeks across a year end included', () => {
    const at = (iso: string) => Date.parse(iso);
    expect(limitPeriod(null, at('2026-11-22T12:00:00Z'))).toBeNull();
    expect(limitPeriod('daily', at('2026-11-22T23:59:59.999Z'))).toBe('2026-11-22');
    expect(limitPeriod('monthly', at('2026-11-30T23:59:59.999Z'))).toBe('2026-11');
    expect(
      [
        '2026-11-22T12:00:00Z',
        '2026-11-23T00:00:00Z',
        '2027-01-01T00:00:00Z',
        '2026-12-28T00:00:00Z',
        '2027-01-04T00:00:00Z',
        '2026-01-01T00:00:00Z',
      ].map((iso) => limitPeriod('weekly', at(iso))),
    ).toEqual(['2026-W47', '2026-W48', '2026-W53', '2026-W53', '2027-W01', '2026-W01']);
  });
});

describe('the spend rules at their edges', () => {
  const record = (overrides: Partial<KeyRecord>): KeyRecord => ({
    ...sampleKeyRecord('acct_1', { name: 'k', hash: 'h1', createdAt: 0 }),
    id: 1,
    ...overrides,
  });
  const owner = (overrides: Partial<AccountRecord> = {}): AccountRecord => ({ ...ACCOUNT, balance: 100, ...overrides });

  it("reads a key's usage in the current period only", () => {
    const key = record({ usage: 3, usagePeriod: '2026-11-22' });
    expect([usageInPeriod(key, '2026-11-22'), usageInPeriod(key, '2026-11-23'), usageInPeriod(key, null)]).toEqual([3, 0, 0]);
    expect(usageInPeriod(record({ usage: 2, usagePeriod: null }), null)).toBe(2);
  });

  it('refuses even a free request once usage and holds reach the limit, and admits one reaching it to the 1e-12 tolerance', () => {
    const full = record({ limit: 10, usage: 6, reserved: 4 });
    expect(applyReservation(full, owner(), { ...RESERVATION, amount: 0 })).toEqual({ ok: false, reason: 'spend_limit_reached' });
    expect([full.usage, full.reserved]).toEqual([6, 4]);

    const edge = record({ limit: 1 });
    const account = owner({ balance: 1 });
    expect(applyReservation(edge, account, { ...RESERVATION, amount: 1 + 1e-12 })).toEqual({ ok: true });
    expect([edge.reserved, account.reserved]).toEqual([1, 1]);
  });

  it('starts the new period at 0 when the stored one is earlier, and holds the amount', () => {
    const key = record({ limit: 10, usage: 9, usagePeriod: '2026-11-21', reserved: 0 });
    const account = owner();
    expect(applyReservation(key, account, { ...RESERVATION, period: '2026-11-22', amount: 2 })).toEqual({ ok: true });
    expect({ usage: key.usage, usagePeriod: key.usagePeriod, reserved: key.reserved, accountReserved: account.reserved }).toEqual({
      usage: 0,
      usagePeriod: '2026-11-22',
      reserved: 2,
      accountReserved: 2,
    });
  });

  it('releases a hold from its key when the account is gone', () => {
    const key = record({ reserved: 5 });
    releaseHold({ id: 'h', keyId: 1, accountId: 'acct_1', amount: 2, expiresAt: 0 }, key, null);
    expect(key.reserved).toBe(3);
  });

  it('keeps the later lastUsedAt when a settlement comes from a clock behind it', () => {
    const key = record({ lastUsedAt: 20 });
    applySettlement(key, null, { ...SETTLEMENT, now: 10 });
    expect(key.lastUsedAt).toBe(20);
  });

  it('keeps no previous hash for a rotation without a grace period, at any time (before 1970 too)', () => {
    const key = record({ hash: 'h1' });
    applyRotation(key, { id: 1, hash: 'h2', previousKeyExpiresAt: null, now: -1000 });
    expect([key.hash, key.previousHash, key.previousKeyExpiresAt]).toEqual(['h2', null, null]);
  });

  it('accepts only YYYY-MM-DD written dates, not the other forms Date.parse reads', () => {
    expect(['2026-01-01', '+010000-01', '-000001-01', '2026-01', '2026'].map(isUtcDate)).toEqual([true, false, false, false, false]);
  });
});
