import { createClient } from '@keyv/redis';
import { afterAll, describe, expect, it } from 'vitest';
import type { RedisBackend } from '../../src/store/keyv/redis-backend.js';
import { roundUsd } from '../../src/store/spend-rules.js';
import { KeyvKeyStore } from '../../src/store/keyv/keyv-store.js';
import type { KeyStore, LedgerEntry, LedgerQuery, SpendReservation } from '../../src/store/types.js';
import { sampleAccount, sampleKeyRecord } from '../../src/testing/index.js';
import { REDIS_URL, redisKeyv, redisSkipReason, removeKeys, runPrefix } from './redis-env.js';

const T0 = Date.parse('2026-11-22T12:00:00Z');
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Every entry of the account matching `query`, newest first, page by page with `before`. */
async function readLedger(store: KeyStore, accountId: string, query: LedgerQuery): Promise<LedgerEntry[]> {
  const all: LedgerEntry[] = [];
  let before: number | undefined;
  for (;;) {
    const page = await store.listLedger(accountId, { ...query, ...(before === undefined ? {} : { before }) });
    all.push(...page.entries);
    if (!page.hasMore) return all;
    expect(page.entries).toHaveLength(query.limit);
    before = page.entries.at(-1)?.id;
  }
}

/** Whether entries (newest first) replay in one serial order: each `balanceAfter` is the previous one's plus its `amount`. */
function replayBreaks(newestFirst: LedgerEntry[]): Array<{ id: number; expected: number; got: number }> {
  const breaks: Array<{ id: number; expected: number; got: number }> = [];
  const ordered = [...newestFirst].reverse();
  for (let i = 1; i < ordered.length; i++) {
    const previous = ordered[i - 1] as LedgerEntry;
    const current = ordered[i] as LedgerEntry;
    if (Math.abs(previous.balanceAfter + current.amount - current.balanceAfter) > 1e-9) {
      breaks.push({ id: current.id, expected: previous.balanceAfter + current.amount, got: current.balanceAfter });
    }
  }
  return breaks;
}

/** The names of the Redis keys under `prefix`, with the prefix and account id replaced by placeholders. */
async function redisKeysOf(url: string, prefix: string, accountId: string): Promise<string[]> {
  const client = createClient({ url });
  await client.connect();
  try {
    const names: string[] = [];
    for await (const keys of client.scanIterator({ MATCH: `*${prefix}*`, COUNT: 1000 })) names.push(...keys);
    return names
      .filter((name) => name.includes(accountId))
      .map((name) => name.slice(name.indexOf(prefix) + prefix.length).replace(accountId, '<account>'))
      .sort();
  } finally {
    client.destroy();
  }
}

