import { describe, expect, it } from 'vitest';
import { AccountBook } from '../../src/store/memory/account-book.js';
import { balanceChangeEntry, usageEntry } from '../../src/store/spend-rules.js';
import type { LedgerEntry } from '../../src/store/types.js';

/** A usage entry `id` written at `createdAt`, with its request and upstream ids. */
function usage(id: number, createdAt: number, requestId: string, upstreamId: string | null = null): LedgerEntry {
  const settlement = { keyId: 1, accountId: 'acct_1', holdId: null, cost: 1, period: null, now: createdAt };
  return usageEntry(id, { ...settlement, usage: { model: 'm', promptTokens: 1, completionTokens: 1, requestId, upstreamId } }, 0);
}

/** A credit `id` written at `createdAt` with `reference`. */
function credit(id: number, createdAt: number, reference: string): LedgerEntry {
  return balanceChangeEntry(id, { accountId: 'acct_1', type: 'credit', amount: 1, reference, note: null, now: createdAt }, 0);
}

const KEEP_ALL = Number.NEGATIVE_INFINITY;
const ids = (entries: LedgerEntry[]) => entries.map((entry) => entry.id);

describe('AccountBook', () => {
  it('indexes the first entry of each reference, request id and upstream id, and nothing for null', () => {
    const book = new AccountBook();
    book.append(credit(1, 0, 'pay_1'), KEEP_ALL);
    book.append(credit(2, 0, 'pay_1'), KEEP_ALL);
    book.append(usage(3, 0, 'req_1', 'up_1'), KEEP_ALL);
    book.append(usage(4, 0, 'req_1', 'up_1'), KEEP_ALL);
    book.append(usage(5, 0, 'req_2'), KEEP_ALL);
    expect([...book.references].map(([reference, entry]) => [reference, entry.id])).toEqual([['pay_1', 1]]);
    expect([
      book.settledRequest('req_1')?.id,
      book.findUsage('req_1')?.id,
      book.findUsage('up_1')?.id,
      book.findUsage('req_2')?.id,
    ]).toEqual([3, 3, 3, 5]);
    expect([book.findUsage('pay_1'), book.settledRequest('up_1')]).toEqual([undefined, undefined]);
  });

  it('trims at most `max` of the oldest entries written before `before` (not at it), and stops at the end of the ledger', () => {
    const book = new AccountBook();
    for (const [id, at] of [
      [1, 10],
      [2, 20],
      [3, 30],
      [4, 40],
    ] as const)
      book.append(credit(id, at, `pay_${id}`), KEEP_ALL);
    expect(book.trim(30, 10)).toBe(2);
    expect(book.trim(100, 1)).toBe(1);
    expect(ids(book.page({ limit: 10 }).entries)).toEqual([4]);
    expect(book.trim(100, 10)).toBe(1);
    expect(book.trim(100, 10)).toBe(0);
    expect(book.page({ limit: 10 })).toEqual({ entries: [], hasMore: false });
    // The reference index outlives retention: a repeated top-up still pays once.
    expect([...book.references.keys()]).toEqual(['pay_1', 'pay_2', 'pay_3', 'pay_4']);
  });

  it("drops a trimmed entry's request and upstream ids, but not the index of a newer entry written with the same id", () => {
    const book = new AccountBook();
    book.append(usage(1, 10, 'req_1', 'up_1'), KEEP_ALL);
    book.append(usage(2, 20, 'req_1', 'up_1'), KEEP_ALL);
    expect(book.trim(15, 10)).toBe(1);
    expect([book.findUsage('req_1'), book.findUsage('up_1')]).toEqual([undefined, undefined]);
    book.append(usage(3, 30, 'req_1', 'up_1'), KEEP_ALL);
    book.append(usage(4, 30, 'req_2', 'up_2'), KEEP_ALL);
    expect(book.trim(25, 10)).toBe(1);
    expect([book.findUsage('req_1')?.id, book.findUsage('up_1')?.id, book.findUsage('up_2')?.id]).toEqual([3, 3, 4]);
  });

  it('keeps paging right after compacting more than 1024 trimmed entries', () => {
    const book = new AccountBook();
    for (let id = 1; id <= 2000; id++) book.append(usage(id, id, `req_${id}`), KEEP_ALL);
    expect(book.trim(1501, 2000)).toBe(1500);
    expect(book.page({ limit: 3 })).toEqual({ entries: [2000, 1999, 1998].map((id) => usage(id, id, `req_${id}`)), hasMore: true });
    expect(ids(book.page({ limit: 3, before: 1503 }).entries)).toEqual([1502, 1501]);
    expect(book.page({ limit: 1000, before: 1600 }).entries.length).toBe(99);
    expect([book.findUsage('req_1500'), book.findUsage('req_1501')?.id]).toEqual([undefined, 1501]);
  });

  it('compacts trimmed slots away once more than 1024 are trimmed and they outnumber the kept entries, not before', () => {
    const book = new AccountBook();
    for (let id = 1; id <= 2000; id++) book.append(usage(id, id, `req_${id}`), KEEP_ALL);
    // 1024 trimmed of 2000: more than the kept entries, but not more than 1024.
    expect(book.trim(1025, 2000)).toBe(1024);
    expect(book.slots).toBe(2000);
    // 1025 trimmed: more than both, compacted down to the 975 kept.
    expect(book.trim(1026, 2000)).toBe(1);
    expect(book.slots).toBe(975);
    expect(ids(book.page({ limit: 1000, before: 1030 }).entries)).toEqual([1029, 1028, 1027, 1026]);

    const small = new AccountBook();
    for (let id = 1; id <= 10; id++) small.append(usage(id, id, `req_${id}`), KEEP_ALL);
    // Most of a small ledger trimmed: kept in place, as 1024 slots are not worth a copy.
    expect(small.trim(9, 10)).toBe(8);
    expect(small.slots).toBe(10);

    const large = new AccountBook();
    for (let id = 1; id <= 2200; id++) large.append(usage(id, id, `req_${id}`), KEEP_ALL);
    // 1100 of 2200 trimmed: more than 1024, but not more than the 1100 kept.
    expect(large.trim(1101, 2200)).toBe(1100);
    expect(large.slots).toBe(2200);
    expect(ids(large.page({ limit: 2 }).entries)).toEqual([2200, 2199]);
  });

  it('says hasMore only when an older matching entry exists beyond the page', () => {
    const book = new AccountBook();
    for (let id = 1; id <= 3; id++) book.append(credit(id, 0, `pay_${id}`), KEEP_ALL);
    expect(book.page({ limit: 3 })).toEqual({ entries: [3, 2, 1].map((id) => credit(id, 0, `pay_${id}`)), hasMore: false });
    expect({ ids: ids(book.page({ limit: 2 }).entries), hasMore: book.page({ limit: 2 }).hasMore }).toEqual({ ids: [3, 2], hasMore: true });
    expect({ ids: ids(book.page({ limit: 2, before: 3 }).entries), hasMore: book.page({ limit: 2, before: 3 }).hasMore }).toEqual({
      ids: [2, 1],
      hasMore: false,
    });
  });
});
