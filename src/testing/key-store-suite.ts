import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { generateApiKey } from '../keys/api-key.js';
import type { AccountRecord, KeyStore, NewKeyRecord } from '../store/types.js';

/** A test registrar such as vitest's, jest's, mocha's or `node:test`'s `it`. */
export type TestFunction = (name: string, fn: () => Promise<void>, timeoutMs?: number) => unknown;

/** What {@link keyStoreSuite} needs. */
export interface KeyStoreSuiteOptions {
  /** Registers one test (`it` from vitest, jest, mocha or `node:test`). */
  it: TestFunction;
  /** Makes a store for one test. It may share a backend with other tests: the suite uses random ids. */
  createStore: () => KeyStore | Promise<KeyStore>;
  /** Optional. Called with each test's store when the test ends (default: `store.close?.()`). */
  disposeStore?: (store: KeyStore) => void | Promise<void>;
  /** Optional prefix for the test names. Default `KeyStore conformance: `. */
  name?: string;
  /** How many parallel operations the concurrency tests run. Default 200. */
  concurrency?: number;
}

const HOUR = 3_600_000;

/** A random account id, so tests sharing a backend never collide. */
function accountId(): string {
  return `test_${randomBytes(9).toString('base64url')}`;
}

/**
 * An account record for store tests: a random id, 100 USD, nothing reserved.
 *
 * @example
 * ```ts
 * const owner = await store.createAccount(sampleAccount({ balance: 5 }));
 * ```
 */
export function sampleAccount(overrides: Partial<AccountRecord> = {}): AccountRecord {
  return { id: accountId(), balance: 100, reserved: 0, isFreeTier: false, createdAt: 1_700_000_000_000, ...overrides };
}

/**
 * A key record ready for `insertKey`: a fresh random handle and prefix, a placeholder hash (no
 * scrypt: store tests need records, not verifiable keys), no limits.
 *
 * @example
 * ```ts
 * const key = await store.insertKey(sampleKeyRecord(owner.id, { limit: 10 }));
 * ```
 */
export function sampleKeyRecord(accountIdValue: string, overrides: Partial<NewKeyRecord> = {}): NewKeyRecord {
  const generated = generateApiKey(overrides.type ?? 'proxy');
  return {
    handle: generated.handle,
    type: generated.type,
    accountId: accountIdValue,
    name: 'conformance',
    prefix: generated.prefix,
    hash: 'c2NyeXB0-not-a-real-hash',
    active: true,
    createdAt: 1_700_000_000_000,
    expiresAt: null,
    lastUsedAt: null,
    usage: 0,
    usagePeriod: null,
    reserved: 0,
    limit: null,
    limitReset: null,
    rateLimit: null,
    ...overrides,
  };
}

function close(value: number, expected: number, message: string): void {
  assert.ok(Math.abs(value - expected) < 1e-9, `${message}: expected ${expected}, got ${value}`);
}

/**
 * The conformance suite every `KeyStore` must pass: CRUD, not-found rules, listing with
 * pagination and account scoping, atomic id allocation, and atomic spend and counter operations
 * under concurrency. Register it in a test file of your own:
 *
 * @example
 * ```ts
 * import { it } from 'vitest';
 * import { keyStoreSuite } from 'modelswitch-keys/testing';
 * import { MyStore } from '../src/my-store.js';
 *
 * keyStoreSuite({ it, createStore: () => new MyStore(process.env.DATABASE_URL) });
 * ```
 */
