import { describe, expect, it, vi } from 'vitest';
import { MemoryKeyStore } from '../../src/index.js';
import { keyStoreSuite } from '../../src/testing/index.js';
import { checkDefaultRetention, checkLazyTrimming } from './retention.js';

keyStoreSuite({ it, createStore: () => new MemoryKeyStore() });

describe('MemoryKeyStore', () => {
  it('warns once under NODE_ENV=production that it is not shared or durable', async () => {
    vi.resetModules();
    const previous = process.env.NODE_ENV;
    process.env.NODE_ENV = 'production';
    try {
      const { MemoryKeyStore: Fresh } = await import('../../src/store/memory/memory-store.js');
      const warn = vi.fn();
      new Fresh({ warn });
      new Fresh({ warn });
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn.mock.calls[0]?.[0]).toMatch(/MemoryKeyStore keeps keys in this process only/);
    } finally {
      process.env.NODE_ENV = previous;
    }
  });

  it('trims each account’s ledger lazily, a few old entries per write, with ledgerRetentionDays', async () => {
    await checkLazyTrimming(new MemoryKeyStore({ ledgerRetentionDays: 1 }));
  });

  it('keeps ledger entries 400 days by default, and trimming them moves no balance, key usage or usage aggregate', async () => {
    await checkDefaultRetention(new MemoryKeyStore());
  });

  it('refuses a ledgerRetentionDays that is not a positive number with ERR_MS_OPTION; Infinity keeps every entry', async () => {
    for (const ledgerRetentionDays of [0, -1, Number.NaN, '400' as unknown as number]) {
      expect(() => new MemoryKeyStore({ ledgerRetentionDays })).toThrow(
        expect.objectContaining({
          code: 'ERR_MS_OPTION',
          message: 'MemoryKeyStore: ledgerRetentionDays must be a positive number of days (Infinity keeps every entry)',
        }),
      );
    }
    const forever = new MemoryKeyStore({ ledgerRetentionDays: Number.POSITIVE_INFINITY });
    const owner = await forever.createAccount({ id: 'acct_forever', balance: 1, reserved: 0, isFreeTier: false, createdAt: 0 });
    await forever.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: 'late', note: null, now: 1e15 });
    expect((await forever.listLedger(owner.id, { limit: 10 })).entries).toHaveLength(2);
  });

  it('does not warn outside production', () => {
    const warn = vi.fn();
    new MemoryKeyStore({ warn });
    expect(warn).not.toHaveBeenCalled();
  });
});
