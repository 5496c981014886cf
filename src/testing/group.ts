import assert from 'node:assert/strict';
import type { KeyStore, ReservationResult, SpendReservation } from '../store/types.js';

/** Registers one test of a group: the suite gives `body` a fresh store and disposes of it afterwards. */
export type StoreTest = (name: string, body: (store: KeyStore) => Promise<void>) => void;

/** What every group is told, from the suite's options. */
export interface GroupSettings {
  /** How many parallel operations a concurrency test runs. */
  concurrency: number;
}

/**
 * One topic of the conformance suite: registers its tests with `test`. A group may set up its data
 * with the `accounts` and `keys` operations (every group needs accounts and keys), never with
 * another topic's (listing, spend, counters…), so skipping that topic leaves the group runnable.
 * The ledger, holds and models groups reserve and settle, as their topics are what those operations
 * write; the spend group never reads the ledger.
 */
export type SuiteGroup = (test: StoreTest, settings: GroupSettings) => void;

/** One hour in milliseconds, for counter windows and clocks. */
export const HOUR = 3_600_000;

/** One day in milliseconds. */
export const DAY = 24 * HOUR;

/** The clock of tests that do not test time: 2023-11-14T22:13:20Z. */
export const T0 = 1_700_000_000_000;

/** Asserts a USD amount up to float noise. */
export function assertUsd(value: number | undefined, expected: number, message: string): void {
  const actual = value ?? Number.NaN;
  assert.ok(Math.abs(actual - expected) < 1e-9, `${message}: expected ${expected}, got ${actual}`);
}

/** The key and account a reservation or settlement names. */
export interface SpendIds {
  keyId: number;
  accountId: string;
}

/** A reservation of `amount` at `now` (default {@link T0}) whose hold lasts an hour. */
export function spendOf(ids: SpendIds, amount: number, period: string | null = null, now = T0): SpendReservation {
  return { ...ids, amount, period, now, expiresAt: now + HOUR };
}

/** The hold of an accepted reservation (an opaque non-empty string); fails the test for a refusal. */
export function holdOf(result: ReservationResult): string {
  assert.equal(result.ok, true, `the reservation was refused: ${JSON.stringify(result)}`);
  const { holdId } = result as { holdId: unknown };
  assert.equal(typeof holdId, 'string', 'holdId is a string');
  assert.ok((holdId as string).length > 0, 'holdId is not empty');
  return holdId as string;
}

/** A reservation's answer without its hold id, to compare answers whole. */
export function outcome(result: ReservationResult): { ok: true } | Exclude<ReservationResult, { ok: true }> {
  if (result.ok) {
    holdOf(result);
    return { ok: true };
  }
  return result;
}
