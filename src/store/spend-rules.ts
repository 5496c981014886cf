import { DEFAULT_LEDGER_RETENTION_DAYS } from '../defaults.js';
import { ConfigurationError } from '../errors/configuration-error.js';
import type {
  AccountRecord,
  BalanceChange,
  KeyRecord,
  KeyRotation,
  LedgerEntry,
  LedgerEntryType,
  LedgerQuery,
  ReservationResult,
  SpendReservation,
  SpendSettlement,
  UsageDetails,
  UsageRange,
  UsageRow,
} from './types.js';

/*
 * The rules of the store contract on plain records, written once for the stores that run them in
 * this process (MemoryKeyStore synchronously, KeyvKeyStore's locked backend under its lock): the
 * argument checks every store makes, reservation with holds, settlement, ledger entries, usage
 * aggregates, balance changes and rotation. A store that runs them elsewhere (a Lua script, SQL)
 * keeps the same rules, and the conformance suite checks that it does.
 */

/** Rounds USD to 1e-10 so repeated float sums do not drift into visible noise. */
export function roundUsd(value: number): number {
  return Math.round(value * 1e10) / 1e10;
}

/**
 * The largest magnitude (USD) a balance, balance change, reservation or cost may have. Far above any
 * real account, far below where float arithmetic and Redis Lua's rounding (`x * 1e10`) overflow.
 */
export const MAX_USD = 1e12;

/** The longest `reference` of a balance change. */
export const MAX_REFERENCE_LENGTH = 200;

/** The longest `note` of a balance change. */
export const MAX_NOTE_LENGTH = 1000;

/** The longest model name, request id or upstream id in usage details. */
export const MAX_USAGE_NAME_LENGTH = 200;

/** The largest page `listLedger` answers. */
export const MAX_LEDGER_PAGE = 1000;

/**
 * How many of an account's entries past retention one write to its ledger trims at most: enough to
 * keep up with any rate of writes (each write adds one entry), small enough that no write pays for
 * a backlog (`trimLedger` clears one at once).
 */
export const LEDGER_TRIM_PER_WRITE = 10;

/** The aggregate's model for a settlement without usage details. */
export const UNKNOWN_MODEL = 'unknown';

/** The reference of an account's opening entry. */
export const OPENING_REFERENCE = 'opening';

const DAY_MS = 86_400_000;

function checkUsd(value: unknown, what: string, allowNegative: boolean): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || Math.abs(value) > MAX_USD || (!allowNegative && value < 0)) {
    const range = allowNegative ? `between -${MAX_USD} and ${MAX_USD}` : `between 0 and ${MAX_USD}`;
    throw new TypeError(`${what} must be a finite number ${range} (USD)`);
  }
}

function checkPeriod(period: unknown, what: string): void {
  if (period !== null && typeof period !== 'string') throw new TypeError(`${what} must be a string or null`);
}

/** The largest epoch-ms time a `Date` can hold: beyond it there is no UTC day to count usage in. */
const MAX_TIME = 8.64e15;

function checkTime(value: unknown, what: string): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || Math.abs(value) > MAX_TIME) {
    throw new TypeError(`${what} must be a finite number of epoch ms within ±${MAX_TIME}`);
  }
}

function checkText(value: unknown, what: string, max: number): void {
  if (typeof value !== 'string' || value.length === 0 || value.length > max) {
    throw new TypeError(`${what} must be a string of 1–${max} characters`);
  }
}

function checkInteger(value: unknown, what: string, min: number): void {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
    throw new TypeError(`${what} must be an integer ≥ ${min}`);
  }
}

/**
 * Refuses a reservation a store must not apply: `amount` not a finite number in 0–{@link MAX_USD}
 * (NaN would pass every comparison and poison `reserved` for good), `now` not finite, or `expiresAt`
 * not a finite time after `now` (a hold the next reservation would release at once). Throws a
 * TypeError, which the middleware answers 503, so a bad amount fails closed.
 */
export function checkReservation(reservation: SpendReservation): void {
  checkUsd(reservation.amount, 'reserveSpend: amount', false);
  checkPeriod(reservation.period, 'reserveSpend: period');
  checkTime(reservation.now, 'reserveSpend: now');
  checkTime(reservation.expiresAt, 'reserveSpend: expiresAt');
  if (reservation.expiresAt <= reservation.now) throw new TypeError('reserveSpend: expiresAt must be after now');
}

