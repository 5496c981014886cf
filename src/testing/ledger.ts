import assert from 'node:assert/strict';
import type { KeyStore, LedgerEntry, LedgerQuery, UsageDetails, UsageRow } from '../store/types.js';
import { DAY, HOUR, type SpendIds, type SuiteGroup, T0, assertUsd, holdOf, spendOf } from './group.js';
import { randomAccountId, sampleAccount, sampleKeyRecord } from './samples.js';

/**
 * The ledger: opening entries, `changeBalance` (idempotent by reference, bounds), the `usage` entry
 * of each settlement (retries written once), the invariants under concurrency (the entries replay
 * to the balance in one serial order; usage aggregates and key usage agree with them), paging and
 * filters of `listLedger`, `findUsageEntry`, `getUsage` and `trimLedger`.
 */
export const ledgerTests: SuiteGroup = (test, { concurrency }) => {
  test('an account created with a balance gets its opening entry; one created with 0 has none', async (store) => {
    const positive = await store.createAccount(sampleAccount({ balance: 12.5 }));
    const [opening] = (await store.listLedger(positive.id, { limit: 10 })).entries;
    assert.ok(opening && Number.isSafeInteger(opening.id) && opening.id > 0, 'the entry id is a positive integer');
    assert.deepEqual(await store.listLedger(positive.id, { limit: 10 }), {
      entries: [entry({ id: opening.id, accountId: positive.id, type: 'credit', amount: 12.5, balanceAfter: 12.5, reference: 'opening' })],
      hasMore: false,
    });
    const negative = await store.createAccount(sampleAccount({ balance: -3, createdAt: T0 + 1 }));
    const [debt] = (await store.listLedger(negative.id, { limit: 10 })).entries;
    assert.deepEqual(
      debt,
      entry({
        id: debt?.id ?? 0,
        accountId: negative.id,
        type: 'adjustment',
        amount: -3,
        balanceAfter: -3,
        reference: 'opening',
        createdAt: T0 + 1,
      }),
    );
    assert.ok((debt?.id ?? 0) > opening.id, 'ids increase in write order');
    const empty = await store.createAccount(sampleAccount({ balance: 0 }));
    assert.deepEqual(await store.listLedger(empty.id, { limit: 10 }), { entries: [], hasMore: false });
  });

  test('changeBalance credits once per reference, answers the first entry for a repeat, and null for an unknown account', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const credited = await store.changeBalance({
      accountId: owner.id,
      type: 'credit',
      amount: 5,
      reference: 'pay_1',
      note: 'card',
      now: T0 + 1,
    });
    assert.ok(credited);
    assert.deepEqual(credited, {
      account: { ...owner, balance: 15 },
      entry: entry({
        id: credited.entry.id,
        accountId: owner.id,
        type: 'credit',
        amount: 5,
        balanceAfter: 15,
        reference: 'pay_1',
        note: 'card',
        createdAt: T0 + 1,
      }),
      applied: true,
    });
    // The same payment delivered again, even with another amount or type, pays nothing.
    for (const repeat of [
      { type: 'credit', amount: 5 },
      { type: 'credit', amount: 7 },
      { type: 'adjustment', amount: -1 },
    ] as const) {
      assert.deepEqual(await store.changeBalance({ accountId: owner.id, ...repeat, reference: 'pay_1', note: null, now: T0 + 2 }), {
        account: { ...owner, balance: 15 },
        entry: credited.entry,
        applied: false,
      });
    }
    const adjusted = await store.changeBalance({
      accountId: owner.id,
      type: 'adjustment',
      amount: -2.5,
      reference: 'fix_1',
      note: null,
      now: T0 + 3,
    });
    assert.deepEqual(
      adjusted?.entry,
      entry({
        id: adjusted?.entry.id ?? 0,
        accountId: owner.id,
        type: 'adjustment',
        amount: -2.5,
        balanceAfter: 12.5,
        reference: 'fix_1',
        createdAt: T0 + 3,
      }),
    );
    assert.equal(adjusted?.applied, true);
    assertUsd(adjusted?.account.balance, 12.5, 'after the adjustment');
    const opening = await store.changeBalance({
      accountId: owner.id,
      type: 'credit',
      amount: 10,
      reference: 'opening',
      note: null,
      now: T0,
    });
    assert.equal(opening?.applied, false, "the opening entry's reference is taken");
    assert.equal(opening?.entry.reference, 'opening');
    assert.equal(
      await store.changeBalance({ accountId: randomAccountId(), type: 'credit', amount: 1, reference: 'pay_1', note: null, now: T0 }),
      null,
    );
    // References are per account.
    const other = await store.createAccount(sampleAccount({ balance: 0 }));
    assert.equal(
      (await store.changeBalance({ accountId: other.id, type: 'credit', amount: 1, reference: 'pay_1', note: null, now: T0 }))?.applied,
      true,
    );
    assertUsd((await store.getAccount(owner.id))?.balance, 12.5, 'balance');
    const page = await store.listLedger(owner.id, { limit: 10 });
    assert.deepEqual(
      page.entries.map((e) => [e.reference, e.amount]),
      [
        ['fix_1', -2.5],
        ['pay_1', 5],
        ['opening', 10],
      ],
    );
    assertReplays(page.entries, 12.5);
  });

  test('changeBalance refuses bad amounts, references, notes and balances beyond ±1e12 with a TypeError and changes nothing', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const base = { accountId: owner.id, type: 'credit', amount: 1, reference: 'ref', note: null, now: T0 } as const;
    const refused: Array<Record<string, unknown>> = [
      { amount: 0 },
      { amount: -1 },
      { type: 'adjustment', amount: 0 },
      { amount: Number.NaN },
      { amount: Number.POSITIVE_INFINITY },
      { type: 'adjustment', amount: Number.NEGATIVE_INFINITY },
      { amount: 1e12 + 1 },
      { type: 'adjustment', amount: -1e13 },
      { reference: '' },
      { reference: 'r'.repeat(201) },
      { reference: 42 },
      { note: 'n'.repeat(1001) },
      { type: 'refund' },
      { now: Number.NaN },
    ];
    for (const change of refused) {
      await assert.rejects(async () => store.changeBalance({ ...base, ...change } as typeof base), TypeError, JSON.stringify(change));
    }
    const near = await store.createAccount(sampleAccount({ balance: 9e11 }));
    await assert.rejects(async () => store.changeBalance({ ...base, accountId: near.id, amount: 2e11 }), TypeError, 'a balance past +1e12');
    const low = await store.createAccount(sampleAccount({ balance: -9e11 }));
    await assert.rejects(
      async () => store.changeBalance({ ...base, accountId: low.id, type: 'adjustment', amount: -2e11 }),
      TypeError,
      'a balance past -1e12',
    );
    assert.deepEqual(await store.getAccount(owner.id), owner);
    assert.equal((await store.listLedger(owner.id, { limit: 10 })).entries.length, 1, 'only the opening entry');
    assert.equal((await store.listLedger(near.id, { limit: 10 })).entries.length, 1);
    // The refused reference is still free; the bounds themselves are allowed.
    const upTo = await store.changeBalance({
      ...base,
      accountId: near.id,
      amount: 1e11,
      reference: 'r'.repeat(200),
      note: 'n'.repeat(1000),
    });
    assert.equal(upTo?.applied, true);
    assertUsd(upTo?.account.balance, 1e12, 'up to the bound');
  });

  test('20 concurrent changeBalance calls with one reference credit once and all answer the same entry', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 0 }));
    const answers = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        store.changeBalance({ accountId: owner.id, type: 'credit', amount: 25, reference: 'evt_once', note: null, now: T0 + i }),
      ),
    );
    assert.equal(answers.filter((answer) => answer?.applied === true).length, 1, 'applied once');
    assert.equal(new Set(answers.map((answer) => answer?.entry.id)).size, 1, 'one entry id in every answer');
    assertUsd((await store.getAccount(owner.id))?.balance, 25, 'credited once');
    assert.equal((await store.listLedger(owner.id, { limit: 10 })).entries.length, 1);
  });

  test('a settlement writes its usage entry (with or without details); nothing spent and no details writes none; a retry is written once', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    const ids = { keyId: inserted.id, accountId: owner.id };
    const holdId = holdOf(await store.reserveSpend(spendOf(ids, 2)));
    const details = usage('req_1', 'gpt-4o-mini', 'chatcmpl-1');
    const first = await store.settleSpend({ ...ids, holdId, cost: 1.25, period: null, now: T0 + 5, usage: details });
    assert.deepEqual(first, usageEntry(first?.id, ids, { amount: -1.25, balanceAfter: 8.75, createdAt: T0 + 5 }, details));
    // The same request settled again (its first answer was lost): nothing more is charged or written.
    assert.deepEqual(await store.settleSpend({ ...ids, holdId, cost: 1.25, period: null, now: T0 + 6, usage: details }), first);
    assert.deepEqual(await store.settleSpend({ ...ids, holdId: null, cost: 3, period: null, now: T0 + 7, usage: details }), first);
    const plain = await store.settleSpend({ ...ids, holdId: null, cost: 0.5, period: null, now: T0 + 8 });
    assert.deepEqual(plain, usageEntry(plain?.id, ids, { amount: -0.5, balanceAfter: 8.25, createdAt: T0 + 8 }));
    assert.equal(await store.settleSpend({ ...ids, holdId: null, cost: 0, period: null, now: T0 + 9 }), null, 'nothing to write');
    const free = usage('req_2', 'gpt-4o-mini', null);
    const zero = await store.settleSpend({ ...ids, holdId: null, cost: 0, period: null, now: T0 + 10, usage: free });
    assert.deepEqual(
      zero && { ...zero, amount: zero.amount + 0 },
      usageEntry(zero?.id, ids, { amount: 0, balanceAfter: 8.25, createdAt: T0 + 10 }, free),
    );
    await store.deleteKey(inserted.id);
    const late = await store.settleSpend({ ...ids, holdId: null, cost: 0.25, period: null, now: T0 + 11 });
    assert.equal(late?.keyId, inserted.id, "a deleted key's settlement still names it");
    const entries = (await store.listLedger(owner.id, { limit: 10 })).entries;
    assert.deepEqual(
      entries.map((e) => e.id),
      [late?.id, zero?.id, plain?.id, first?.id, entries[4]?.id],
    );
    assertReplays(entries, 8);
    const key = inserted.id;
    assert.equal(entries.filter((e) => e.type === 'usage' && e.keyId === key).length, 4);
    const account = await store.getAccount(owner.id);
    assertUsd(account?.balance, 8, 'balance');
    assertUsd(account?.reserved, 0, 'the retry released nothing more');
  });

  test(`${concurrency} concurrent reservations and settlements across keys and models keep every invariant`, async (store) => {
    const initial = 1000;
    const owner = await store.createAccount(sampleAccount({ balance: initial }));
    const keys = await Promise.all([0, 1, 2].map(() => store.insertKey(sampleKeyRecord(owner.id))));
    const models = ['gpt-4o', 'gpt-4o-mini', 'claude-3-5-haiku'];
    const costOf = (i: number) => ((i % 7) + 1) * 0.013;
    const credits = 10;
    await Promise.all([
      ...Array.from({ length: concurrency }, async (_, i) => {
        const ids = { keyId: (keys[i % 3] as { id: number }).id, accountId: owner.id };
        const now = T0 + i * HOUR;
        const holdId = holdOf(await store.reserveSpend(spendOf(ids, 0.2, null, now)));
        const details = i % 5 === 4 ? undefined : usage(`req_${i}`, models[i % 3] as string, `up_${i}`, i);
        await store.settleSpend({ ...ids, holdId, cost: costOf(i), period: null, now, usage: details });
      }),
      ...Array.from({ length: credits }, (_, i) =>
        store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: `top_${i}`, note: null, now: T0 + i }),
      ),
    ]);
    const spent = Array.from({ length: concurrency }, (_, i) => costOf(i)).reduce((a, b) => a + b, 0);
    const account = await store.getAccount(owner.id);
    assertUsd(account?.balance, initial + credits - spent, 'balance = initial + credits − Σ costs');
    assertUsd(account?.reserved, 0, 'every hold released');
    const entries = await readLedger(store, owner.id, { limit: 97 });
    assert.equal(entries.length, 1 + credits + concurrency, 'one entry per balance change');
    assertReplays(entries, account?.balance ?? Number.NaN);
    const usageEntries = entries.filter((e) => e.type === 'usage');
    for (const key of keys) {
      const own = usageEntries.filter((e) => e.keyId === key.id);
      const stored = await store.getKey(key.id);
      assertUsd(stored?.usage, -sum(own.map((e) => e.amount)), `key ${key.id} usage = −Σ its usage entries`);
      assertUsd(stored?.reserved, 0, `key ${key.id} reserved`);
    }
    const rows = await store.getUsage(owner.id, { from: '2023-01-01', to: '2024-12-31' });
    assert.deepEqual(sortRows(rows.map(roundRow)), sortRows(aggregate(usageEntries).map(roundRow)), 'aggregates = the entries they cover');
    assertUsd(sum(rows.map((r) => r.cost)), spent, 'Σ aggregate costs');
    assert.equal(sum(rows.map((r) => r.requests)), concurrency, 'Σ aggregate requests');
  });

  test('listLedger pages newest first by `before`, each entry exactly once, with key and type filters, one account only', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 100 }));
    const other = await store.createAccount(sampleAccount({ balance: 100 }));
    const first = { keyId: (await store.insertKey(sampleKeyRecord(owner.id))).id, accountId: owner.id };
    const second = { keyId: (await store.insertKey(sampleKeyRecord(owner.id))).id, accountId: owner.id };
    const stranger = { keyId: (await store.insertKey(sampleKeyRecord(other.id))).id, accountId: other.id };
    for (let i = 0; i < 20; i++) {
      await store.settleSpend({ ...first, holdId: null, cost: 0.1, period: null, now: T0 + i });
      await store.settleSpend({ ...stranger, holdId: null, cost: 0.1, period: null, now: T0 + i });
      await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: `c${i}`, note: null, now: T0 + i });
      await store.settleSpend({ ...second, holdId: null, cost: 0.2, period: null, now: T0 + i });
    }
    const all = await readLedger(store, owner.id, { limit: 7 });
    assert.equal(all.length, 61);
    assert.equal(new Set(all.map((e) => e.id)).size, 61, 'each entry once');
    for (const e of all) assert.equal(e.accountId, owner.id, "never another account's entry");
    assertReplays(all, (await store.getAccount(owner.id))?.balance ?? Number.NaN);
    const firstPage = await store.listLedger(owner.id, { limit: 7 });
    assert.deepEqual(firstPage, { entries: all.slice(0, 7), hasMore: true });
    const lastPage = await store.listLedger(owner.id, { limit: 7, before: all[55]?.id });
    assert.deepEqual(lastPage, { entries: all.slice(56), hasMore: false });
    assert.deepEqual(await store.listLedger(owner.id, { limit: 5, before: all[60]?.id }), { entries: [], hasMore: false });
    assert.deepEqual(await store.listLedger(owner.id, { limit: 1000 }), { entries: all, hasMore: false });
    const ofSecond = await readLedger(store, owner.id, { limit: 6, keyId: second.keyId });
    assert.deepEqual(
      ofSecond,
      all.filter((e) => e.keyId === second.keyId),
    );
    assert.equal(ofSecond.length, 20);
    assert.deepEqual(
      await readLedger(store, owner.id, { limit: 8, type: 'credit' }),
      all.filter((e) => e.type === 'credit'),
    );
    assert.deepEqual(
      await readLedger(store, owner.id, { limit: 3, type: 'usage', keyId: first.keyId }),
      all.filter((e) => e.type === 'usage' && e.keyId === first.keyId),
    );
    assert.deepEqual(await store.listLedger(owner.id, { limit: 10, keyId: stranger.keyId }), { entries: [], hasMore: false });
    assert.deepEqual(await store.listLedger(owner.id, { limit: 10, type: 'adjustment' }), { entries: [], hasMore: false });
    assert.deepEqual(await store.listLedger(randomAccountId(), { limit: 10 }), { entries: [], hasMore: false });
    for (const query of [
      { limit: 0 },
      { limit: 1001 },
      { limit: 1.5 },
      { limit: 5, before: 0 },
      { limit: 5, before: -1 },
      { limit: 5, before: 2.5 },
      { limit: 5, keyId: 0 },
      { limit: 5, type: 'refund' },
    ]) {
      await assert.rejects(async () => store.listLedger(owner.id, query as LedgerQuery), TypeError, JSON.stringify(query));
    }
  });

  test('findUsageEntry finds a usage entry by request id or upstream id, within its account only', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const other = await store.createAccount(sampleAccount({ balance: 10 }));
    const ids = { keyId: (await store.insertKey(sampleKeyRecord(owner.id))).id, accountId: owner.id };
    const withUpstream = await store.settleSpend({
      ...ids,
      holdId: null,
      cost: 0.1,
      period: null,
      now: T0,
      usage: usage('req_a', 'm', 'chatcmpl-a'),
    });
    const without = await store.settleSpend({ ...ids, holdId: null, cost: 0.1, period: null, now: T0, usage: usage('req_b', 'm', null) });
    await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 1, reference: 'req_c', note: null, now: T0 });
    assert.deepEqual(await store.findUsageEntry(owner.id, 'req_a'), withUpstream);
    assert.deepEqual(await store.findUsageEntry(owner.id, 'chatcmpl-a'), withUpstream);
    assert.deepEqual(await store.findUsageEntry(owner.id, 'req_b'), without);
    assert.equal(await store.findUsageEntry(other.id, 'req_a'), null, "another account's request");
    assert.equal(await store.findUsageEntry(owner.id, 'req_c'), null, 'a credit reference is not a request id');
    assert.equal(await store.findUsageEntry(owner.id, 'req_unknown'), null);
  });

  test('getUsage reads the aggregates of UTC days × key × model, inclusive, of one account only', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 100 }));
    const other = await store.createAccount(sampleAccount({ balance: 100 }));
    const a = { keyId: (await store.insertKey(sampleKeyRecord(owner.id))).id, accountId: owner.id };
    const b = { keyId: (await store.insertKey(sampleKeyRecord(owner.id))).id, accountId: owner.id };
    const stranger = { keyId: (await store.insertKey(sampleKeyRecord(other.id))).id, accountId: other.id };
    const day1 = Date.parse('2026-03-01T00:00:00.000Z');
    const settle = (ids: SpendIds, cost: number, now: number, details?: UsageDetails) =>
      store.settleSpend({ ...ids, holdId: null, cost, period: null, now, usage: details });
    await settle(a, 1, day1, usage('r1', 'gpt-4o', null, 10));
    await settle(a, 2, day1 + DAY - 1, usage('r2', 'gpt-4o', null, 20));
    await settle(a, 0.5, day1 + 5, usage('r3', 'gpt-4o-mini', null, 1));
    await settle(b, 4, day1 + 7, usage('r4', 'gpt-4o', null, 3));
    await settle(b, 8, day1 + DAY, usage('r5', 'gpt-4o', null, 2));
    await settle(a, 0.25, day1 + 2 * DAY);
    await settle(stranger, 16, day1, usage('r6', 'gpt-4o', null, 1));
    const row = (date: string, keyId: number, model: string, requests: number, tokens: number, cost: number): UsageRow => ({
      date,
      keyId,
      model,
      requests,
      promptTokens: tokens,
      completionTokens: 2 * tokens,
      cost,
    });
    assert.deepEqual(
      sortRows((await store.getUsage(owner.id, { from: '2026-03-01', to: '2026-03-03' })).map(roundRow)),
      sortRows([
        row('2026-03-01', a.keyId, 'gpt-4o', 2, 30, 3),
        row('2026-03-01', a.keyId, 'gpt-4o-mini', 1, 1, 0.5),
        row('2026-03-01', b.keyId, 'gpt-4o', 1, 3, 4),
        row('2026-03-02', b.keyId, 'gpt-4o', 1, 2, 8),
        row('2026-03-03', a.keyId, 'unknown', 1, 0, 0.25),
      ]),
    );
    assert.deepEqual((await store.getUsage(owner.id, { from: '2026-03-02', to: '2026-03-02' })).map(roundRow), [
      row('2026-03-02', b.keyId, 'gpt-4o', 1, 2, 8),
    ]);
    assert.deepEqual(await store.getUsage(owner.id, { from: '2026-03-04', to: '2027-03-04' }), []);
    assert.deepEqual(await store.getUsage(owner.id, { from: '2026-03-02', to: '2026-03-01' }), [], 'from after to');
    assert.deepEqual(await store.getUsage(randomAccountId(), { from: '2026-03-01', to: '2026-03-03' }), []);
    for (const range of [
      { from: '2026-3-1', to: '2026-03-03' },
      { from: '2026-03-01', to: '2026-02-30' },
      { from: '', to: '2026-03-03' },
      { from: '2026-13-01', to: '2026-13-02' },
    ]) {
      await assert.rejects(async () => store.getUsage(owner.id, range), TypeError, JSON.stringify(range));
    }
  });

  test('trimLedger removes the oldest entries before a time, keeps balances, aggregates and references, and what is kept still replays', async (store) => {
    // Times far in the past, so trimming a store shared with other tests touches none of their entries that matter.
    const owner = await store.createAccount(sampleAccount({ balance: 10, createdAt: 1_000 }));
    const ids = { keyId: (await store.insertKey(sampleKeyRecord(owner.id))).id, accountId: owner.id };
    const credit = await store.changeBalance({
      accountId: owner.id,
      type: 'credit',
      amount: 5,
      reference: 'old_pay',
      note: null,
      now: 2_000,
    });
    await store.settleSpend({ ...ids, holdId: null, cost: 1, period: null, now: 3_000, usage: usage('req_old', 'm', null) });
    // A clock that went back: an older time behind a newer entry.
    await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 2, reference: 'late', note: null, now: 9_000 });
    await store.changeBalance({ accountId: owner.id, type: 'adjustment', amount: -1, reference: 'back', note: null, now: 4_000 });
    const usageBefore = await store.getUsage(owner.id, { from: '1970-01-01', to: '1970-01-02' });
    const trimmed = await store.trimLedger(5_000);
    assert.ok(trimmed >= 3, `trimmed ${trimmed}, at least this account's three oldest`);
    const kept = (await store.listLedger(owner.id, { limit: 10 })).entries;
    assert.deepEqual(
      kept.map((e) => e.reference),
      ['back', 'late'],
      'the oldest entries go, up to the first one that is not old: the kept entries stay one unbroken run',
    );
    assertUsd((await store.getAccount(owner.id))?.balance, 15, 'the balance is untouched');
    assertReplays(kept, 15);
    assert.deepEqual(await store.getUsage(owner.id, { from: '1970-01-01', to: '1970-01-02' }), usageBefore, 'aggregates are untouched');
    assert.equal(await store.findUsageEntry(owner.id, 'req_old'), null, 'a trimmed request is not found');
    assert.deepEqual(
      await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 5, reference: 'old_pay', note: null, now: 10_000 }),
      {
        account: await store.getAccount(owner.id),
        entry: credit?.entry,
        applied: false,
      },
    );
    assert.equal(
      (await store.changeBalance({ accountId: owner.id, type: 'credit', amount: 5, reference: 'opening', note: null, now: 10_000 }))
        ?.applied,
      false,
    );
    assertUsd((await store.getAccount(owner.id))?.balance, 15, 'a trimmed reference still pays once');
    await store.trimLedger(5_000);
    assert.deepEqual((await store.listLedger(owner.id, { limit: 10 })).entries, kept, 'trimming again removes nothing more');
    await assert.rejects(async () => store.trimLedger(Number.NaN), TypeError);
  });
};

