import assert from 'node:assert/strict';
import type { KeyStore } from '../store/types.js';

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
 */
export type SuiteGroup = (test: StoreTest, settings: GroupSettings) => void;

/** One hour in milliseconds, for counter windows and clocks. */
export const HOUR = 3_600_000;

/** Asserts a USD amount up to float noise. */
export function assertUsd(value: number | undefined, expected: number, message: string): void {
  const actual = value ?? Number.NaN;
  assert.ok(Math.abs(actual - expected) < 1e-9, `${message}: expected ${expected}, got ${actual}`);
}
