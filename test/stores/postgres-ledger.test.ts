import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresKeyStore, type PostgresPool } from '../../src/store/postgres/index.js';
import type { KeyStore, LedgerEntry } from '../../src/store/types.js';
import { sampleAccount, sampleKeyRecord } from '../../src/testing/index.js';
import { DATABASE_URL, dropSchema, postgresSkipReason, testSchema } from './postgres-env.js';

const DAY = 86_400_000;

/** Every entry of an account, newest first, read page by page with `before`. */
async function readAll(store: KeyStore, accountId: string, limit: number): Promise<LedgerEntry[]> {
  const entries: LedgerEntry[] = [];
  let before: number | undefined;
  for (;;) {
    const page = await store.listLedger(accountId, { limit, before });
    entries.push(...page.entries);
    if (!page.hasMore) return entries;
    before = page.entries.at(-1)?.id;
  }
}

/** Checks that entries (newest first) replay: each balanceAfter is the previous one plus its amount. */
function replayErrors(newestFirst: LedgerEntry[]): string[] {
  const errors: string[] = [];
  const ordered = [...newestFirst].reverse();
  for (let i = 1; i < ordered.length; i++) {
    const [previous, current] = [ordered[i - 1] as LedgerEntry, ordered[i] as LedgerEntry];
    if (Math.abs(previous.balanceAfter + current.amount - current.balanceAfter) > 1e-9) errors.push(`entry ${current.id}`);
  }
  return errors;
}

/** Runs `count` calls of `make`, at most `width` at a time. */
async function inWaves<T>(count: number, width: number, make: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = [];
  for (let start = 0; start < count; start += width) {
    results.push(...(await Promise.all(Array.from({ length: Math.min(width, count - start) }, (_, j) => make(start + j)))));
  }
  return results;
}