/** A ledger entry with every field, `null` but for those given (the defaults of a credit at {@link T0}). */
function entry(fields: Partial<LedgerEntry> & Pick<LedgerEntry, 'id' | 'accountId' | 'type' | 'amount' | 'balanceAfter'>): LedgerEntry {
  return {
    keyId: null,
    model: null,
    promptTokens: null,
    completionTokens: null,
    requestId: null,
    upstreamId: null,
    reference: null,
    note: null,
    createdAt: T0,
    ...fields,
  };
}

/** The `usage` entry a settlement must write. */
function usageEntry(
  id: number | undefined,
  ids: SpendIds,
  money: Pick<LedgerEntry, 'amount' | 'balanceAfter' | 'createdAt'>,
  details?: UsageDetails,
): LedgerEntry {
  return entry({
    id: id ?? 0,
    accountId: ids.accountId,
    type: 'usage',
    keyId: ids.keyId,
    ...money,
    ...(details && {
      model: details.model,
      promptTokens: details.promptTokens,
      completionTokens: details.completionTokens,
      requestId: details.requestId,
      upstreamId: details.upstreamId,
    }),
  });
}

/** Usage details with `tokens` prompt and twice as many completion tokens. */
function usage(requestId: string, model: string, upstreamId: string | null, tokens = 5): UsageDetails {
  return { model, promptTokens: tokens, completionTokens: 2 * tokens, requestId, upstreamId };
}

