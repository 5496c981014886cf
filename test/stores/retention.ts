import { expect } from 'vitest';
import type { KeyStore } from '../../src/store/types.js';
import { sampleAccount, sampleKeyRecord } from '../../src/testing/index.js';

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

/**
 * Checks the default retention of a store made without `ledgerRetentionDays`: 400 days. A usage
 * entry written at time 0 is still listed after a write at exactly 400 days; a write 1 ms later
 * trims it, and neither the balance, nor the key's usage, nor the day's usage aggregate moves.
 */
export async function checkDefaultRetention(store: KeyStore): Promise<void> {
  const owner = await store.createAccount(sampleAccount({ balance: 10, createdAt: 0 }));
  const key = await store.insertKey(sampleKeyRecord(owner.id, { createdAt: 0 }));
  const usage = { model: 'gpt-4o', promptTokens: 3, completionTokens: 4, requestId: 'req_old', upstreamId: null };
  await store.settleSpend({ keyId: key.id, accountId: owner.id, holdId: null, cost: 0.5, period: null, now: 0, usage });
  const references = async () => (await store.listLedger(owner.id, { limit: 10 })).entries.map((e) => e.requestId ?? e.reference);
  expect(await references()).toEqual(['req_old', 'opening']);
  await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: 'day_400', note: null, now: 400 * DAY });
  expect(await references()).toEqual(['day_400', 'req_old', 'opening']);
  await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: 'day_400_later', note: null, now: 400 * DAY + 1 });
  expect(await references()).toEqual(['day_400_later', 'day_400']);
  expect((await store.getAccount(owner.id))?.balance).toBe(11.5);
  expect((await store.getKey(key.id))?.usage).toBe(0.5);
  expect(await store.getUsage(owner.id, { from: '1970-01-01', to: '1970-01-01' })).toEqual([
    { date: '1970-01-01', keyId: key.id, model: 'gpt-4o', requests: 1, promptTokens: 3, completionTokens: 4, cost: 0.5 },
  ]);
}