export function keyStoreSuite(options: KeyStoreSuiteOptions): void {
  const prefix = options.name ?? 'KeyStore conformance: ';
  const parallel = options.concurrency ?? 200;
  const test = (name: string, body: (store: KeyStore) => Promise<void>) =>
    options.it(
      `${prefix}${name}`,
      async () => {
        const store = await options.createStore();
        try {
          await body(store);
        } finally {
          await (options.disposeStore ? options.disposeStore(store) : store.close?.());
        }
      },
      60_000,
    );

  test('creates and reads accounts; an unknown id is null; a duplicate id rejects', async (store) => {
    const created = sampleAccount({ balance: 12.5, isFreeTier: true });
    assert.deepEqual(await store.createAccount(created), created);
    assert.deepEqual(await store.getAccount(created.id), created);
    assert.equal(await store.getAccount(accountId()), null);
    await assert.rejects(store.createAccount({ ...created, balance: 1 }));
    assert.deepEqual(await store.getAccount(created.id), created);
  });

  test('adjusts balances; an unknown account answers null', async (store) => {
    const created = await store.createAccount(sampleAccount({ balance: 10 }));
    close((await store.adjustBalance(created.id, 2.5))?.balance ?? Number.NaN, 12.5, 'credit');
    close((await store.adjustBalance(created.id, -20))?.balance ?? Number.NaN, -7.5, 'debit below zero');
    assert.equal(await store.adjustBalance(accountId(), 1), null);
  });

  test('inserts keys with increasing positive integer ids and reads them by id and by handle', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const first = await store.insertKey(
      sampleKeyRecord(owner.id, { name: 'first', expiresAt: 1_800_000_000_000, rateLimit: { requests: 5, interval: '1m' } }),
    );
    const second = await store.insertKey(sampleKeyRecord(owner.id, { name: 'second', limit: 3, limitReset: 'daily' }));
    assert.ok(Number.isSafeInteger(first.id) && first.id > 0, 'id is a positive integer');
    assert.ok(second.id > first.id, 'ids increase');
    assert.deepEqual(await store.getKey(first.id), first);
    assert.deepEqual(await store.getKeyByHandle(second.handle), second);
    assert.equal(first.name, 'first');
    assert.deepEqual(first.rateLimit, { requests: 5, interval: '1m' });
    assert.equal(await store.getKey(second.id + 1_000_000), null);
    assert.equal(await store.getKeyByHandle(generateApiKey('proxy').handle), null);
  });

  test('rejects a second key with the same handle', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const record = sampleKeyRecord(owner.id);
    await store.insertKey(record);
    await assert.rejects(store.insertKey({ ...record, name: 'copy' }));
  });

  test('allocates unique ids under concurrent inserts', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const records = await Promise.all(Array.from({ length: parallel }, () => store.insertKey(sampleKeyRecord(owner.id))));
    assert.equal(new Set(records.map((r) => r.id)).size, parallel, 'every id is distinct');
  });

  test('returns copies: changing a returned record does not change the store', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { rateLimit: { requests: 1, interval: '1s' } }));
    const read = await store.getKey(inserted.id);
    assert.ok(read?.rateLimit);
    read.name = 'changed';
    read.rateLimit.requests = 99;
    const again = await store.getKey(inserted.id);
    assert.equal(again?.name, 'conformance');
    assert.equal(again?.rateLimit?.requests, 1);
  });

  test("lists one account's keys of one type in id order, paginated, never another account's", async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const other = await store.createAccount(sampleAccount());
    const ids: number[] = [];
    for (let i = 0; i < 25; i++) {
      ids.push((await store.insertKey(sampleKeyRecord(owner.id, { name: `k${i}` }))).id);
      await store.insertKey(sampleKeyRecord(other.id));
    }
    const billing = await store.insertKey(sampleKeyRecord(owner.id, { type: 'billing' }));
    const first = await store.listKeys(owner.id, { type: 'proxy', limit: 10 });
    assert.deepEqual(
      first.keys.map((k) => k.id),
      ids.slice(0, 10),
    );
    assert.equal(first.hasMore, true);
    const second = await store.listKeys(owner.id, { type: 'proxy', limit: 10, after: ids[9] as number });
    assert.deepEqual(
      second.keys.map((k) => k.id),
      ids.slice(10, 20),
    );
    const third = await store.listKeys(owner.id, { type: 'proxy', limit: 10, after: ids[19] as number });
    assert.deepEqual(
      third.keys.map((k) => k.id),
      ids.slice(20),
    );
    assert.equal(third.hasMore, false);
    const exact = await store.listKeys(owner.id, { type: 'proxy', limit: 25 });
    assert.equal(exact.keys.length, 25);
    assert.equal(exact.hasMore, false);
    assert.deepEqual(
      (await store.listKeys(owner.id, { type: 'billing', limit: 10 })).keys.map((k) => k.id),
      [billing.id],
    );
    assert.deepEqual(await store.listKeys(accountId(), { type: 'proxy', limit: 10 }), { keys: [], hasMore: false });
    for (const key of exact.keys) assert.equal(key.accountId, owner.id);
  });

  test('updates only the named fields; an unknown id answers null', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { usage: 1.5, usagePeriod: '2026-11-22' }));
    const updated = await store.updateKey(inserted.id, {
      name: 'renamed',
      active: false,
      limit: 9,
      rateLimit: { requests: 2, interval: '1h', tokens: 100 },
    });
    assert.deepEqual(updated, {
      ...inserted,
      name: 'renamed',
      active: false,
      limit: 9,
      rateLimit: { requests: 2, interval: '1h', tokens: 100 },
    });
    assert.deepEqual(await store.getKey(inserted.id), updated);
    const cleared = await store.updateKey(inserted.id, { limit: null, expiresAt: null, rateLimit: null });
    assert.equal(cleared?.limit, null);
    assert.equal(cleared?.rateLimit, null);
    assert.equal(cleared?.usage, 1.5);
    assert.equal(await store.updateKey(inserted.id + 1_000_000, { name: 'x' }), null);
  });

  test('deletes a key everywhere: by id, by handle and from listings', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const kept = await store.insertKey(sampleKeyRecord(owner.id));
    const gone = await store.insertKey(sampleKeyRecord(owner.id));
    assert.equal(await store.deleteKey(gone.id), true);
    assert.equal(await store.deleteKey(gone.id), false);
    assert.equal(await store.getKey(gone.id), null);
    assert.equal(await store.getKeyByHandle(gone.handle), null);
    assert.deepEqual(
      (await store.listKeys(owner.id, { type: 'proxy', limit: 10 })).keys.map((k) => k.id),
      [kept.id],
    );
    const next = await store.insertKey(sampleKeyRecord(owner.id));
    assert.ok(next.id > gone.id, 'ids are never reused');
  });

  test('touchKey only moves lastUsedAt forward and ignores unknown ids', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    await store.touchKey(inserted.id, 2_000);
    await store.touchKey(inserted.id, 1_000);
    assert.equal((await store.getKey(inserted.id))?.lastUsedAt, 2_000);
    await store.touchKey(inserted.id + 1_000_000, 5);
  });

  test(`loses no usage or balance change under ${parallel} concurrent settlements`, async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 1000 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    await Promise.all(
      Array.from({ length: parallel }, (_, i) =>
        store.settleSpend({ keyId: inserted.id, accountId: owner.id, reserved: 0, cost: 0.25, period: null, now: 10_000 + i }),
      ),
    );
    const key = await store.getKey(inserted.id);
    close(key?.usage ?? Number.NaN, parallel * 0.25, 'key usage');
    assert.equal(key?.lastUsedAt, 10_000 + parallel - 1);
    close((await store.getAccount(owner.id))?.balance ?? Number.NaN, 1000 - parallel * 0.25, 'account balance');
  });

  test('reservations never let concurrent requests pass the key limit', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 1000 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { limit: 10 }));
    const results = await Promise.all(
      Array.from({ length: 50 }, () => store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 1, period: null })),
    );
    assert.equal(results.filter((r) => r.ok).length, 10);
    assert.deepEqual(
      results.find((r) => !r.ok),
      { ok: false, reason: 'spend_limit_reached' },
    );
    close((await store.getKey(inserted.id))?.reserved ?? Number.NaN, 10, 'key reserved');
    close((await store.getAccount(owner.id))?.reserved ?? Number.NaN, 10, 'account reserved');
  });

  test('reservations never let concurrent requests overdraw the balance', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 5 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    const results = await Promise.all(
      Array.from({ length: 50 }, () => store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 1, period: null })),
    );
    assert.equal(results.filter((r) => r.ok).length, 5);
    assert.deepEqual(
      results.find((r) => !r.ok),
      { ok: false, reason: 'insufficient_balance' },
    );
    const empty = await store.createAccount(sampleAccount({ balance: 0 }));
    const emptyKey = await store.insertKey(sampleKeyRecord(empty.id));
    assert.deepEqual(await store.reserveSpend({ keyId: emptyKey.id, accountId: empty.id, amount: 0, period: null }), {
      ok: false,
      reason: 'insufficient_balance',
    });
  });

  test('a key at its limit is refused even a reservation of zero', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 100 }));
    const atZero = await store.insertKey(sampleKeyRecord(owner.id, { limit: 0 }));
    assert.deepEqual(await store.reserveSpend({ keyId: atZero.id, accountId: owner.id, amount: 0, period: null }), {
      ok: false,
      reason: 'spend_limit_reached',
    });
    const spent = await store.insertKey(sampleKeyRecord(owner.id, { limit: 2, usage: 2 }));
    assert.deepEqual(await store.reserveSpend({ keyId: spent.id, accountId: owner.id, amount: 0, period: null }), {
      ok: false,
      reason: 'spend_limit_reached',
    });
    const below = await store.insertKey(sampleKeyRecord(owner.id, { limit: 2, usage: 1.5 }));
    assert.deepEqual(await store.reserveSpend({ keyId: below.id, accountId: owner.id, amount: 0, period: null }), { ok: true });
  });

  test('reserve, then settle: the reservation is released and the real cost charged', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { limit: 5 }));
    assert.deepEqual(await store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 4, period: null }), { ok: true });
    await store.settleSpend({ keyId: inserted.id, accountId: owner.id, reserved: 4, cost: 1.5, period: null, now: 42 });
    const key = await store.getKey(inserted.id);
    const owned = await store.getAccount(owner.id);
    close(key?.usage ?? Number.NaN, 1.5, 'usage');
    close(key?.reserved ?? Number.NaN, 0, 'key reserved');
    close(owned?.balance ?? Number.NaN, 8.5, 'balance');
    close(owned?.reserved ?? Number.NaN, 0, 'account reserved');
    assert.equal((await store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 3.6, period: null })).ok, false);
    assert.equal((await store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 3.5, period: null })).ok, true);
  });

  test('a new limit period starts usage again from zero', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 100 }));
    const inserted = await store.insertKey(
      sampleKeyRecord(owner.id, { limit: 2, limitReset: 'daily', usage: 2, usagePeriod: '2026-11-21' }),
    );
    assert.deepEqual(await store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 1, period: '2026-11-21' }), {
      ok: false,
      reason: 'spend_limit_reached',
    });
    assert.deepEqual(await store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 1, period: '2026-11-22' }), { ok: true });
    await store.settleSpend({ keyId: inserted.id, accountId: owner.id, reserved: 1, cost: 0.5, period: '2026-11-22', now: 1 });
    const key = await store.getKey(inserted.id);
    close(key?.usage ?? Number.NaN, 0.5, 'usage in the new period');
    assert.equal(key?.usagePeriod, '2026-11-22');
  });

  test('reservation and settlement of unknown keys and accounts', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    assert.deepEqual(await store.reserveSpend({ keyId: inserted.id + 1_000_000, accountId: owner.id, amount: 1, period: null }), {
      ok: false,
      reason: 'key_not_found',
    });
    assert.deepEqual(await store.reserveSpend({ keyId: inserted.id, accountId: accountId(), amount: 1, period: null }), {
      ok: false,
      reason: 'account_not_found',
    });
    await store.reserveSpend({ keyId: inserted.id, accountId: owner.id, amount: 2, period: null });
    await store.deleteKey(inserted.id);
    await store.settleSpend({ keyId: inserted.id, accountId: owner.id, reserved: 2, cost: 1, period: null, now: 1 });
    const owned = await store.getAccount(owner.id);
    close(owned?.balance ?? Number.NaN, 9, 'a deleted key still debits its account');
    close(owned?.reserved ?? Number.NaN, 0, 'and releases its reservation');
  });

  test("a settlement from an earlier period never replaces a later period's usage", async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 100 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { limit: 10, limitReset: 'daily', usagePeriod: '2026-11-21' }));
    const ids = { keyId: inserted.id, accountId: owner.id };
    // A long request reserves on day 1; a day-2 request reserves and settles before it ends.
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 4, period: '2026-11-21' }), { ok: true });
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 6, period: '2026-11-22' }), { ok: true });
    await store.settleSpend({ ...ids, reserved: 6, cost: 6, period: '2026-11-22', now: 2 });
    await store.settleSpend({ ...ids, reserved: 4, cost: 4, period: '2026-11-21', now: 3 });
    let key = await store.getKey(inserted.id);
    close(key?.usage ?? Number.NaN, 6, "day 2's usage stays");
    assert.equal(key?.usagePeriod, '2026-11-22', 'the period does not move back');
    close(key?.reserved ?? Number.NaN, 0, 'both reservations are released');
    assert.equal(key?.lastUsedAt, 3);
    const owned = await store.getAccount(owner.id);
    close(owned?.balance ?? Number.NaN, 90, 'both costs are debited');
    close(owned?.reserved ?? Number.NaN, 0, 'account reserved');
    // So day 2 has 4 of its 10 left, not 6.
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 4.5, period: '2026-11-22' }), { ok: false, reason: 'spend_limit_reached' });
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 4, period: '2026-11-22' }), { ok: true });
    await store.settleSpend({ ...ids, reserved: 4, cost: 0, period: '2026-11-22', now: 4 });
    // Another reset rule's period (the limit reset changed meanwhile) is not comparable: usage stays too.
    await store.settleSpend({ ...ids, reserved: 0, cost: 1, period: '2026-W47', now: 5 });
    await store.settleSpend({ ...ids, reserved: 0, cost: 1, period: null, now: 6 });
    key = await store.getKey(inserted.id);
    close(key?.usage ?? Number.NaN, 6, 'usage after settlements of other rules');
    assert.equal(key?.usagePeriod, '2026-11-22');
    // A settlement for a later period than the stored one starts that period, as before.
    await store.settleSpend({ ...ids, reserved: 0, cost: 1.5, period: '2026-11-23', now: 7 });
    key = await store.getKey(inserted.id);
    close(key?.usage ?? Number.NaN, 1.5, 'usage of the later period');
    assert.equal(key?.usagePeriod, '2026-11-23');
    close((await store.getAccount(owner.id))?.balance ?? Number.NaN, 86.5, 'every cost is debited');
  });

  test("a reservation for an earlier period (a clock behind) counts the stored later period's usage and keeps it", async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 100 }));
    const inserted = await store.insertKey(
      sampleKeyRecord(owner.id, { limit: 10, limitReset: 'weekly', usage: 9, usagePeriod: '2026-W10' }),
    );
    const ids = { keyId: inserted.id, accountId: owner.id };
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 2, period: '2026-W09' }), { ok: false, reason: 'spend_limit_reached' });
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 1, period: '2026-W09' }), { ok: true });
    const key = await store.getKey(inserted.id);
    close(key?.usage ?? Number.NaN, 9, 'usage');
    assert.equal(key?.usagePeriod, '2026-W10');
    close(key?.reserved ?? Number.NaN, 1, 'reserved');
  });

  test('refuses NaN, infinite, negative and huge amounts with a TypeError and changes nothing', async (store) => {
    const owner = await store.createAccount(sampleAccount({ balance: 10 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { limit: 5, limitReset: 'daily', usagePeriod: '2026-11-22' }));
    const ids = { keyId: inserted.id, accountId: owner.id };
    assert.deepEqual(await store.reserveSpend({ ...ids, amount: 1, period: '2026-11-22' }), { ok: true });
    const counter = `tokens:${accountId()}`;
    await store.hitCounter(counter, 60_000, HOUR, 7);
    const keyBefore = await store.getKey(inserted.id);
    const accountBefore = await store.getAccount(owner.id);
    const bad = [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1, 1e13];
    for (const value of bad) {
      const label = String(value);
      const period = '2026-11-22';
      await assert.rejects(async () => store.reserveSpend({ ...ids, amount: value, period }), TypeError, `reserve ${label}`);
      await assert.rejects(async () => store.settleSpend({ ...ids, reserved: 1, cost: value, period, now: 9 }), TypeError, `cost ${label}`);
      await assert.rejects(
        async () => store.settleSpend({ ...ids, reserved: value, cost: 0, period, now: 9 }),
        TypeError,
        `reserved ${label}`,
      );
      if (value !== 1e13) await assert.rejects(async () => store.hitCounter(counter, 60_000, HOUR, value), TypeError, `counter ${label}`);
      if (value !== -1) await assert.rejects(async () => store.adjustBalance(owner.id, value), TypeError, `delta ${label}`);
    }
    await assert.rejects(async () => store.adjustBalance(owner.id, -1e13), TypeError, 'delta -1e13');
    await assert.rejects(async () => store.adjustBalance(owner.id, 1e300), TypeError, 'delta 1e300');
    assert.deepEqual(await store.getKey(inserted.id), keyBefore);
    assert.deepEqual(await store.getAccount(owner.id), accountBefore);
    assert.deepEqual(await store.hitCounter(counter, 60_000, HOUR, 0), { count: 7, resetAt: HOUR + 60_000 });
  });

  test('refuses a balance beyond ±1e12 USD and keeps the account readable', async (store) => {
    const near = await store.createAccount(sampleAccount({ balance: 9e11 }));
    await assert.rejects(async () => store.adjustBalance(near.id, 2e11), 'credit past the bound');
    assert.deepEqual(await store.getAccount(near.id), near);
    close((await store.adjustBalance(near.id, 1e11))?.balance ?? Number.NaN, 1e12, 'up to the bound');
    // A record written with a larger balance (by hand, or before the bound existed) is never turned into garbage.
    const huge = await store.createAccount(sampleAccount({ balance: 1e300 }));
    await assert.rejects(async () => store.adjustBalance(huge.id, 1), 'adjusting a balance beyond the bound');
    assert.deepEqual(await store.getAccount(huge.id), huge);
  });

  test("account ids that start with ':' work in every operation", async (store) => {
    for (const id of [`:${accountId()}`, `::${accountId()}`]) {
      const owner = await store.createAccount(sampleAccount({ id, balance: 10 }));
      assert.deepEqual(await store.getAccount(id), owner);
      close((await store.adjustBalance(id, 1))?.balance ?? Number.NaN, 11, 'adjustBalance finds it');
      const inserted = await store.insertKey(sampleKeyRecord(id));
      assert.equal(inserted.accountId, id);
      assert.deepEqual(
        (await store.listKeys(id, { type: 'proxy', limit: 10 })).keys.map((k) => [k.id, k.accountId]),
        [[inserted.id, id]],
      );
      assert.deepEqual(await store.reserveSpend({ keyId: inserted.id, accountId: id, amount: 2, period: null }), { ok: true });
      await store.settleSpend({ keyId: inserted.id, accountId: id, reserved: 2, cost: 1, period: null, now: 5 });
      const owned = await store.getAccount(id);
      close(owned?.balance ?? Number.NaN, 10, 'settled');
      close(owned?.reserved ?? Number.NaN, 0, 'released');
      close((await store.getKey(inserted.id))?.usage ?? Number.NaN, 1, 'key usage');
      assert.equal(await store.deleteKey(inserted.id), true);
      assert.deepEqual(await store.listKeys(id, { type: 'proxy', limit: 10 }), { keys: [], hasMore: false });
      assert.deepEqual(await store.hitCounter(`${id}:requests`, 60_000, HOUR), { count: 1, resetAt: HOUR + 60_000 });
    }
  });

  test(`counts ${parallel} concurrent counter hits exactly, per fixed window`, async (store) => {
    const name = `requests:${accountId()}`;
    const now = 10 * HOUR + 1234;
    const results = await Promise.all(Array.from({ length: parallel }, () => store.hitCounter(name, 60_000, now)));
    assert.deepEqual(
      results.map((r) => r.count).sort((a, b) => a - b),
      Array.from({ length: parallel }, (_, i) => i + 1),
    );
    for (const result of results) assert.equal(result.resetAt, 10 * HOUR + 60_000);
    assert.deepEqual(await store.hitCounter(name, 60_000, now, 0), { count: parallel, resetAt: 10 * HOUR + 60_000 });
    assert.deepEqual(await store.hitCounter(name, 60_000, now, 50), { count: parallel + 50, resetAt: 10 * HOUR + 60_000 });
    assert.deepEqual(await store.hitCounter(name, 60_000, 10 * HOUR + 60_000), { count: 1, resetAt: 10 * HOUR + 120_000 });
    assert.deepEqual(await store.hitCounter(`${name}:other`, 60_000, now), { count: 1, resetAt: 10 * HOUR + 60_000 });
  });

  test('a store with `sync` answers its synchronous reads and counter exactly like the async ones', async (store) => {
    const sync = store.sync;
    if (sync === undefined) return; // Optional: only in-process stores have it.
    assert.equal(sync.standsFor.getKeyByHandle, store.getKeyByHandle, 'sync.standsFor names the store’s own getKeyByHandle');
    assert.equal(sync.standsFor.getAccount, store.getAccount, 'sync.standsFor names the store’s own getAccount');
    assert.equal(sync.standsFor.hitCounter, store.hitCounter, 'sync.standsFor names the store’s own hitCounter');
    const owner = await store.createAccount(sampleAccount({ balance: 7 }));
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { rateLimit: { requests: 5, interval: '1m', tokens: 9 } }));
    assert.deepEqual(sync.getKeyByHandle(inserted.handle), inserted);
    assert.equal(sync.getKeyByHandle(generateApiKey('proxy').handle), null);
    assert.deepEqual(sync.getAccount(owner.id), owner);
    assert.equal(sync.getAccount(accountId()), null);
    await store.updateKey(inserted.id, { active: false });
    assert.equal(sync.getKeyByHandle(inserted.handle)?.active, false, 'reads are fresh, not a snapshot');
    await store.deleteKey(inserted.id);
    assert.equal(sync.getKeyByHandle(inserted.handle), null, 'a deleted key is gone');
    // One counter, whichever way it is hit.
    const name = `requests:${accountId()}`;
    assert.deepEqual(sync.hitCounter(name, 60_000, HOUR), { count: 1, resetAt: HOUR + 60_000 });
    assert.deepEqual(await store.hitCounter(name, 60_000, HOUR), { count: 2, resetAt: HOUR + 60_000 });
    assert.deepEqual(sync.hitCounter(name, 60_000, HOUR, 0), { count: 2, resetAt: HOUR + 60_000 });
    assert.deepEqual(sync.hitCounter(name, 60_000, HOUR + 60_000), { count: 1, resetAt: HOUR + 120_000 });
    assert.throws(() => sync.hitCounter(name, 60_000, HOUR, Number.NaN), TypeError);
  });
}
