import { describe, expect, it } from 'vitest';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import { sampleKeyRecord } from '../../src/testing/index.js';
import type { AccountRecord, SpendSettlement } from '../../src/store/types.js';

/*
 * MemoryKeyStore's own paths that the conformance suite does not reach: what it says outside
 * production, its refusals, touchKey, holds named by the wrong key or account, accounts without a
 * ledger yet, and the sweep of idle rate-limit counters.
 */

const NOW = 1_800_000_000_000;

function account(id: string, balance: number): AccountRecord {
  return { id, balance, reserved: 0, isFreeTier: false, createdAt: NOW };
}

describe('MemoryKeyStore at its edges', () => {
  it('warns nothing outside production', () => {
    const warnings: string[] = [];
    new MemoryKeyStore({ warn: (message) => warnings.push(message) });
    expect(process.env.NODE_ENV).not.toBe('production');
    expect(warnings).toEqual([]);
  });

  it('refuses a second account with one id and a second key with one handle, naming what exists', async () => {
    const store = new MemoryKeyStore();
    await store.createAccount(account('acct_1', 0));
    await expect(store.createAccount(account('acct_1', 0))).rejects.toThrow(new Error('account acct_1 already exists'));
    const key = sampleKeyRecord('acct_1');
    await store.insertKey(key);
    await expect(store.insertKey({ ...key, name: 'again' })).rejects.toThrow(new Error('key handle already exists'));
  });

  it('touchKey sets the first use (the epoch too) and moves it forward only', async () => {
    const store = new MemoryKeyStore();
    const first = await store.insertKey(sampleKeyRecord('acct_1'));
    const second = await store.insertKey(sampleKeyRecord('acct_1'));
    await store.touchKey(first.id, 0);
    await store.touchKey(second.id, 20);
    await store.touchKey(second.id, 10);
    await store.touchKey(second.id, 30);
    expect([(await store.getKey(first.id))?.lastUsedAt, (await store.getKey(second.id))?.lastUsedAt]).toEqual([0, 30]);
  });

  it("a reservation naming another account still releases the expired holds of the key's own account", async () => {
    const store = new MemoryKeyStore();
    await store.createAccount(account('acct_a', 10));
    await store.createAccount(account('acct_b', 10));
    const key = await store.insertKey(sampleKeyRecord('acct_a'));
    const base = { keyId: key.id, amount: 4, period: null, now: NOW, expiresAt: NOW + 1000 };
    expect(await store.reserveSpend({ ...base, accountId: 'acct_a' })).toEqual({ ok: true, holdId: '1' });
    expect(await store.reserveSpend({ ...base, accountId: 'acct_b', amount: 1, now: NOW + 1000, expiresAt: NOW + 2000 })).toEqual({
      ok: true,
      holdId: '2',
    });
    expect([
      (await store.getKey(key.id))?.reserved,
      (await store.getAccount('acct_a'))?.reserved,
      (await store.getAccount('acct_b'))?.reserved,
    ]).toEqual([1, 0, 1]);
  });

  it('a settlement naming the hold of another key or another account leaves that hold in place', async () => {
    const store = new MemoryKeyStore();
    await store.createAccount(account('acct_a', 10));
    await store.createAccount(account('acct_b', 10));
    const key = await store.insertKey(sampleKeyRecord('acct_a'));
    const other = await store.insertKey(sampleKeyRecord('acct_b'));
    const held = await store.reserveSpend({ keyId: key.id, accountId: 'acct_a', amount: 4, period: null, now: NOW, expiresAt: NOW + 1000 });
    const holdId = held.ok ? held.holdId : null;
    const settlement: SpendSettlement = { keyId: other.id, accountId: 'acct_b', holdId, cost: 1, period: null, now: NOW };
    await store.settleSpend(settlement);
    await store.settleSpend({ ...settlement, keyId: key.id });
    await store.settleSpend({ ...settlement, accountId: 'acct_a', keyId: other.id });
    expect([(await store.getKey(key.id))?.reserved, (await store.getAccount('acct_a'))?.reserved]).toEqual([4, 4]);
    expect([(await store.getAccount('acct_a'))?.balance, (await store.getAccount('acct_b'))?.balance]).toEqual([9, 8]);
  });

  it('settles usage on an account that has no ledger yet, and finds no usage of an account it does not know', async () => {
    const store = new MemoryKeyStore();
    await store.createAccount(account('acct_1', 0));
    const key = await store.insertKey(sampleKeyRecord('acct_1'));
    const usage = { model: 'm', promptTokens: 1, completionTokens: 2, requestId: 'req_1', upstreamId: null };
    const entry = await store.settleSpend({ keyId: key.id, accountId: 'acct_1', holdId: null, cost: 0, period: null, now: NOW, usage });
    expect(entry).toMatchObject({ id: 1, type: 'usage', amount: 0, balanceAfter: 0, requestId: 'req_1' });
    expect(await store.findUsageEntry('acct_1', 'req_1')).toEqual(entry);
    expect(await store.findUsageEntry('acct_unknown', 'req_1')).toBeNull();
  });

  it('sweeps idle counters once 10,000 exist, keeping the count of every window still open', async () => {
    const store = new MemoryKeyStore();
    await store.hitCounter('old', 1000, NOW - 5000, 1);
    await store.hitCounter('live', 60_000, NOW, 1);
    for (let i = 0; i < 10_000; i++) await store.hitCounter(`c${i}`, 60_000, NOW, 1);
    expect([await store.hitCounter('live', 60_000, NOW, 1), await store.hitCounter('c0', 60_000, NOW, 0)]).toEqual([
      { count: 2, resetAt: NOW - (NOW % 60_000) + 60_000 },
      { count: 1, resetAt: NOW - (NOW % 60_000) + 60_000 },
    ]);
  });
});