describe.skipIf(!REDIS_URL)(`KeyvKeyStore ledger and holds on Redis${redisSkipReason ? ` (${redisSkipReason})` : ''}`, () => {
  const url = REDIS_URL as string;
  const prefix = runPrefix();
  // Two stores, each with its own connection, as two gateway processes would have.
  const storeA = new KeyvKeyStore(redisKeyv(url), { prefix });
  const storeB = new KeyvKeyStore(redisKeyv(url), { prefix });

  afterAll(async () => {
    await Promise.all([storeA.close(), storeB.close()]);
    await removeKeys(url, prefix);
  });

  it('pages through 10,000 entries with `before`, each exactly once, newest first, and so do the key and type filters', {
    timeout: 120_000,
  }, async () => {
    const owner = await storeA.createAccount(sampleAccount({ balance: 0 }));
    const keys = [await storeA.insertKey(sampleKeyRecord(owner.id)), await storeA.insertKey(sampleKeyRecord(owner.id))];
    const total = 10_000;
    // Every 10th entry a credit, the others usage of one of the two keys; written by both stores at once.
    const write = (i: number, store: KeyStore) =>
      i % 10 === 0
        ? store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: `pay_${i}`, note: null, now: T0 + i })
        : store.settleSpend({
            keyId: (keys[i % 2] as { id: number }).id,
            accountId: owner.id,
            holdId: null,
            cost: 0.01,
            period: null,
            now: T0 + i,
            usage: { model: 'gpt-4o-mini', promptTokens: 3, completionTokens: 4, requestId: `req_${i}`, upstreamId: null },
          });
    for (let from = 0; from < total; from += 500) {
      await Promise.all(Array.from({ length: 500 }, (_, j) => write(from + j, j % 2 === 0 ? storeA : storeB)));
    }
    const all = await readLedger(storeB, owner.id, { limit: 777 });
    expect(all).toHaveLength(total);
    expect(new Set(all.map((e) => e.id)).size).toBe(total);
    expect(all.every((e, i) => i === 0 || e.id < (all[i - 1] as LedgerEntry).id)).toBe(true);
    expect(new Set(all.map((e) => e.requestId ?? e.reference))).toEqual(
      new Set(Array.from({ length: total }, (_, i) => (i % 10 === 0 ? `pay_${i}` : `req_${i}`))),
    );
    expect(replayBreaks(all)).toEqual([]);
    const account = await storeA.getAccount(owner.id);
    expect(account?.balance).toBe(all[0]?.balanceAfter);
    expect(account?.balance).toBeCloseTo(1000 - 9000 * 0.01, 9);

    const byKey = await readLedger(storeA, owner.id, { limit: 1000, keyId: (keys[1] as { id: number }).id });
    expect(byKey).toEqual(all.filter((e) => e.keyId === (keys[1] as { id: number }).id));
    // Odd i: key 1 (5000 entries); even i but multiples of 10: key 0 (4000).
    expect(byKey).toHaveLength(5000);
    const credits = await readLedger(storeA, owner.id, { limit: 99, type: 'credit' });
    expect(credits).toEqual(all.filter((e) => e.type === 'credit'));
    expect(credits).toHaveLength(1000);
    const usage = await readLedger(storeB, owner.id, { limit: 1000, type: 'usage' });
    expect(usage).toEqual(all.filter((e) => e.type === 'usage'));
    expect(usage).toHaveLength(9000);
  });

  it('20 concurrent credits with one reference, through two connections, credit once and all answer the first entry', async () => {
    const owner = await storeA.createAccount(sampleAccount({ balance: 1, createdAt: T0 }));
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        (i % 2 === 0 ? storeA : storeB).changeBalance({
          accountId: owner.id,
          type: 'credit',
          amount: 25,
          reference: 'evt_webhook_1',
          note: `delivery ${i}`,
          now: T0 + i,
        }),
      ),
    );
    const applied = answers.filter((answer) => answer?.applied === true);
    expect(applied).toHaveLength(1);
    const first = applied[0]?.entry as LedgerEntry;
    for (const answer of answers) expect(answer?.entry).toEqual(first);
    expect(first).toEqual({
      id: first.id,
      accountId: owner.id,
      type: 'credit',
      amount: 25,
      balanceAfter: 26,
      keyId: null,
      model: null,
      promptTokens: null,
      completionTokens: null,
      requestId: null,
      upstreamId: null,
      reference: 'evt_webhook_1',
      note: first.note,
      createdAt: first.createdAt,
    });
    expect((await storeB.getAccount(owner.id))?.balance).toBe(26);
    expect((await storeA.listLedger(owner.id, { limit: 10 })).entries.map((e) => e.reference)).toEqual(['evt_webhook_1', 'opening']);
  });

  it("the reserve script counts every key's holds in the account's balance: balance 5, key A holds 4, key B's 2 is refused", async () => {
    const owner = await storeA.createAccount(sampleAccount({ balance: 5 }));
    const keyA = await storeA.insertKey(sampleKeyRecord(owner.id));
    const keyB = await storeB.insertKey(sampleKeyRecord(owner.id));
    const reserve = (store: KeyStore, keyId: number, amount: number, now: number): Promise<unknown> =>
      store.reserveSpend({ keyId, accountId: owner.id, amount, period: null, now, expiresAt: now + HOUR } satisfies SpendReservation);
    expect(await reserve(storeA, keyA.id, 4, T0)).toEqual({ ok: true, holdId: expect.any(String) });
    expect(await reserve(storeB, keyB.id, 2, T0 + 1)).toEqual({ ok: false, reason: 'insufficient_balance' });
    expect(await reserve(storeB, keyB.id, 1, T0 + 2)).toEqual({ ok: true, holdId: expect.any(String) });
    expect(await reserve(storeB, keyB.id, 0, T0 + 3)).toEqual({ ok: false, reason: 'insufficient_balance' });
    // What Keyv reads is what the scripts wrote.
    expect(await storeB.keyv.get(`${prefix}account:${owner.id}`)).toEqual({ ...owner, reserved: 5 });
    expect((await storeA.getKey(keyA.id))?.reserved).toBe(4);
    expect((await storeA.getKey(keyB.id))?.reserved).toBe(1);
    // Key A's gateway died: after its hold's deadline, key B's next reservation releases it (and B's own expired one).
    expect(await reserve(storeB, keyB.id, 4.5, T0 + HOUR + 2)).toEqual({ ok: true, holdId: expect.any(String) });
    expect((await storeB.getKey(keyA.id))?.reserved).toBe(0);
    expect((await storeB.getKey(keyB.id))?.reserved).toBe(4.5);
    expect((await storeB.getAccount(owner.id))?.reserved).toBe(4.5);
  });

  it('balances, amounts and counters round-trip exactly through the scripts (up to 17 digits, never cjson’s 14)', async () => {
    const owner = await storeA.createAccount(sampleAccount({ balance: 0.1 }));
    const key = await storeA.insertKey(sampleKeyRecord(owner.id));
    let expected = 0.1;
    for (const [i, amount] of [0.2, 1 / 3, 1e-10, 123456.789012345, 2 / 7].entries()) {
      const answer = await storeB.changeBalance({ accountId: owner.id, type: 'credit', amount, reference: `r${i}`, note: null, now: T0 });
      expected = roundUsd(expected + amount);
      expect(answer?.entry.amount).toBe(amount);
      expect(answer?.entry.balanceAfter).toBe(expected);
      expect(answer?.account.balance).toBe(expected);
    }
    for (const cost of [0.1, 1 / 3, 0.000123456789]) {
      const entry = await storeA.settleSpend({ keyId: key.id, accountId: owner.id, holdId: null, cost, period: null, now: T0 });
      expected = roundUsd(expected - cost);
      expect(entry?.amount).toBe(-cost);
      expect(entry?.balanceAfter).toBe(expected);
    }
    expect((await storeB.getAccount(owner.id))?.balance).toBe(expected);
    const [row] = await storeB.getUsage(owner.id, { from: '2026-11-22', to: '2026-11-22' });
    expect(row).toEqual({
      date: '2026-11-22',
      keyId: key.id,
      model: 'unknown',
      requests: 3,
      promptTokens: 0,
      completionTokens: 0,
      cost: roundUsd(roundUsd(0.1 + 1 / 3) + 0.000123456789),
    });
  });

  it('a settled or released hold and a trimmed ledger leave nothing behind in Redis but the reference index and the usage counters', async () => {
    const owner = await storeA.createAccount(sampleAccount({ balance: 10, createdAt: 1_000 }));
    const key = await storeA.insertKey(sampleKeyRecord(owner.id));
    const ids = { keyId: key.id, accountId: owner.id };
    const settled = await storeA.reserveSpend({ ...ids, amount: 1, period: null, now: 2_000, expiresAt: 3_000 });
    const swept = await storeA.reserveSpend({ ...ids, amount: 2, period: null, now: 2_000, expiresAt: 3_000 });
    const extended = await storeA.reserveSpend({ ...ids, amount: 3, period: null, now: 2_000, expiresAt: 3_000 });
    expect([settled.ok, swept.ok, extended.ok]).toEqual([true, true, true]);
    expect(await storeB.extendHold((extended as { holdId: string }).holdId, owner.id, 5_000)).toBe(true);
    await storeB.settleSpend({
      ...ids,
      holdId: (settled as { holdId: string }).holdId,
      cost: 0.5,
      period: null,
      now: 2_500,
      usage: { model: 'gpt-4o', promptTokens: 1, completionTokens: 2, requestId: 'req_1', upstreamId: 'chatcmpl-1' },
    });
    await storeB.changeBalance({ accountId: owner.id, type: 'adjustment', amount: -1, reference: 'fix', note: 'by hand', now: 2_600 });
    expect(await redisKeysOf(url, prefix, owner.id)).toEqual([
      'account-keys:proxy:<account>',
      'account:<account>',
      'holds-by-account:<account>',
      `ledger-by-key:<account>:${key.id}`,
      'ledger-by-type:<account>:adjustment',
      'ledger-by-type:<account>:credit',
      'ledger-references:<account>',
      'ledger-request-ids:<account>',
      'ledger:<account>',
      'usage-days:<account>',
      'usage:<account>:1970-01-01',
    ]);
    // The swept hold goes by its deadline; the extended one by its settlement.
    expect(await storeA.releaseExpiredHolds(4_000)).toBe(1);
    await storeA.settleSpend({ ...ids, holdId: (extended as { holdId: string }).holdId, cost: 0, period: null, now: 4_500 });
    expect((await storeA.getAccount(owner.id))?.reserved).toBe(0);
    expect(await storeA.trimLedger(10_000)).toBeGreaterThanOrEqual(3);
    expect((await storeA.listLedger(owner.id, { limit: 10 })).entries).toEqual([]);
    expect(await redisKeysOf(url, prefix, owner.id)).toEqual([
      'account-keys:proxy:<account>',
      'account:<account>',
      'ledger-references:<account>',
      'usage-days:<account>',
      'usage:<account>:1970-01-01',
    ]);
    const { base } = (storeA as unknown as { backend: RedisBackend }).backend.runner;
    const holdIds = [settled, swept, extended].map((answer) => (answer as { holdId: string }).holdId);
    const client = createClient({ url });
    await client.connect();
    try {
      expect(await client.exists(holdIds.map((id) => `${base}hold:${id}`))).toBe(0);
      expect(await client.zmScore(`${base}holds`, holdIds)).toEqual([null, null, null]);
      expect(await client.sIsMember(`${base}ledger-accounts`, owner.id)).toBe(0);
    } finally {
      client.destroy();
    }
    expect(
      (await storeB.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: 'opening', note: null, now: 20_000 }))
        ?.applied,
    ).toBe(false);
  });

  it('trimLedger removes more than one batch of one account, and the runs of several accounts, in one call', {
    timeout: 60_000,
  }, async () => {
    // Far in the past (1970), after the entries the other tests here trim: only these are due.
    const at = 100_000;
    const big = await storeA.createAccount(sampleAccount({ balance: 0, createdAt: at }));
    const small = await storeA.createAccount(sampleAccount({ balance: 0, createdAt: at }));
    for (let from = 0; from < 2500; from += 500) {
      await Promise.all(
        Array.from({ length: 500 }, (_, j) =>
          storeA.changeBalance({ accountId: big.id, type: 'credit', amount: 1, reference: `r${from + j}`, note: null, now: at + from + j }),
        ),
      );
    }
    for (let i = 0; i < 3; i++) {
      await storeB.changeBalance({ accountId: small.id, type: 'credit', amount: 1, reference: `r${i}`, note: null, now: at + i });
    }
    const newest = await storeB.changeBalance({
      accountId: big.id,
      type: 'credit',
      amount: 1,
      reference: 'kept',
      note: null,
      now: at + 10_000,
    });
    expect(await storeB.trimLedger(at + 5_000)).toBe(2503);
    expect((await storeA.listLedger(big.id, { limit: 10 })).entries).toEqual([newest?.entry]);
    expect((await storeA.listLedger(small.id, { limit: 10 })).entries).toEqual([]);
    expect(await storeB.trimLedger(at + 5_000)).toBe(0);
    expect((await storeA.getAccount(big.id))?.balance).toBe(2501);
  });

  it('each write trims at most a few of its account’s entries past retention, oldest first, and never another account’s', async () => {
    const store = new KeyvKeyStore(redisKeyv(url), { prefix, ledgerRetentionDays: 1 });
    try {
      const owner = await store.createAccount(sampleAccount({ balance: 0, createdAt: T0 }));
      const other = await store.createAccount(sampleAccount({ balance: 0, createdAt: T0 }));
      for (let i = 0; i < 20; i++) {
        await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: `old_${i}`, note: null, now: T0 + i });
        await store.changeBalance({ accountId: other.id, type: 'credit', amount: 1, reference: `old_${i}`, note: null, now: T0 + i });
      }
      await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: 'new_0', note: null, now: T0 + 2 * DAY });
      const kept = await readLedger(store, owner.id, { limit: 100 });
      const trimmed = 21 - kept.length;
      expect(trimmed).toBeGreaterThanOrEqual(1);
      expect(trimmed).toBeLessThan(20);
      expect(kept.map((e) => e.reference)).toEqual(['new_0', ...Array.from({ length: 20 - trimmed }, (_, i) => `old_${19 - i}`)]);
      expect(replayBreaks(kept)).toEqual([]);
      expect(await readLedger(store, other.id, { limit: 100 })).toHaveLength(20);
      expect((await store.getAccount(owner.id))?.balance).toBe(21);
    } finally {
      await store.close();
    }
  });
});