/** Every entry of the account matching `query`, newest first, read page by page with `before`. */
async function readLedger(store: KeyStore, accountId: string, query: LedgerQuery): Promise<LedgerEntry[]> {
  const all: LedgerEntry[] = [];
  let before: number | undefined;
  for (;;) {
    const page = await store.listLedger(accountId, { ...query, before });
    for (let i = 1; i < page.entries.length; i++) {
      assert.ok((page.entries[i] as LedgerEntry).id < (page.entries[i - 1] as LedgerEntry).id, 'newest first');
    }
    all.push(...page.entries);
    if (!page.hasMore) return all;
    assert.equal(page.entries.length, query.limit, 'a page with more after it is full');
    before = page.entries.at(-1)?.id;
  }
}

/**
 * Asserts that entries (newest first, an unbroken run of the account's newest) replay to `balance`
 * in one serial order: each entry's `balanceAfter` is the previous one's plus its own `amount`.
 */
function assertReplays(newestFirst: LedgerEntry[], balance: number): void {
  const ordered = [...newestFirst].reverse();
  for (let i = 1; i < ordered.length; i++) {
    const previous = ordered[i - 1] as LedgerEntry;
    const current = ordered[i] as LedgerEntry;
    assert.ok(current.id > previous.id, 'ids increase');
    assertUsd(current.balanceAfter, previous.balanceAfter + current.amount, `entry ${current.id}: balanceAfter = previous + amount`);
  }
  assertUsd(newestFirst[0]?.balanceAfter ?? balance, balance, 'the newest balanceAfter is the balance');
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** The aggregate rows the usage entries must add up to. */
function aggregate(entries: LedgerEntry[]): UsageRow[] {
  const rows = new Map<string, UsageRow>();
  for (const e of entries) {
    const date = new Date(e.createdAt).toISOString().slice(0, 10);
    const model = e.model ?? 'unknown';
    const name = `${date} ${e.keyId} ${model}`;
    const row = rows.get(name) ?? { date, keyId: e.keyId ?? 0, model, requests: 0, promptTokens: 0, completionTokens: 0, cost: 0 };
    row.requests += 1;
    row.promptTokens += e.promptTokens ?? 0;
    row.completionTokens += e.completionTokens ?? 0;
    row.cost -= e.amount;
    rows.set(name, row);
  }
  return [...rows.values()];
}

/** A row with its cost rounded to 1e-9, so sums in another order compare equal. */
function roundRow(row: UsageRow): UsageRow {
  return { ...row, cost: Math.round(row.cost * 1e9) / 1e9 };
}

function sortRows(rows: UsageRow[]): UsageRow[] {
  const name = (r: UsageRow) => `${r.date} ${String(r.keyId).padStart(12, '0')} ${r.model}`;
  return [...rows].sort((x, y) => (name(x) < name(y) ? -1 : name(x) > name(y) ? 1 : 0));
}
