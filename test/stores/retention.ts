import { expect } from 'vitest';
import type { KeyStore } from '../../src/store/types.js';
import { sampleAccount } from '../../src/testing/index.js';

const DAY = 86_400_000;

/**
 * Checks the lazy trimming of a store made with `ledgerRetentionDays: 1`: each write to an account's
 * ledger trims at most 10 of its entries older than a day, the oldest first, and never another
 * account's; the balance, the references and what is kept stay right.
 */
export async function checkLazyTrimming(store: KeyStore): Promise<void> {
  const owner = await store.createAccount(sampleAccount({ balance: 1, createdAt: 0 }));
  const other = await store.createAccount(sampleAccount({ balance: 1, createdAt: 0 }));
  for (let i = 0; i < 24; i++) {
    await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: `old_${i}`, note: null, now: i });
  }
  const count = async (accountId: string) => (await store.listLedger(accountId, { limit: 1000 })).entries.length;
  expect(await count(owner.id)).toBe(25);
  // Two days later: each write trims at most 10 old entries, oldest first.
  const later = 2 * DAY;
  await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: 'new_0', note: null, now: later });
  expect(await count(owner.id)).toBe(16);
  const kept = (await store.listLedger(owner.id, { limit: 1000 })).entries;
  expect(kept.at(-1)?.reference).toBe('old_9');
  await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: 'new_1', note: null, now: later });
  await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: 'new_2', note: null, now: later });
  expect((await store.listLedger(owner.id, { limit: 1000 })).entries.map((e) => e.reference)).toEqual(['new_2', 'new_1', 'new_0']);
  expect((await store.getAccount(owner.id))?.balance).toBe(28);
  expect(await count(other.id)).toBe(1);
  // A trimmed reference still pays once.
  expect(
    (await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: 'old_3', note: null, now: later }))?.applied,
  ).toBe(false);
  expect((await store.getAccount(owner.id))?.balance).toBe(28);
}