describe.skipIf(!DATABASE_URL)(
  `PostgresKeyStore ledger at scale, locks and statements${postgresSkipReason ? ` (${postgresSkipReason})` : ''}`,
  () => {
    const url = DATABASE_URL as string;
    const schema = testSchema();
    // Without waiting for each commit's WAL flush: these tests count and order rows, durability is not their subject.
    const pool = new pg.Pool({ connectionString: url, max: 20, options: '-c synchronous_commit=off' });
    /** Every statement the store sent, with its parameters. */
    const sent: Array<{ text: string; values: unknown[] | undefined }> = [];
    const counting: PostgresPool = {
      query: (text, values) => {
        sent.push({ text, values });
        return pool.query(text, values);
      },
      connect: () => pool.connect(),
      end: () => pool.end(),
    };
    const store = new PostgresKeyStore({ pool: counting, schema });

    beforeAll(() => store.migrate(), 30_000);
    afterAll(async () => {
      await store.close();
      await pool.end();
      await dropSchema(url, schema);
    });

    it('pages 10,050 entries of one account by `before`, each exactly once, newest first, and they replay to the balance', async () => {
      const owner = await store.createAccount(sampleAccount({ balance: 20_000, createdAt: 0 }));
      const key = await store.insertKey(sampleKeyRecord(owner.id));
      // Waves of 10 writes at once (the account's lock orders each wave); entry i is written at time 1 + i.
      await inWaves<unknown>(10_049, 10, (i) =>
        i % 2 === 0
          ? store.settleSpend({ keyId: key.id, accountId: owner.id, holdId: null, cost: 0.001 * ((i % 9) + 1), period: null, now: 1 + i })
          : store.changeBalance({ accountId: owner.id, type: 'credit', amount: 0.5, reference: `pay_${i}`, note: null, now: 1 + i }),
      );
      const entries = await readAll(store, owner.id, 999);
      expect(entries).toHaveLength(10_050);
      expect(new Set(entries.map((e) => e.id)).size).toBe(10_050);
      expect(entries.every((e, i) => i === 0 || e.id < (entries[i - 1] as LedgerEntry).id)).toBe(true);
      expect(replayErrors(entries)).toEqual([]);
      expect(entries[0]?.balanceAfter).toBeCloseTo((await store.getAccount(owner.id))?.balance ?? Number.NaN, 9);
      expect(entries.at(-1)).toMatchObject({ type: 'credit', reference: 'opening', amount: 20_000 });
      // The same pages through a filter.
      const credits = [];
      let before: number | undefined;
      for (;;) {
        const page = await store.listLedger(owner.id, { limit: 1000, before, type: 'credit' });
        credits.push(...page.entries);
        if (!page.hasMore) break;
        before = page.entries.at(-1)?.id;
      }
      expect(credits.map((e) => e.id)).toEqual(entries.filter((e) => e.type === 'credit').map((e) => e.id));

      // trimLedger works through a backlog larger than one batch (10,000 entries): the opening entry
      // and the first 1,000 waves (times 1 to 10,000) go, the last 49 entries (written later) stay.
      expect(await store.trimLedger(10_001)).toBe(10_001);
      const kept = await readAll(store, owner.id, 1000);
      expect(kept.map((e) => e.createdAt).sort((x, y) => y - x)).toEqual(Array.from({ length: 49 }, (_, i) => 10_049 - i));
      expect(replayErrors(kept)).toEqual([]);
      expect(await store.trimLedger(10_001)).toBe(0);
    }, 180_000);

    it('trims lazily: a write removes at most 10 of the account’s entries past retention, oldest first, never past a newer one', async () => {
      const shortLived = new PostgresKeyStore({ pool: counting, schema, ledgerRetentionDays: 1 });
      const owner = await shortLived.createAccount(sampleAccount({ balance: 100, createdAt: 0 }));
      const change = (reference: string, now: number) =>
        shortLived.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference, note: null, now });
      const references = async () => (await readAll(shortLived, owner.id, 100)).map((e) => e.reference);
      const old = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `old_${to - i}`);
      // Within retention of each other: nothing is trimmed.
      for (let i = 1; i <= 24; i++) await change(`old_${i}`, i);
      expect(await references()).toEqual([...old(1, 24), 'opening']);
      // A day later: the ten oldest go (the opening entry and old_1 to old_9).
      await change('recent', DAY + 100);
      expect(await references()).toEqual(['recent', ...old(10, 24)]);
      // A clock that ran behind: nothing is past retention for it, and its old time sits after a recent entry.
      await change('behind', 30);
      await change('later_1', DAY + 200);
      expect(await references()).toEqual(['later_1', 'behind', 'recent', ...old(20, 24)]);
      // The old run ends at 'recent': 'behind', though older than the cutoff, stays with the run it belongs to.
      await change('later_2', DAY + 300);
      expect(await references()).toEqual(['later_2', 'later_1', 'behind', 'recent']);
      await change('later_3', DAY + 400);
      expect(await references()).toEqual(['later_3', 'later_2', 'later_1', 'behind', 'recent']);
      expect(replayErrors(await readAll(shortLived, owner.id, 100))).toEqual([]);
      // Trimmed references still pay once.
      expect((await change('old_1', DAY + 500))?.applied).toBe(false);
      expect((await change('opening', DAY + 500))?.applied).toBe(false);
      expect((await shortLived.getAccount(owner.id))?.balance).toBe(100 + 24 + 5);
    });

    it('never deadlocks: reservations, settlements, sweeps, top-ups and extensions across two accounts (keys named with the other account too) all land', async () => {
      const [a, b] = await Promise.all([0, 1].map(() => store.createAccount(sampleAccount({ balance: 1000 }))));
      const owners = [a, b] as Array<{ id: string }>;
      const keys = await Promise.all([0, 1, 2, 3].map((i) => store.insertKey(sampleKeyRecord((owners[i % 2] as { id: string }).id))));
      const now = 5_000_000;
      const failures: unknown[] = [];
      await Promise.all(
        Array.from({ length: 300 }, async (_, i) => {
          const key = keys[i % 4] as { id: number; accountId: string };
          // One in five names the other account: its locks then span both accounts.
          const accountId = i % 5 === 0 ? (owners[(i + 1) % 2] as { id: string }).id : key.accountId;
          try {
            const reserved = await store.reserveSpend({
              keyId: key.id,
              accountId,
              amount: 0.01,
              period: null,
              now: now + i,
              expiresAt: now + i + (i % 3 === 0 ? 1 : 60_000),
            });
            if (i % 7 === 0) await store.releaseExpiredHolds(now + i + 5);
            if (i % 11 === 0)
              await store.changeBalance({ accountId: key.accountId, type: 'credit', amount: 1, reference: `dl_${i}`, note: null, now });
            if (reserved.ok && i % 4 === 1) await store.extendHold(reserved.holdId, accountId, now + 120_000);
            await store.settleSpend({
              keyId: key.id,
              accountId,
              holdId: reserved.ok ? reserved.holdId : null,
              cost: 0.005,
              period: null,
              now: now + i + 10,
            });
          } catch (error) {
            failures.push(error);
          }
        }),
      );
      expect(failures).toEqual([]);
      for (const owner of owners) {
        expect((await store.getAccount(owner.id))?.reserved).toBe(0);
        expect(replayErrors(await readAll(store, owner.id, 1000))).toEqual([]);
      }
      for (const key of keys) expect((await store.getKey(key.id))?.reserved).toBe(0);
    }, 60_000);

    it('sends every operation as one statement (one round trip)', async () => {
      const owner = await store.createAccount(sampleAccount({ balance: 10 }));
      const key = await store.insertKey(sampleKeyRecord(owner.id));
      const ids = { keyId: key.id, accountId: owner.id };
      const operations: Array<[string, () => Promise<unknown>]> = [
        ['createAccount', () => store.createAccount(sampleAccount({ balance: 5 }))],
        ['getAccount', () => store.getAccount(owner.id)],
        [
          'changeBalance',
          () => store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: 'one', note: null, now: 1 }),
        ],
        ['insertKey', () => store.insertKey(sampleKeyRecord(owner.id))],
        ['getKey', () => store.getKey(key.id)],
        ['getKeyByHandle', () => store.getKeyByHandle(key.handle)],
        ['listKeys', () => store.listKeys(owner.id, { type: 'proxy', limit: 10 })],
        ['updateKey', () => store.updateKey(key.id, { name: 'renamed', models: ['gpt-4o*'] })],
        ['touchKey', () => store.touchKey(key.id, 5)],
        ['rotateKey', () => store.rotateKey({ id: key.id, hash: 'h2', previousKeyExpiresAt: 10, now: 1 })],
        ['reserveSpend', () => store.reserveSpend({ ...ids, amount: 1, period: null, now: 1, expiresAt: 2 })],
        ['extendHold', () => store.extendHold('1', owner.id, 3)],
        ['settleSpend', () => store.settleSpend({ ...ids, holdId: null, cost: 0.5, period: null, now: 2 })],
        ['releaseExpiredHolds', () => store.releaseExpiredHolds(1)],
        ['listLedger', () => store.listLedger(owner.id, { limit: 10, keyId: key.id })],
        ['findUsageEntry', () => store.findUsageEntry(owner.id, 'req')],
        ['getUsage', () => store.getUsage(owner.id, { from: '1970-01-01', to: '1970-01-01' })],
        ['hitCounter', () => store.hitCounter(`c_${owner.id}`, 1000, 1)],
        ['deleteKey', () => store.deleteKey(key.id)],
      ];
      const statements: Record<string, number> = {};
      for (const [name, run] of operations) {
        const before = sent.length;
        await run();
        statements[name] = sent.length - before;
      }
      expect(statements).toEqual(Object.fromEntries(operations.map(([name]) => [name, 1])));
    });

    it('reads one account’s rows through an index on the account, never another account’s', async () => {
      const owner = await store.createAccount(sampleAccount({ balance: 10 }));
      const key = await store.insertKey(sampleKeyRecord(owner.id));
      const reads: Array<[string, () => Promise<unknown>, string[], string]> = [
        ['getKeyByHandle', () => store.getKeyByHandle(key.handle), ['keys_handle_key'], 'handle = '],
        ['listKeys', () => store.listKeys(owner.id, { type: 'proxy', limit: 10, after: 0 }), ['keys_by_account'], 'account_id = '],
        ['listLedger', () => store.listLedger(owner.id, { limit: 10 }), ['ledger_pkey'], 'account_id = '],
        [
          'listLedger with filters',
          () => store.listLedger(owner.id, { limit: 10, before: 99, keyId: key.id, type: 'usage' }),
          ['ledger_pkey'],
          'account_id = ',
        ],
        ['findUsageEntry', () => store.findUsageEntry(owner.id, 'req_x'), ['ledger_by_request', 'ledger_by_upstream'], 'account_id = '],
        ['getUsage', () => store.getUsage(owner.id, { from: '2026-01-01', to: '2026-12-31' }), ['usage_daily_pkey'], 'account_id = '],
      ];
      const client = await pool.connect();
      try {
        // Tables this small would be read whole; the question is whether an index fits the query.
        await client.query('SET enable_seqscan = off');
        for (const [name, run, indexes, condition] of reads) {
          const before = sent.length;
          await run();
          const statement = sent[before] as { text: string; values: unknown[] };
          const { rows } = await client.query(`EXPLAIN ${statement.text}`, statement.values);
          const plan = rows.map((row: { 'QUERY PLAN': string }) => row['QUERY PLAN']).join('\n');
          expect(plan, name).not.toContain('Seq Scan');
          for (const index of indexes)
            expect(plan, name).toMatch(new RegExp(`(using|Index Scan on) ${index} on|Index Scan on ${index}\\b`));
          const conditions = plan.split('\n').filter((line) => line.includes('Index Cond:'));
          expect(conditions.length, name).toBe(indexes.length);
          for (const line of conditions) expect(line, name).toContain(condition);
        }
      } finally {
        await client.query('RESET enable_seqscan');
        client.release();
      }
    });
  },
);
