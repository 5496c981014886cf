import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { creditBalance } from '../../src/keys/accounts.js';
import { isoTime } from '../../src/keys/public-key.js';
import type { PublicLedgerEntry } from '../../src/keys/public-ledger-entry.js';
import { PostgresKeyStore } from '../../src/store/postgres/index.js';
import { KeyvKeyStore } from '../../src/store/keyv/keyv-store.js';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import { roundUsd } from '../../src/store/spend-rules.js';
import type { KeyStore } from '../../src/store/types.js';
import { fastHasher, seedAccount } from '../helpers.js';
import { type Gateway, chat, deferred, startGateway } from '../proxy/harness.js';
import { DATABASE_URL, dropSchema, postgresSkipReason, testSchema } from '../stores/postgres-env.js';
import { expectSettledOnceThroughRoutes } from '../stores/ledger-through-routes.js';
import { REDIS_URL, redisKeyv, redisSkipReason, removeKeys, runPrefix } from '../stores/redis-env.js';

const REQUEST_ID = /^req_[A-Za-z0-9_-]{24}$/;
/** 12 prompt + 8 completion tokens at the mock price. */
const COST = 0.028;
/** What a mock-model stream the client leaves before its usage is charged: its reservation (24 estimated prompt + 100 output tokens). */
const ABORTED_STREAM_COST = 0.236;
const JSON_HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' };

interface Answer {
  status: number;
  headers: Record<string, string | null>;
  body: unknown;
}

/** GETs `url` with `key`; answers the status, the headers every JSON answer has, and the parsed body. */
async function get(url: string, key: string): Promise<Answer> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${key}` } });
  return {
    status: res.status,
    headers: { 'content-type': res.headers.get('content-type'), 'cache-control': res.headers.get('cache-control') },
    body: await res.json(),
  };
}

/** A 200 answer with `body`. */
function ok(body: unknown): Answer {
  return { status: 200, headers: JSON_HEADERS, body };
}

/** POSTs a chat completion with `key`; answers the status, the X-Request-Id and the text. */
async function complete(gateway: Gateway, key: string, body: Record<string, unknown>): Promise<{ status: number; requestId: string }> {
  const res = await fetch(`${gateway.url}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  await res.text();
  return { status: res.status, requestId: res.headers.get('x-request-id') as string };
}