/** Refuses usage details that break the rules of `UsageDetails` (TypeError). */
export function checkUsageDetails(usage: UsageDetails): void {
  if (typeof usage !== 'object' || usage === null) throw new TypeError('settleSpend: usage must be an object or undefined');
  checkText(usage.model, 'settleSpend: usage.model', MAX_USAGE_NAME_LENGTH);
  checkInteger(usage.promptTokens, 'settleSpend: usage.promptTokens', 0);
  checkInteger(usage.completionTokens, 'settleSpend: usage.completionTokens', 0);
  checkText(usage.requestId, 'settleSpend: usage.requestId', MAX_USAGE_NAME_LENGTH);
  if (usage.upstreamId !== null) checkText(usage.upstreamId, 'settleSpend: usage.upstreamId', MAX_USAGE_NAME_LENGTH);
}

/**
 * Refuses a settlement whose `cost` is not a finite number in 0–{@link MAX_USD}, whose `now` is not
 * finite, whose `holdId` is neither a string nor `null`, or whose `usage` breaks its rules (TypeError).
 */
export function checkSettlement(settlement: SpendSettlement): void {
  checkUsd(settlement.cost, 'settleSpend: cost', false);
  checkPeriod(settlement.period, 'settleSpend: period');
  checkTime(settlement.now, 'settleSpend: now');
  if (settlement.holdId !== null && typeof settlement.holdId !== 'string') {
    throw new TypeError('settleSpend: holdId must be a string or null');
  }
  if (settlement.usage !== undefined) checkUsageDetails(settlement.usage);
}

/** Refuses a new account whose balance is not a finite number within ±{@link MAX_USD}, or that holds a reserved amount (TypeError). */
export function checkNewAccount(account: AccountRecord): void {
  checkUsd(account.balance, 'createAccount: balance', true);
  if (account.reserved !== 0) throw new TypeError('createAccount: reserved must be 0 (a new account holds nothing)');
}

/**
 * Refuses a balance change that `changeBalance` must not apply (TypeError): another `type`, an
 * `amount` not finite or beyond ±{@link MAX_USD}, a credit ≤ 0, an adjustment of 0, a `reference`
 * that is not 1–200 characters, a `note` over 1000, a `now` that is not finite.
 */
export function checkBalanceChange(change: BalanceChange): void {
  if (change.type !== 'credit' && change.type !== 'adjustment') throw new TypeError("changeBalance: type must be 'credit' or 'adjustment'");
  checkUsd(change.amount, 'changeBalance: amount', true);
  if (change.type === 'credit' && change.amount <= 0) throw new TypeError('changeBalance: a credit must be more than 0');
  if (change.amount === 0) throw new TypeError('changeBalance: an adjustment must not be 0');
  checkText(change.reference, 'changeBalance: reference', MAX_REFERENCE_LENGTH);
  if (change.note !== null && (typeof change.note !== 'string' || change.note.length > MAX_NOTE_LENGTH)) {
    throw new TypeError(`changeBalance: note must be null or a string of at most ${MAX_NOTE_LENGTH} characters`);
  }
  checkTime(change.now, 'changeBalance: now');
}

/**
 * The balance after adding `amount` to `balance`, rounded (see {@link roundUsd}); a TypeError when it
 * would leave ±{@link MAX_USD} (or `balance` itself is not a finite number: a damaged record).
 */
export function balanceAfter(balance: number, amount: number): number {
  const result = roundUsd(balance + amount);
  if (!Number.isFinite(result) || Math.abs(result) > MAX_USD) {
    throw new TypeError(`changeBalance: the balance would leave the range -${MAX_USD}..${MAX_USD} USD`);
  }
  return result;
}

/** Refuses a rotation whose `hash` is not a non-empty string or whose times are not finite (TypeError). */
export function checkRotation(rotation: KeyRotation): void {
  if (typeof rotation.hash !== 'string' || rotation.hash.length === 0) throw new TypeError('rotateKey: hash must be a non-empty string');
  checkTime(rotation.now, 'rotateKey: now');
  if (rotation.previousKeyExpiresAt !== null) checkTime(rotation.previousKeyExpiresAt, 'rotateKey: previousKeyExpiresAt');
}

const LEDGER_ENTRY_TYPES: ReadonlySet<unknown> = new Set<LedgerEntryType>(['usage', 'credit', 'adjustment']);

