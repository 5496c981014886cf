import type { AccountRecord, KeyRecord, ReservationResult, SpendReservation, SpendSettlement } from './types.js';

/** Rounds USD to 1e-10 so repeated float sums do not drift into visible noise. */
export function roundUsd(value: number): number {
  return Math.round(value * 1e10) / 1e10;
}

/**
 * The largest magnitude (USD) a balance, balance change, reservation or cost may have. Far above any
 * real account, far below where float arithmetic and Redis Lua's rounding (`x * 1e10`) overflow.
 */
export const MAX_USD = 1e12;

function checkUsd(value: unknown, what: string, allowNegative: boolean): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || Math.abs(value) > MAX_USD || (!allowNegative && value < 0)) {
    const range = allowNegative ? `between -${MAX_USD} and ${MAX_USD}` : `between 0 and ${MAX_USD}`;
    throw new TypeError(`${what} must be a finite number ${range} (USD)`);
  }
}

function checkPeriod(period: unknown, what: string): void {
  if (period !== null && typeof period !== 'string') throw new TypeError(`${what} must be a string or null`);
}

/**
 * Refuses a reservation a store must not apply: `amount` not a finite number in 0–{@link MAX_USD}
 * (NaN would pass every comparison and poison `reserved` for good). Throws a TypeError, which the
 * middleware answers 503, so a bad amount fails closed.
 */
export function checkReservation(reservation: SpendReservation): void {
  checkUsd(reservation.amount, 'reserveSpend: amount', false);
  checkPeriod(reservation.period, 'reserveSpend: period');
}

/** Refuses a settlement whose `reserved` or `cost` is not a finite number in 0–{@link MAX_USD}, or whose `now` is not finite (TypeError). */
export function checkSettlement(settlement: SpendSettlement): void {
  checkUsd(settlement.reserved, 'settleSpend: reserved', false);
  checkUsd(settlement.cost, 'settleSpend: cost', false);
  checkPeriod(settlement.period, 'settleSpend: period');
  if (typeof settlement.now !== 'number' || !Number.isFinite(settlement.now))
    throw new TypeError('settleSpend: now must be a finite number');
}

/** Refuses a balance change that is not finite or larger than {@link MAX_USD} either way (TypeError). */
export function checkBalanceDelta(delta: number): void {
  checkUsd(delta, 'adjustBalance: delta', true);
}

/** Refuses a balance a store must not write: not finite, or beyond ±{@link MAX_USD} (RangeError). */
export function checkBalanceResult(balance: number): void {
  if (!Number.isFinite(balance) || Math.abs(balance) > MAX_USD) {
    throw new RangeError(`adjustBalance: the balance would leave the range -${MAX_USD}..${MAX_USD} USD`);
  }
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

/**
 * The reservation rule of {@link KeyStore.reserveSpend}, on plain records, for stores that can hold
 * a lock (or a single thread) around it. Mutates `key` and `account` only when it answers `ok`;
 * throws a TypeError (changing nothing) for an invalid reservation (see {@link checkReservation}).
 */
export function applyReservation(key: KeyRecord, account: AccountRecord, reservation: SpendReservation): ReservationResult {
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
 * The settlement rule of {@link KeyStore.settleSpend} on plain records (either may be missing).
 * `cost` goes to the key's `usage` only when the stored period is the settlement's, or an earlier one
 * (then the settlement's period starts at `cost`). When a later period (or another reset rule's)
 * is stored, a newer request already moved the key on: its usage stays, only `reserved` is released.
 */
export function applySettlement(key: KeyRecord | null, account: AccountRecord | null, settlement: SpendSettlement): void {
  checkSettlement(settlement);
  if (key) {
    key.reserved = Math.max(0, roundUsd(key.reserved - settlement.reserved));
    if (key.usagePeriod === settlement.period) {
      key.usage = roundUsd(key.usage + settlement.cost);
    } else if (isEarlierPeriod(key.usagePeriod, settlement.period)) {
      key.usage = roundUsd(settlement.cost);
      key.usagePeriod = settlement.period;
    }
    key.lastUsedAt = Math.max(key.lastUsedAt ?? 0, settlement.now);
  }
  if (account) {
    account.reserved = Math.max(0, roundUsd(account.reserved - settlement.reserved));
    account.balance = roundUsd(account.balance - settlement.cost);
  }
}

const DAY = 86_400_000;

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
  const thursday = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()) - dayOfWeek * DAY + 3 * DAY);
  const year = thursday.getUTCFullYear();
  const week = 1 + Math.floor((thursday.getTime() - Date.UTC(year, 0, 1)) / (7 * DAY));
  return `${year}-W${String(week).padStart(2, '0')}`;
}