/** A stream of `key` the client leaves after its first chunk; answers its X-Request-Id once it has settled. */
async function abandonedStream(gateway: Gateway, key: string): Promise<string> {
  const hold = deferred();
  gateway.upstream.behaviour = { holdAfterFirstChunk: hold.promise };
  const controller = new AbortController();
  const res = await fetch(`${gateway.url}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(chat({ stream: true })),
    signal: controller.signal,
  });
  const requestId = res.headers.get('x-request-id') as string;
  await (res.body as ReadableStream<Uint8Array>).getReader().read();
  controller.abort();
  await gateway.proxy.drain();
  hold.resolve();
  gateway.upstream.behaviour = {};
  return requestId;
}

/** Creates a proxy key through the API with the gateway's billing key. */
async function createKey(gateway: Gateway, name: string): Promise<{ id: number; key: string }> {
  const res = await fetch(`${gateway.apiUrl}/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${gateway.billingKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: number; key: string };
}

/** A store the account API runs on, made once per describe block and closed after it. */
interface StoreCase {
  name: string;
  skip: string | undefined;
  open(): Promise<KeyStore>;
  close(store: KeyStore): Promise<void>;
}

const redisPrefix = runPrefix();
const postgresSchema = testSchema();
const STORES: StoreCase[] = [
  { name: 'MemoryKeyStore', skip: undefined, open: async () => new MemoryKeyStore(), close: async () => {} },
  {
    name: 'KeyvKeyStore on Redis',
    skip: redisSkipReason,
    open: async () => new KeyvKeyStore(redisKeyv(REDIS_URL as string), { prefix: redisPrefix }),
    close: async (store) => {
      await store.close?.();
      await removeKeys(REDIS_URL as string, redisPrefix);
    },
  },
  {
    name: 'PostgresKeyStore',
    skip: postgresSkipReason,
    open: async () => {
      const store = new PostgresKeyStore({ connectionString: DATABASE_URL as string, schema: postgresSchema });
      await store.migrate();
      return store;
    },
    close: async (store) => {
      await store.close?.();
      await dropSchema(DATABASE_URL as string, postgresSchema);
    },
  },
];

for (const storeCase of STORES) {
  describe.skipIf(storeCase.skip !== undefined)(`account API on ${storeCase.name}${storeCase.skip ? ` (${storeCase.skip})` : ''}`, () => {
    let store: KeyStore;
    let gateway: Gateway | undefined;
    beforeAll(async () => {
      store = await storeCase.open();
    }, 30_000);
    afterEach(async () => {
      await gateway?.close();
      gateway = undefined;
    });
    afterAll(async () => {
      await storeCase.close(store);
    });

    it('after JSON, streamed, abandoned and refused requests and a top-up, /api/account, /api/transactions, /api/usage, /v1/generation and /v1/auth/key agree', async () => {
      const g = await startGateway({ store, api: true, balance: 10 });
      gateway = g;
      const second = await createKey(g, 'Batch');
      const at: number[] = [];
      const ids: string[] = [];
      const step = async (send: () => Promise<string>) => {
        at.push(g.clock.now());
        ids.push(await send());
        g.clock.advance(1000);
      };
      for (let i = 0; i < 3; i++) {
        await step(async () => {
          const res = await complete(g, g.proxyKey, chat());
          expect(res.status).toBe(200);
          return res.requestId;
        });
      }
      for (let i = 0; i < 2; i++) {
        await step(async () => {
          const res = await complete(g, second.key, chat({ model: 'mock-family-a', stream: true }));
          expect(res.status).toBe(200);
          return res.requestId;
        });
      }
      await step(() => abandonedStream(g, g.proxyKey));
      // Refused before the upstream: an id on the answer, nothing in the ledger.
      const refused = await complete(g, g.proxyKey, chat({ model: 'no-such-model' }));
      expect(refused).toEqual({ status: 404, requestId: expect.stringMatching(REQUEST_ID) });
      await g.proxy.drain();
      const creditAt = g.clock.now();
      const credit = { reference: 'pay_001', note: 'card top-up', now: creditAt };
      // A webhook delivered twice pays once.
      expect((await creditBalance(store, g.account.id, 5, credit))?.applied).toBe(true);
      expect((await creditBalance(store, g.account.id, 5, credit))?.applied).toBe(false);
      for (const id of ids) expect(id).toMatch(REQUEST_ID);
      expect(new Set([...ids, refused.requestId]).size).toBe(7);

      const costs = [COST, COST, COST, COST, COST, ABORTED_STREAM_COST];
      const keys = [g.proxyKeyId, g.proxyKeyId, g.proxyKeyId, second.id, second.id, g.proxyKeyId];
      const models = ['mock-model', 'mock-model', 'mock-model', 'mock-family-a', 'mock-family-a', 'mock-model'];
      const balances: number[] = [];
      let running = 10;
      for (const cost of costs) {
        running = roundUsd(running - cost);
        balances.push(running);
      }
      const balance = roundUsd(running + 5);
      const usageEntries = costs.map((cost, i) => ({
        id: expect.any(Number),
        type: 'usage',
        amount: -cost,
        balanceAfter: balances[i],
        keyId: keys[i],
        model: models[i],
        // The abandoned stream ended before its usage chunk: no tokens reported, charged its reservation.
        promptTokens: i === 5 ? 0 : 12,
        completionTokens: i === 5 ? 0 : 8,
        requestId: ids[i],
        reference: null,
        createdAt: isoTime(at[i] as number),
      }));
      const creditEntry = {
        id: expect.any(Number),
        type: 'credit',
        amount: 5,
        balanceAfter: balance,
        keyId: null,
        model: null,
        promptTokens: null,
        completionTokens: null,
        requestId: null,
        reference: 'pay_001',
        createdAt: isoTime(creditAt),
      };
      const opening = { ...creditEntry, amount: 10, balanceAfter: 10, reference: 'opening', createdAt: isoTime(g.account.createdAt) };

      expect(await get(`${g.apiUrl}/account`, g.billingKey)).toEqual(
        ok({ id: g.account.id, balance, reserved: 0, available: balance, isFreeTier: false, createdAt: isoTime(g.account.createdAt) }),
      );

      const transactions = await get(`${g.apiUrl}/transactions`, g.billingKey);
      expect(transactions).toEqual(ok({ transactions: [creditEntry, ...[...usageEntries].reverse(), opening], has_more: false }));
      const entries = (transactions.body as { transactions: PublicLedgerEntry[] }).transactions;
      const entryIds = entries.map((entry) => entry.id);
      expect(entryIds).toEqual([...entryIds].sort((a, b) => b - a));
      expect(roundUsd(entries.reduce((sum, entry) => sum + entry.amount, 0))).toBe(balance);

      // The first key's usage, two at a time with the cursor.
      const firstPage = await get(`${g.apiUrl}/transactions?type=usage&key_id=${g.proxyKeyId}&limit=2`, g.billingKey);
      expect(firstPage).toEqual(ok({ transactions: [usageEntries[5], usageEntries[2]], has_more: true }));
      const cursor = (firstPage.body as { transactions: PublicLedgerEntry[] }).transactions[1]?.id;
      expect(await get(`${g.apiUrl}/transactions?type=usage&key_id=${g.proxyKeyId}&limit=2&before=${cursor}`, g.billingKey)).toEqual(
        ok({ transactions: [usageEntries[1], usageEntries[0]], has_more: false }),
      );
      expect(await get(`${g.apiUrl}/transactions?type=credit`, g.billingKey)).toEqual(
        ok({ transactions: [creditEntry, opening], has_more: false }),
      );

      const firstKeyCost = roundUsd(3 * COST + ABORTED_STREAM_COST);
      const total = { requests: 6, promptTokens: 60, completionTokens: 40, cost: roundUsd(5 * COST + ABORTED_STREAM_COST) };
      expect(await get(`${g.apiUrl}/usage?group_by=key,model`, g.billingKey)).toEqual(
        ok({
          usage: [
            { keyId: g.proxyKeyId, model: 'mock-model', requests: 4, promptTokens: 36, completionTokens: 24, cost: firstKeyCost },
            { keyId: second.id, model: 'mock-family-a', requests: 2, promptTokens: 24, completionTokens: 16, cost: roundUsd(2 * COST) },
          ],
          total,
        }),
      );
      expect(await get(`${g.apiUrl}/usage`, g.billingKey)).toEqual(ok({ usage: [{ date: '2026-11-22', ...total }], total }));
      const usageOnly = entries.filter((entry) => entry.type === 'usage');
      expect(-roundUsd(usageOnly.reduce((sum, entry) => sum + entry.amount, 0))).toBe(total.cost);

      // Each request's entry through /v1/generation, for the key that made it, by its X-Request-Id.
      for (const [i, requestId] of ids.entries()) {
        const key = keys[i] === second.id ? second.key : g.proxyKey;
        expect(await get(`${g.url}/generation?id=${requestId}`, key)).toEqual(ok(usageEntries[i]));
      }
      const missing = (id: string) => ({
        status: 404,
        headers: JSON_HEADERS,
        body: {
          error: {
            message: `No generation with id ${id} for this API key`,
            type: 'not_found_error',
            code: 'generation_not_found',
            param: 'id',
          },
        },
      });
      expect(await get(`${g.url}/generation?id=${refused.requestId}`, g.proxyKey)).toEqual(missing(refused.requestId));
      expect(await get(`${g.url}/generation?id=${ids[3]}`, g.proxyKey)).toEqual(missing(ids[3] as string));

      const keyInfo = (await get(`${g.url}/auth/key`, g.proxyKey)).body as { data: { usage: number; limit: number } };
      expect({ usage: keyInfo.data.usage, limit: keyInfo.data.limit }).toEqual({ usage: firstKeyCost, limit: balance });
      const secondInfo = (await get(`${g.url}/auth/key`, second.key)).body as { data: { usage: number; limit: number } };
      expect({ usage: secondInfo.data.usage, limit: secondInfo.data.limit }).toEqual({ usage: roundUsd(2 * COST), limit: balance });
    }, 30_000);

    it('pages through 10,000 entries with before, each exactly once, newest first', async () => {
      const g = await startGateway({ store, api: true, balance: 0 });
      gateway = g;
      const total = 10_000;
      const write = (i: number) =>
        i % 10 === 0
          ? store.changeBalance({
              accountId: g.account.id,
              type: 'credit',
              amount: 1,
              reference: `pay_${i}`,
              note: null,
              now: g.clock.now() + i,
            })
          : store.settleSpend({
              keyId: g.proxyKeyId,
              accountId: g.account.id,
              holdId: null,
              cost: 0.001,
              period: null,
              now: g.clock.now() + i,
              usage: { model: 'mock-model', promptTokens: 1, completionTokens: 1, requestId: `req_bulk_${i}`, upstreamId: null },
            });
      for (let start = 0; start < total; start += 100) {
        await Promise.all(Array.from({ length: 100 }, (_, j) => write(start + j)));
      }
      const seen: number[] = [];
      let before: number | undefined;
      let pages = 0;
      for (;;) {
        const page = await get(`${g.apiUrl}/transactions?limit=1000${before === undefined ? '' : `&before=${before}`}`, g.billingKey);
        expect(page.status).toBe(200);
        const { transactions, has_more } = page.body as { transactions: PublicLedgerEntry[]; has_more: boolean };
        seen.push(...transactions.map((entry) => entry.id));
        pages++;
        if (!has_more) break;
        expect(transactions).toHaveLength(1000);
        before = transactions.at(-1)?.id;
      }
      expect({ pages, entries: seen.length, distinct: new Set(seen).size }).toEqual({ pages: 10, entries: total, distinct: total });
      expect(seen).toEqual([...seen].sort((a, b) => b - a));
    }, 120_000);

    it("never shows another account's account, entries, usage, requests or key, and answers its key id as it answers one that does not exist", async () => {
      const g = await startGateway({ store, api: true, balance: 10 });
      gateway = g;
      expect((await complete(g, g.proxyKey, chat())).status).toBe(200);
      await g.proxy.drain();
      const other = await seedAccount(store, { hasher: fastHasher(), balance: 3, now: g.clock.now() });
      const theirs = ((await get(`${g.apiUrl}/transactions`, g.billingKey)).body as { transactions: PublicLedgerEntry[] }).transactions;
      const opening = {
        id: expect.any(Number),
        type: 'credit',
        amount: 3,
        balanceAfter: 3,
        keyId: null,
        model: null,
        promptTokens: null,
        completionTokens: null,
        requestId: null,
        reference: 'opening',
        createdAt: isoTime(g.clock.now()),
      };
      const createdAt = isoTime(g.clock.now());
      expect(await get(`${g.apiUrl}/account`, other.billingKey)).toEqual(
        ok({ id: other.account.id, balance: 3, reserved: 0, available: 3, isFreeTier: false, createdAt }),
      );
      expect(await get(`${g.apiUrl}/transactions`, other.billingKey)).toEqual(ok({ transactions: [opening], has_more: false }));
      const empty = ok({ transactions: [], has_more: false });
      expect(await get(`${g.apiUrl}/transactions?key_id=${g.proxyKeyId}`, other.billingKey)).toEqual(empty);
      expect(await get(`${g.apiUrl}/transactions?key_id=999999`, other.billingKey)).toEqual(empty);
      // A cursor past the other account's newest entry still reads only this account's.
      const newestOfTheirs = Math.max(...theirs.map((entry) => entry.id));
      expect(await get(`${g.apiUrl}/transactions?before=${newestOfTheirs + 1000}`, other.billingKey)).toEqual(
        ok({ transactions: [opening], has_more: false }),
      );
      const mine = (theirs.find((entry) => entry.type === 'usage') as PublicLedgerEntry).requestId as string;
      expect(await get(`${g.url}/generation?id=${mine}`, other.proxyKey)).toEqual({
        status: 404,
        headers: JSON_HEADERS,
        body: {
          error: {
            message: `No generation with id ${mine} for this API key`,
            type: 'not_found_error',
            code: 'generation_not_found',
            param: 'id',
          },
        },
      });
      expect((await get(`${g.url}/generation?id=${mine}`, g.proxyKey)).status).toBe(200);
      const zero = { requests: 0, promptTokens: 0, completionTokens: 0, cost: 0 };
      expect(await get(`${g.apiUrl}/usage?group_by=day,key,model`, other.billingKey)).toEqual(ok({ usage: [], total: zero }));
      // And the first account still sees its own.
      expect((await get(`${g.apiUrl}/usage`, g.billingKey)).body).toEqual({
        usage: [{ date: '2026-11-22', requests: 1, promptTokens: 12, completionTokens: 8, cost: COST }],
        total: { requests: 1, promptTokens: 12, completionTokens: 8, cost: COST },
      });
    }, 30_000);
  });
}

describe('settlements the store fails', () => {
  it('are retried, whether the store failed before writing or wrote and lost its answer, and each written once, as every route shows', async () => {
    const store = new MemoryKeyStore();
    const settle = store.settleSpend.bind(store);
    const attempts = new Map<string, number>();
    // Each request's first attempt fails before the store writes anything; its second is written,
    // then its answer is lost (a connection reset after the write); its third finds it written.
    store.settleSpend = async (settlement) => {
      const id = settlement.usage?.requestId ?? '';
      const attempt = (attempts.get(id) ?? 0) + 1;
      attempts.set(id, attempt);
      if (attempt === 1) throw new Error('connection reset before the write');
      const entry = await settle(settlement);
      if (attempt === 2) throw new Error('connection reset after the write');
      return entry;
    };
    const g = await startGateway({ store, api: true, balance: 10 });
    try {
      const json = await complete(g, g.proxyKey, chat());
      const stream = await complete(g, g.proxyKey, chat({ model: 'mock-family-a', stream: true }));
      expect([json.status, stream.status]).toEqual([200, 200]);
      const left = await abandonedStream(g, g.proxyKey);
      await g.proxy.drain();
      expect(Object.fromEntries(attempts)).toEqual({ [json.requestId]: 3, [stream.requestId]: 3, [left]: 3 });
      expect(g.logger.lines.filter((line) => line.includes('reconcile by hand'))).toEqual([]);
      await expectSettledOnceThroughRoutes(g, 10, [
        { requestId: json.requestId, model: 'mock-model', cost: COST, promptTokens: 12, completionTokens: 8 },
        { requestId: stream.requestId, model: 'mock-family-a', cost: COST, promptTokens: 12, completionTokens: 8 },
        { requestId: left, model: 'mock-model', cost: ABORTED_STREAM_COST, promptTokens: 0, completionTokens: 0 },
      ]);
    } finally {
      await g.close();
    }
  }, 30_000);
});

describe('GET /api/usage after retention trimmed the ledger', () => {
  it('still counts the requests whose entries were trimmed: it reads the counters, not the ledger', async () => {
    const g = await startGateway({ store: new MemoryKeyStore({ ledgerRetentionDays: 1 }), api: true, balance: 10 });
    try {
      const first = await complete(g, g.proxyKey, chat());
      await g.proxy.drain();
      g.clock.advance(2 * 86_400_000);
      // The next write trims the account's entries older than a day: the opening credit and the first request's.
      const second = await complete(g, g.proxyKey, chat({ model: 'mock-family-a' }));
      await g.proxy.drain();
      expect([first.status, second.status]).toEqual([200, 200]);
      const transactions = (await get(`${g.apiUrl}/transactions`, g.billingKey)).body as { transactions: PublicLedgerEntry[] };
      expect(transactions.transactions.map((entry) => entry.requestId)).toEqual([second.requestId]);
      expect(await get(`${g.url}/generation?id=${first.requestId}`, g.proxyKey)).toEqual({
        status: 404,
        headers: JSON_HEADERS,
        body: {
          error: {
            message: `No generation with id ${first.requestId} for this API key`,
            type: 'not_found_error',
            code: 'generation_not_found',
            param: 'id',
          },
        },
      });
      const one = { requests: 1, promptTokens: 12, completionTokens: 8, cost: COST };
      expect(await get(`${g.apiUrl}/usage?from=2026-11-22&to=2026-11-24&group_by=day,model`, g.billingKey)).toEqual(
        ok({
          usage: [
            { date: '2026-11-22', model: 'mock-model', ...one },
            { date: '2026-11-24', model: 'mock-family-a', ...one },
          ],
          total: { requests: 2, promptTokens: 24, completionTokens: 16, cost: roundUsd(2 * COST) },
        }),
      );
      const balance = roundUsd(10 - 2 * COST);
      expect(await get(`${g.apiUrl}/account`, g.billingKey)).toEqual(
        ok({ id: g.account.id, balance, reserved: 0, available: balance, isFreeTier: false, createdAt: isoTime(g.account.createdAt) }),
      );
    } finally {
      await g.close();
    }
  });
});

describe('account API refusals', () => {
  let gateway: Gateway;
  beforeAll(async () => {
    gateway = await startGateway({ api: true });
  });
  afterAll(async () => {
    await gateway.close();
  });

  const bad = (message: string, param: string) => ({
    status: 400,
    headers: JSON_HEADERS,
    body: { error: { message, type: 'invalid_request_error', code: 'invalid_request', param } },
  });
  const LIMIT = 'limit must be an integer from 1 to 1000';
  const FROM = 'from must be a UTC date YYYY-MM-DD, e.g. 2026-11-01';
  const TO = 'to must be a UTC date YYYY-MM-DD, e.g. 2026-11-01';
  const GROUP_BY = 'group_by must list any of day, key, model, each once, separated by commas';
  const TYPE = 'type must be one of usage, credit, adjustment';

  it.each([
    ['/transactions?limit=0', LIMIT, 'limit'],
    ['/transactions?limit=1001', LIMIT, 'limit'],
    ['/transactions?limit=-1', LIMIT, 'limit'],
    ['/transactions?limit=1.5', LIMIT, 'limit'],
    ['/transactions?limit=ten', LIMIT, 'limit'],
    ['/transactions?limit=', LIMIT, 'limit'],
    ['/transactions?limit=10&limit=20', 'limit may be given once', 'limit'],
    ['/transactions?before=9&before=5', 'before may be given once', 'before'],
    ['/transactions?key_id=1&key_id=2', 'key_id may be given once', 'key_id'],
    ['/transactions?type=usage&type=credit', 'type may be given once', 'type'],
    ['/usage?from=2026-11-01&from=2026-11-02', 'from may be given once', 'from'],
    ['/usage?to=2026-11-21&to=2026-11-22', 'to may be given once', 'to'],
    ['/usage?group_by=day&group_by=key', 'group_by may be given once', 'group_by'],
    ['/transactions?before=0', 'before must be a positive integer', 'before'],
    ['/transactions?before=-5', 'before must be a positive integer', 'before'],
    ['/transactions?before=1e3', 'before must be a positive integer', 'before'],
    ['/transactions?before=99999999999999999', 'before must be a positive integer', 'before'],
    ['/transactions?before=', 'before must be a positive integer', 'before'],
    ['/transactions?key_id=abc', 'key_id must be a positive integer', 'key_id'],
    ['/transactions?key_id=0', 'key_id must be a positive integer', 'key_id'],
    ['/transactions?type=refund', TYPE, 'type'],
    ['/transactions?type=USAGE', TYPE, 'type'],
    ['/transactions?type=', TYPE, 'type'],
    ['/transactions?page=2', 'Unknown query parameter page', 'page'],
    ['/usage?from=2026-02-30', FROM, 'from'],
    ['/usage?from=2026-1-01', FROM, 'from'],
    ['/usage?from=20261101', FROM, 'from'],
    ['/usage?from=1969-12-31', FROM, 'from'],
    ['/usage?from=', FROM, 'from'],
    ['/usage?to=2026-13-01', TO, 'to'],
    ['/usage?to=2026-11-22T00:00:00Z', TO, 'to'],
    ['/usage?from=2026-11-23&to=2026-11-22', 'from must not be after to (2026-11-22)', 'from'],
    ['/usage?from=2026-11-23', 'from must not be after to (2026-11-22)', 'from'],
    ['/usage?from=2025-11-20&to=2026-11-21', 'from and to may span at most 366 days (both included)', 'from'],
    ['/usage?group_by=week', GROUP_BY, 'group_by'],
    ['/usage?group_by=day,day', GROUP_BY, 'group_by'],
    ['/usage?group_by=day,', GROUP_BY, 'group_by'],
    ['/usage?group_by=Day', GROUP_BY, 'group_by'],
    ['/usage?group_by=', GROUP_BY, 'group_by'],
    ['/usage?limit=10', 'Unknown query parameter limit', 'limit'],
    ['/account?verbose=1', 'Unknown query parameter verbose', 'verbose'],
  ])('GET /api%s answers 400 naming the parameter', async (path, message, param) => {
    expect(await get(`${gateway.apiUrl}${path}`, gateway.billingKey)).toEqual(bad(message, param));
  });

  it('reads 366 days at most, both ends included, and the last 30 by default', async () => {
    const start = gateway.clock.now();
    expect((await complete(gateway, gateway.proxyKey, chat())).status).toBe(200);
    await gateway.proxy.drain();
    const today = { requests: 1, promptTokens: 12, completionTokens: 8, cost: COST };
    const zero = { requests: 0, promptTokens: 0, completionTokens: 0, cost: 0 };
    // 2025-11-22 to 2026-11-21: 365 days; to 2026-11-22, 366 (both ends included).
    expect(await get(`${gateway.apiUrl}/usage?from=2025-11-21&to=2026-11-21`, gateway.billingKey)).toEqual(ok({ usage: [], total: zero }));
    expect(await get(`${gateway.apiUrl}/usage?from=2025-11-22&to=2026-11-22&group_by=model`, gateway.billingKey)).toEqual(
      ok({ usage: [{ model: 'mock-model', ...today }], total: today }),
    );
    expect(await get(`${gateway.apiUrl}/usage?from=2026-11-22&to=2026-11-22`, gateway.billingKey)).toEqual(
      ok({ usage: [{ date: '2026-11-22', ...today }], total: today }),
    );
    try {
      // 29 days on, the default window (the last 30 days, today included) still starts on the request's day; a day later it does not.
      gateway.clock.set(start + 29 * 86_400_000);
      expect(await get(`${gateway.apiUrl}/usage`, gateway.billingKey)).toEqual(
        ok({ usage: [{ date: '2026-11-22', ...today }], total: today }),
      );
      gateway.clock.set(start + 30 * 86_400_000);
      expect(await get(`${gateway.apiUrl}/usage`, gateway.billingKey)).toEqual(ok({ usage: [], total: zero }));
      expect(await get(`${gateway.apiUrl}/usage?to=2026-11-22`, gateway.billingKey)).toEqual(
        ok({ usage: [{ date: '2026-11-22', ...today }], total: today }),
      );
    } finally {
      gateway.clock.set(start);
    }
  });

  it('answers 405 with Allow to anything but GET and HEAD, and 401 wrong_key_type to a proxy key', async () => {
    for (const route of ['account', 'transactions', 'usage']) {
      const res = await fetch(`${gateway.apiUrl}/${route}`, { method: 'POST', headers: { authorization: `Bearer ${gateway.billingKey}` } });
      expect({ status: res.status, allow: res.headers.get('allow'), body: await res.json() }).toEqual({
        status: 405,
        allow: 'GET, HEAD',
        body: { error: { message: 'POST is not supported on this route', type: 'invalid_request_error', code: 'method_not_allowed' } },
      });
      const wrongKey = await fetch(`${gateway.apiUrl}/${route}`, { headers: { authorization: `Bearer ${gateway.proxyKey}` } });
      expect({ status: wrongKey.status, body: await wrongKey.json() }).toEqual({
        status: 401,
        body: {
          error: {
            message: 'This endpoint needs a billing key (mk-). Proxy keys (ms-) only work with the inference API (/v1).',
            type: 'authentication_error',
            code: 'wrong_key_type',
          },
        },
      });
    }
  });
});