/** Refuses a ledger query with a `limit` outside 1–1000, or a `before`, `keyId` or `type` that cannot match (TypeError). */
export function checkLedgerQuery(query: LedgerQuery): void {
  if (typeof query !== 'object' || query === null) throw new TypeError('listLedger: query must be an object');
  checkInteger(query.limit, 'listLedger: limit', 1);
  if (query.limit > MAX_LEDGER_PAGE) throw new TypeError(`listLedger: limit must be an integer 1–${MAX_LEDGER_PAGE}`);
  if (query.before !== undefined) checkInteger(query.before, 'listLedger: before', 1);
  if (query.keyId !== undefined) checkInteger(query.keyId, 'listLedger: keyId', 1);
  if (query.type !== undefined && !LEDGER_ENTRY_TYPES.has(query.type)) {
    throw new TypeError("listLedger: type must be 'usage', 'credit' or 'adjustment'");
  }
}

/** Whether `entry` matches the filters of `query` (its `keyId` and `type`, when given). */
export function matchesLedgerQuery(entry: LedgerEntry, query: LedgerQuery): boolean {
  return (query.keyId === undefined || entry.keyId === query.keyId) && (query.type === undefined || entry.type === query.type);
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;

/** The UTC day of an epoch-ms time, `YYYY-MM-DD`: the date of a usage aggregate. */
export function utcDay(time: number): string {
  return new Date(time).toISOString().slice(0, 10);
}

/** Whether `value` is a real UTC date written `YYYY-MM-DD` (`2026-02-30` is not). */
export function isUtcDate(value: unknown): value is string {
  if (typeof value !== 'string' || !DATE.test(value)) return false;
  const time = Date.parse(`${value}T00:00:00.000Z`);
  return Number.isFinite(time) && utcDay(time) === value;
}

/** Refuses a usage range whose `from` or `to` is not a `YYYY-MM-DD` date (TypeError). */
export function checkUsageRange(range: UsageRange): void {
  if (typeof range !== 'object' || range === null || !isUtcDate(range.from) || !isUtcDate(range.to)) {
    throw new TypeError('getUsage: from and to must be UTC dates written YYYY-MM-DD');
  }
}

/** Refuses a `releaseExpiredHolds` call whose `now` is not finite or whose `limit` is not a positive integer (TypeError). */
export function checkHoldSweep(now: number, limit: number): void {
  checkTime(now, 'releaseExpiredHolds: now');
  checkInteger(limit, 'releaseExpiredHolds: limit', 1);
}

/** Refuses a hold deadline that is not finite (TypeError). */
export function checkHoldDeadline(expiresAt: number): void {
  checkTime(expiresAt, 'extendHold: expiresAt');
}

/** Refuses a trimming time that is not finite (TypeError). */
export function checkTrimBefore(before: number): void {
  checkTime(before, 'trimLedger: before');
}

/** Refuses a counter hit with a non-finite or negative `amount`, a `windowMs` that is not positive, or a non-finite `now` (TypeError). */
export function checkCounterHit(windowMs: number, now: number, amount: number): void {
  if (typeof amount !== 'number' || !Number.isFinite(amount) || amount < 0)
    throw new TypeError('hitCounter: amount must be a finite number ≥ 0');
  if (typeof windowMs !== 'number' || !Number.isFinite(windowMs) || windowMs <= 0)
    throw new TypeError('hitCounter: windowMs must be a finite number > 0');
  if (typeof now !== 'number' || !Number.isFinite(now)) throw new TypeError('hitCounter: now must be a finite number');
}

/**
 * Whether limit period `stored` comes strictly before `period` under the same reset rule. Periods
 * of one rule have one length and sort as strings (`2026-11-21` < `2026-11-22`, `2026-W09` <
 * `2026-W10`); periods of different rules (or `null`, lifetime) are not comparable: `false`.
 */
export function isEarlierPeriod(stored: string | null, period: string | null): boolean {
  return stored !== null && period !== null && stored.length === period.length && stored < period;
}

/** The key's usage in `period`: 0 when the stored usage belongs to another period. */
export function usageInPeriod(key: Pick<KeyRecord, 'usage' | 'usagePeriod'>, period: string | null): number {
  return key.usagePeriod === period ? key.usage : 0;
}

/** A reservation's verdict before its hold exists: admitted, or refused with a reason. */
export type ReservationVerdict = { ok: true } | Exclude<ReservationResult, { ok: true }>;

/**
 * A spend hold: `amount` held on a key's `reserved` and its account's `reserved` until it is settled,
 * or released past `expiresAt` (its gateway died).
 */
export interface SpendHold {
  id: string;
  keyId: number;
  accountId: string;
  amount: number;
  expiresAt: number;
}

/**
 * The reservation rule of {@link KeyStore.reserveSpend}, on plain records, for stores that can hold
 * a lock (or a single thread) around it. The caller has released the expired holds already, and
 * makes the hold when this admits. Mutates `key` and `account` only when it answers `ok`; throws a
 * TypeError (changing nothing) for an invalid reservation (see {@link checkReservation}).
 */
export function applyReservation(key: KeyRecord, account: AccountRecord, reservation: SpendReservation): ReservationVerdict {
  checkReservation(reservation);
  // A later period already stored (another instance's clock ran ahead) keeps its usage and counts it.
  const keep = key.usagePeriod === reservation.period || isEarlierPeriod(reservation.period, key.usagePeriod);
  const usage = keep ? key.usage : 0;
  // At the limit already (usage ≥ limit), even a request that reserves nothing is refused.
  if (key.limit !== null && (usage + key.reserved >= key.limit || usage + key.reserved + reservation.amount > key.limit + 1e-12)) {
    return { ok: false, reason: 'spend_limit_reached' };
  }
  const available = account.balance - account.reserved;
  if (available <= 0 || available + 1e-12 < reservation.amount) return { ok: false, reason: 'insufficient_balance' };
  if (!keep) {
    key.usage = 0;
    key.usagePeriod = reservation.period;
  }
  key.reserved = roundUsd(key.reserved + reservation.amount);
  account.reserved = roundUsd(account.reserved + reservation.amount);
  return { ok: true };
}

/**
 * Takes a hold's amount off its key's and its account's `reserved` (either may be gone: a deleted
 * key). The caller deletes the hold in the same step, so it is released once.
 */
export function releaseHold(hold: SpendHold, key: KeyRecord | null, account: AccountRecord | null): void {
  if (key) key.reserved = Math.max(0, roundUsd(key.reserved - hold.amount));
  if (account) account.reserved = Math.max(0, roundUsd(account.reserved - hold.amount));
}

/**
 * The charge of {@link KeyStore.settleSpend} on plain records (either may be missing), after the
 * hold was released. `cost` goes to the key's `usage` only when the stored period is the
 * settlement's, or an earlier one (then the settlement's period starts at `cost`). When a later
 * period (or another reset rule's) is stored, a newer request already moved the key on: its usage
 * stays. The account's balance always pays.
 */
export function applySettlement(key: KeyRecord | null, account: AccountRecord | null, settlement: SpendSettlement): void {
  checkSettlement(settlement);
  if (key) {
    if (key.usagePeriod === settlement.period) {
      key.usage = roundUsd(key.usage + settlement.cost);
    } else if (isEarlierPeriod(key.usagePeriod, settlement.period)) {
      key.usage = roundUsd(settlement.cost);
      key.usagePeriod = settlement.period;
    }
    key.lastUsedAt = Math.max(key.lastUsedAt ?? 0, settlement.now);
  }
  if (account) account.balance = roundUsd(account.balance - settlement.cost);
}

/** Whether a settlement writes a ledger entry: it cost something, or its usage is worth a record. */
export function settlementWritesEntry(settlement: SpendSettlement): boolean {
  return settlement.cost > 0 || settlement.usage !== undefined;
}

/** The `usage` entry of a settlement, `balance` being the account's balance after it. */
export function usageEntry(id: number, settlement: SpendSettlement, balance: number): LedgerEntry {
  const usage = settlement.usage;
  return {
    id,
    accountId: settlement.accountId,
    type: 'usage',
    // 0 rather than -0 for a free request: the same number once written as JSON and read back.
    amount: settlement.cost === 0 ? 0 : -settlement.cost,
    balanceAfter: balance,
    keyId: settlement.keyId,
    model: usage?.model ?? null,
    promptTokens: usage?.promptTokens ?? null,
    completionTokens: usage?.completionTokens ?? null,
    requestId: usage?.requestId ?? null,
    upstreamId: usage?.upstreamId ?? null,
    reference: null,
    note: null,
    createdAt: settlement.now,
  };
}

/** The entry of a balance change, `balance` being the account's balance after it. */
export function balanceChangeEntry(id: number, change: BalanceChange, balance: number): LedgerEntry {
  return {
    id,
    accountId: change.accountId,
    type: change.type,
    amount: change.amount,
    balanceAfter: balance,
    keyId: null,
    model: null,
    promptTokens: null,
    completionTokens: null,
    requestId: null,
    upstreamId: null,
    reference: change.reference,
    note: change.note,
    createdAt: change.now,
  };
}

/**
 * The opening entry of an account created with a balance other than 0 (see
 * {@link KeyStore.createAccount}), or `null` for a balance of 0.
 */
export function openingEntry(id: number, account: AccountRecord): LedgerEntry | null {
  if (account.balance === 0) return null;
  const type = account.balance > 0 ? 'credit' : 'adjustment';
  const change: BalanceChange = {
    accountId: account.id,
    type,
    amount: account.balance,
    reference: OPENING_REFERENCE,
    note: null,
    now: account.createdAt,
  };
  return balanceChangeEntry(id, change, account.balance);
}

/** Where a settlement is counted among the usage aggregates: its UTC day, key and model. */
export interface UsageCell {
  date: string;
  keyId: number;
  model: string;
}

/** The aggregate a settlement adds to: the UTC day of its `now`, its key, its model (or `'unknown'`). */
export function usageCell(settlement: SpendSettlement): UsageCell {
  return { date: utcDay(settlement.now), keyId: settlement.keyId, model: settlement.usage?.model ?? UNKNOWN_MODEL };
}

/** The aggregate `row` (or a new one for `cell`) with one more settlement counted. */
export function addUsage(row: UsageRow | undefined, cell: UsageCell, settlement: SpendSettlement): UsageRow {
  const counted = row ?? { ...cell, requests: 0, promptTokens: 0, completionTokens: 0, cost: 0 };
  counted.requests += 1;
  counted.promptTokens += settlement.usage?.promptTokens ?? 0;
  counted.completionTokens += settlement.usage?.completionTokens ?? 0;
  counted.cost = roundUsd(counted.cost + settlement.cost);
  return counted;
}

/** Applies a rotation to the key record (see {@link KeyStore.rotateKey}): the hashes swap, all else stays. */
export function applyRotation(key: KeyRecord, rotation: KeyRotation): void {
  const grace = rotation.previousKeyExpiresAt !== null && rotation.previousKeyExpiresAt > rotation.now;
  key.previousHash = grace ? key.hash : null;
  key.previousKeyExpiresAt = grace ? rotation.previousKeyExpiresAt : null;
  key.hash = rotation.hash;
}

/**
 * The time before which a write at `now` may trim entries, for `ledgerRetentionDays` days of
 * retention (`Infinity`: never, `-Infinity`).
 */
export function retentionCutoff(now: number, retentionDays: number): number {
  return retentionDays === Number.POSITIVE_INFINITY ? Number.NEGATIVE_INFINITY : now - retentionDays * DAY_MS;
}

/** Whether `days` is a valid `ledgerRetentionDays`: a positive number of days, or `Infinity` to keep every entry. */
export function isRetentionDays(days: unknown): days is number {
  return typeof days === 'number' && days > 0 && !Number.isNaN(days);
}

/**
 * A store's `ledgerRetentionDays` option resolved: the default when `undefined`, else the value if
 * valid (see {@link isRetentionDays}); a `ConfigurationError` `ERR_MS_OPTION` naming `store` otherwise.
 */
export function resolveRetentionDays(days: unknown, store: string): number {
  const resolved = days ?? DEFAULT_LEDGER_RETENTION_DAYS;
  if (!isRetentionDays(resolved)) {
    throw new ConfigurationError(
      'ERR_MS_OPTION',
      `${store}: ledgerRetentionDays must be a positive number of days (Infinity keeps every entry)`,
    );
  }
  return resolved;
}

/**
 * The limit period containing `now` for a reset rule: `2026-11-22` (daily), `2026-W47` (ISO week,
 * Monday start, UTC), `2026-11` (monthly), or `null` (never resets).
 *
 * @example
 * ```ts
 * limitPeriod('weekly', Date.parse('2026-11-22T12:00:00Z')); // '2026-W47'
 * ```
 */
export function limitPeriod(reset: KeyRecord['limitReset'], now: number): string | null {
  if (reset === null) return null;
  const date = new Date(now);
  if (reset === 'daily') return date.toISOString().slice(0, 10);
  if (reset === 'monthly') return date.toISOString().slice(0, 7);
  // ISO 8601 week: the week with the year's first Thursday is week 1.
  const dayOfWeek = (date.getUTCDay() + 6) % 7;
  const thursday = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()) - dayOfWeek * DAY_MS + 3 * DAY_MS);
  const year = thursday.getUTCFullYear();
  const week = 1 + Math.floor((thursday.getTime() - Date.UTC(year, 0, 1)) / (7 * DAY_MS));
  return `${year}-W${String(week).padStart(2, '0')}`;
}
