import type { AccountRecord, KeyRecord, ReservationResult, SpendReservation, SpendSettlement } from './types.js';

/** Rounds USD to 1e-10 so repeated float sums do not drift into visible noise. */
export function roundUsd(value: number): number {
  return Math.round(value * 1e10) / 1e10;
}

/** The key's usage in `period`: 0 when the stored usage belongs to another period. */
export function usageInPeriod(key: Pick<KeyRecord, 'usage' | 'usagePeriod'>, period: string | null): number {
  return key.usagePeriod === period ? key.usage : 0;
}

/**
 * The reservation rule of {@link KeyStore.reserveSpend}, on plain records, for stores that can hold
 * a lock (or a single thread) around it. Mutates `key` and `account` only when it answers `ok`.
 */
export function applyReservation(key: KeyRecord, account: AccountRecord, reservation: SpendReservation): ReservationResult {
  const usage = usageInPeriod(key, reservation.period);
  if (key.limit !== null && usage + key.reserved + reservation.amount > key.limit + 1e-12) {
    return { ok: false, reason: 'spend_limit_reached' };
  }
  const available = account.balance - account.reserved;
  if (available <= 0 || available + 1e-12 < reservation.amount) return { ok: false, reason: 'insufficient_balance' };
  if (key.usagePeriod !== reservation.period) {
    key.usage = 0;
    key.usagePeriod = reservation.period;
  }
  key.reserved = roundUsd(key.reserved + reservation.amount);
  account.reserved = roundUsd(account.reserved + reservation.amount);
  return { ok: true };
}

/** The settlement rule of {@link KeyStore.settleSpend} on plain records (either may be missing). */
export function applySettlement(key: KeyRecord | null, account: AccountRecord | null, settlement: SpendSettlement): void {
  if (key) {
    key.reserved = Math.max(0, roundUsd(key.reserved - settlement.reserved));
    key.usage = roundUsd(usageInPeriod(key, settlement.period) + settlement.cost);
    key.usagePeriod = settlement.period;
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
