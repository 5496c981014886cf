/**
 * The ledger invariants of the several-processes tests (Redis and PostgreSQL), checked through the
 * HTTP routes a user reads them with, never through the store: every gateway process proxies JSON
 * requests, whole streams and streams their client leaves after the first chunk, all at once,
 * while top-ups (some delivered twice) land from the test's own connection. Then, on every process,
 * `GET /api/account`, `/api/transactions` (paged with `before`), `/api/usage`, `GET /v1/generation`
 * and `GET /v1/auth/key` must agree with each other and with what each request cost:
 * balance = initial + credits − Σ costs, Σ entry amounts = the balance, every entry's `balanceAfter`
 * replays in one serial order, one `usage` entry per request (by its `X-Request-Id`), usage
 * totals = Σ usage entries, each key's `usage` = Σ its entries.
 */
import { expect } from 'vitest';
import { creditBalance } from '../../src/keys/accounts.js';
import { isoTime } from '../../src/keys/public-key.js';
import type { PublicLedgerEntry } from '../../src/keys/public-ledger-entry.js';
import type { KeyHasher, KeyStore } from '../../src/index.js';
import { roundUsd } from '../../src/store/spend-rules.js';
import { seedAccount } from '../helpers.js';
import { chat, deferred } from '../proxy/harness.js';
import type { MockUpstream } from '../proxy/mock-upstream.js';

/** What a gateway process of either test file offers this scenario. */
export interface RoutesGateway {
  /** `http://127.0.0.1:<port>/v1` */
  v1: string;
  /** `http://127.0.0.1:<port>/api` */
  api: string;
  /** What the process wrote to stderr: the scenario takes out the warnings it expects. */
  stderr: string[];
}

/** The test file's store (for seeding and top-ups only), processes and mock upstream. */
export interface LedgerRoutesWorld {
  store: KeyStore;
  hasher: KeyHasher;
  /** The fixed clock of the running processes (GATEWAY_NOW). */
  now: number;
  mock: MockUpstream;
  /** The running processes, each serving `POST /drain`: at least two. */
  gateways: readonly RoutesGateway[];
}

const JSON_REQUESTS = 30;
const STREAMS = 18;
const LEFT_STREAMS = 9;
/** Top-up deliveries: each of the references arrives twice. */
const REFERENCES = 5;
const INITIAL = 100;
/** 12 prompt + 8 completion tokens at the mock price. */
const COST = 0.028;
/** A stream its client leaves before the usage chunk is charged its reservation: 24 estimated prompt + 100 output tokens. */
const LEFT_STREAM_COST = 0.236;

/** One request as the client saw it, and the entry it must have. */
interface Sent {
  requestId: string;
  keyId: number;
  model: string;
  amount: number;
  promptTokens: number;
  completionTokens: number;
}

async function getJson(url: string, key: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${key}` } });
  return { status: res.status, body: await res.json() };
}

function postChat(gateway: RoutesGateway, key: string, body: Record<string, unknown>, signal?: AbortSignal): Promise<Response> {
  return fetch(`${gateway.v1}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...(signal && { signal }),
  });
}

/** Resolves once `count` of `closed` have resolved. */
function closedCount(closed: readonly Promise<void>[], count: number): Promise<void> {
  return new Promise((resolve) => {
    let done = 0;
    if (count === 0) resolve();
    for (const promise of closed) {
      promise.then(() => {
        done++;
        if (done === count) resolve();
      });
    }
  });
}

/** Runs the scenario of the module's comment on `world`. */
export async function ledgerInvariantsThroughRoutes(world: LedgerRoutesWorld): Promise<void> {
  const { store, mock, gateways } = world;
  const on = (i: number) => gateways[i % gateways.length] as RoutesGateway;
  const logged = gateways.map((g) => g.stderr.length);
  const seeded = await seedAccount(store, { hasher: world.hasher, balance: INITIAL, now: world.now });
  const created = await fetch(`${on(1).api}/keys`, {
    method: 'POST',
    headers: { authorization: `Bearer ${seeded.billingKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'Batch' }),
  });
  expect(created.status).toBe(201);
  const second = (await created.json()) as { id: number; key: string };

  // Every stream is held after its first chunk: the ones whose client leaves are left while held,
  // so each is cut short (charged its reservation), and the others end once the test lets them go.
  const hold = deferred();
  mock.behaviour = { holdAfterFirstChunk: hold.promise };
  const firstClosed = mock.closed.length;
  let sent: Sent[] = [];
  let streamBodies: Promise<string>[] = [];
  try {
    const json = Array.from({ length: JSON_REQUESTS }, async (_, i): Promise<Sent> => {
      const res = await postChat(on(i), seeded.proxyKey, chat());
      expect(res.status).toBe(200);
      await res.json();
      return {
        requestId: res.headers.get('x-request-id') as string,
        keyId: seeded.proxyKeyId,
        model: 'mock-model',
        amount: -COST,
        promptTokens: 12,
        completionTokens: 8,
      };
    });
    const streams = Array.from({ length: STREAMS }, async (_, i): Promise<{ sent: Sent; body: Promise<string> }> => {
      const res = await postChat(on(i + 1), second.key, chat({ model: 'mock-family-a', stream: true }));
      expect(res.status).toBe(200);
      const sentStream = {
        requestId: res.headers.get('x-request-id') as string,
        keyId: second.id,
        model: 'mock-family-a',
        amount: -COST,
        promptTokens: 12,
        completionTokens: 8,
      };
      return { sent: sentStream, body: res.text() };
    });
    const left = Array.from({ length: LEFT_STREAMS }, async (_, i): Promise<Sent> => {
      const controller = new AbortController();
      const res = await postChat(on(i + 2), seeded.proxyKey, chat({ stream: true }), controller.signal);
      expect(res.status).toBe(200);
      await (res.body as ReadableStream<Uint8Array>).getReader().read();
      controller.abort();
      return {
        requestId: res.headers.get('x-request-id') as string,
        keyId: seeded.proxyKeyId,
        model: 'mock-model',
        amount: -LEFT_STREAM_COST,
        promptTokens: 0,
        completionTokens: 0,
      };
    });
    const credits = Array.from({ length: 2 * REFERENCES }, (_, i) =>
      creditBalance(store, seeded.account.id, 2, { reference: `pay_${i % REFERENCES}`, note: null, now: world.now }),
    );
    const [jsonSent, streamsSent, leftSent, credited] = await Promise.all([
      Promise.all(json),
      Promise.all(streams),
      Promise.all(left),
      Promise.all(credits),
    ]);
    expect(credited.filter((answer) => answer?.applied)).toHaveLength(REFERENCES);
    // Every request reached the mock; the JSON answers ended, and the gateways cut the left streams
    // off upstream once they saw their clients go: then (not before) the held streams may end.
    await closedCount(mock.closed.slice(firstClosed), JSON_REQUESTS + LEFT_STREAMS);
    sent = [...jsonSent, ...streamsSent.map((s) => s.sent), ...leftSent];
    streamBodies = streamsSent.map((s) => s.body);
  } finally {
    hold.resolve();
    mock.behaviour = {};
  }
  for (const body of await Promise.all(streamBodies)) expect(body.endsWith('data: [DONE]\n\n')).toBe(true);
  for (const gateway of gateways) {
    expect((await fetch(`${gateway.api.replace(/\/api$/, '')}/drain`, { method: 'POST' })).status).toBe(204);
  }
  expect(new Set(sent.map((s) => s.requestId)).size).toBe(JSON_REQUESTS + STREAMS + LEFT_STREAMS);
  // Each process warned once of each stream it charged at its reservation, and of nothing else;
  // the file's last test checks the processes logged nothing more.
  for (const [i, gateway] of gateways.entries()) {
    const leftHere = Array.from({ length: LEFT_STREAMS }, (_, j) => (j + 2) % gateways.length).filter((g) => g === i).length;
    expect(gateway.stderr.splice(logged[i] as number)).toEqual(
      Array.from(
        { length: leftHere },
        () =>
          'warn: modelswitch-keys: the answer of upstream mock for model mock-model ended early (client disconnected) before it reported usage; charged the reserved maximum',
      ),
    );
  }

  // The whole ledger, 7 entries a page, each page from the next process.
  const entries: PublicLedgerEntry[] = [];
  let before: number | undefined;
  for (let page = 0; ; page++) {
    const query = `limit=7${before === undefined ? '' : `&before=${before}`}`;
    const answer = await getJson(`${on(page).api}/transactions?${query}`, seeded.billingKey);
    expect(answer.status).toBe(200);
    const body = answer.body as { transactions: PublicLedgerEntry[]; has_more: boolean };
    entries.push(...body.transactions);
    if (!body.has_more) break;
    before = body.transactions.at(-1)?.id;
  }
  expect(new Set(entries.map((e) => e.id)).size).toBe(entries.length);
  const usage = entries.filter((e) => e.type === 'usage');
  // One usage entry per request, with its key, model, tokens and cost.
  expect(usage.map((e) => e.requestId).sort()).toEqual(sent.map((s) => s.requestId).sort());
  for (const s of sent) {
    const entry = usage.find((e) => e.requestId === s.requestId);
    expect(entry).toEqual({
      id: expect.any(Number),
      type: 'usage',
      amount: s.amount,
      balanceAfter: expect.any(Number),
      keyId: s.keyId,
      model: s.model,
      promptTokens: s.promptTokens,
      completionTokens: s.completionTokens,
      requestId: s.requestId,
      reference: null,
      createdAt: isoTime(world.now),
    });
  }
  expect(
    entries
      .filter((e) => e.type !== 'usage')
      .map((e) => [e.type, e.reference, e.amount])
      .sort(),
  ).toEqual([['credit', 'opening', INITIAL], ...Array.from({ length: REFERENCES }, (_, i) => ['credit', `pay_${i}`, 2])].sort());

  // One serial order: in id order, each balanceAfter is the one before plus its own amount.
  const ordered = [...entries].sort((a, b) => a.id - b.id);
  expect(ordered[0]).toMatchObject({ reference: 'opening', amount: INITIAL, balanceAfter: INITIAL });
  for (let i = 1; i < ordered.length; i++) {
    const [previous, current] = [ordered[i - 1] as PublicLedgerEntry, ordered[i] as PublicLedgerEntry];
    expect(current.balanceAfter, `entry ${current.id}`).toBeCloseTo(previous.balanceAfter + current.amount, 9);
  }
  const spent = roundUsd(-sent.reduce((total, s) => total + s.amount, 0));
  expect(spent).toBe(roundUsd((JSON_REQUESTS + STREAMS) * COST + LEFT_STREAMS * LEFT_STREAM_COST));
  const balance = roundUsd(INITIAL + 2 * REFERENCES - spent);
  expect(roundUsd(entries.reduce((total, e) => total + e.amount, 0))).toBe(balance);
  expect(roundUsd((ordered.at(-1) as PublicLedgerEntry).balanceAfter)).toBe(balance);

  // Every process shows the same account, and every key's /v1/auth/key agrees with it and with its entries.
  const spentBy = (keyId: number) => roundUsd(-usage.filter((e) => e.keyId === keyId).reduce((total, e) => total + e.amount, 0));
  for (const gateway of gateways) {
    const account = await getJson(`${gateway.api}/account`, seeded.billingKey);
    expect(account).toEqual({
      status: 200,
      body: {
        id: seeded.account.id,
        balance: expect.any(Number),
        reserved: 0,
        available: expect.any(Number),
        isFreeTier: false,
        createdAt: expect.any(String),
      },
    });
    const { balance: shown, available } = account.body as { balance: number; available: number };
    expect({ balance: roundUsd(shown), available: roundUsd(available) }).toEqual({ balance, available: balance });
    for (const [key, keyId] of [
      [seeded.proxyKey, seeded.proxyKeyId],
      [second.key, second.id],
    ] as const) {
      const info = await getJson(`${gateway.v1}/auth/key`, key);
      const data = (info.body as { data: { usage: number; limit: number } }).data;
      expect({ status: info.status, usage: roundUsd(data.usage), limit: roundUsd(data.limit) }).toEqual({
        status: 200,
        usage: spentBy(keyId),
        limit: balance,
      });
    }
  }
  expect(roundUsd(spentBy(seeded.proxyKeyId) + spentBy(second.id))).toBe(spent);

  // /api/usage reads counters, not the ledger: its totals must still be the usage entries'.
  const sum = (list: readonly PublicLedgerEntry[]) => ({
    requests: list.length,
    promptTokens: list.reduce((total, e) => total + (e.promptTokens ?? 0), 0),
    completionTokens: list.reduce((total, e) => total + (e.completionTokens ?? 0), 0),
    cost: roundUsd(-list.reduce((total, e) => total + e.amount, 0)),
  });
  const rounded = <T extends { cost: number }>(row: T): T => ({ ...row, cost: roundUsd(row.cost) });
  const total = sum(usage);
  expect(total).toEqual({
    requests: JSON_REQUESTS + STREAMS + LEFT_STREAMS,
    promptTokens: 12 * (JSON_REQUESTS + STREAMS),
    completionTokens: 8 * (JSON_REQUESTS + STREAMS),
    cost: spent,
  });
  for (const [i, gateway] of gateways.entries()) {
    const byKeyModel = await getJson(`${gateway.api}/usage?group_by=key,model`, seeded.billingKey);
    const body = byKeyModel.body as { usage: Array<{ keyId: number; model: string; cost: number }>; total: { cost: number } };
    expect({ status: byKeyModel.status, usage: body.usage.map(rounded), total: rounded(body.total) }, `process ${i}`).toEqual({
      status: 200,
      usage: [
        { keyId: seeded.proxyKeyId, model: 'mock-model', ...sum(usage.filter((e) => e.keyId === seeded.proxyKeyId)) },
        { keyId: second.id, model: 'mock-family-a', ...sum(usage.filter((e) => e.keyId === second.id)) },
      ],
      total,
    });
    const byDay = await getJson(`${gateway.api}/usage`, seeded.billingKey);
    const days = byDay.body as { usage: Array<{ cost: number }>; total: { cost: number } };
    expect({ status: byDay.status, usage: days.usage.map(rounded), total: rounded(days.total) }).toEqual({
      status: 200,
      usage: [{ date: new Date(world.now).toISOString().slice(0, 10), ...total }],
      total,
    });
  }

  // Each request's own entry through /v1/generation, for the key that made it, on any process.
  for (const [i, s] of sent.entries()) {
    const key = s.keyId === second.id ? second.key : seeded.proxyKey;
    expect(await getJson(`${on(i).v1}/generation?id=${s.requestId}`, key)).toEqual({
      status: 200,
      body: usage.find((e) => e.requestId === s.requestId),
    });
  }
}

/** What an in-process gateway (test/proxy/harness.ts, mounted with `api: true`) offers {@link expectSettledOnceThroughRoutes}. */
export interface RoutesHost {
  url: string;
  apiUrl: string;
  billingKey: string;
  proxyKey: string;
  proxyKeyId: number;
  account: { id: string };
}

/** A request of the host's proxy key the routes must show exactly once: its X-Request-Id, model, cost and tokens. */
export interface SettledRequest {
  requestId: string;
  model: string;
  cost: number;
  promptTokens: number;
  completionTokens: number;
}

/**
 * Checks through the routes, on an account opened with `initial` USD whose only spending is
 * `requests` (all made with the host's proxy key): `/api/transactions` has exactly one usage
 * entry per request and the opening credit, replaying in one serial order to the balance;
 * `/api/account`, `/api/usage` (by key and model, and by day), `/v1/auth/key` and each request's
 * `/v1/generation` agree with them.
 */
export async function expectSettledOnceThroughRoutes(
  host: RoutesHost,
  initial: number,
  requests: readonly SettledRequest[],
): Promise<void> {
  const spent = roundUsd(requests.reduce((total, r) => total + r.cost, 0));
  const balance = roundUsd(initial - spent);
  const page = await getJson(`${host.apiUrl}/transactions?limit=1000`, host.billingKey);
  expect(page.status).toBe(200);
  const { transactions, has_more } = page.body as { transactions: PublicLedgerEntry[]; has_more: boolean };
  expect(has_more).toBe(false);
  const usage = transactions.filter((e) => e.type === 'usage');
  expect(usage.map((e) => e.requestId).sort()).toEqual(requests.map((r) => r.requestId).sort());
  for (const r of requests) {
    expect(usage.find((e) => e.requestId === r.requestId)).toEqual({
      id: expect.any(Number),
      type: 'usage',
      amount: -r.cost,
      balanceAfter: expect.any(Number),
      keyId: host.proxyKeyId,
      model: r.model,
      promptTokens: r.promptTokens,
      completionTokens: r.completionTokens,
      requestId: r.requestId,
      reference: null,
      createdAt: expect.any(String),
    });
    expect(await getJson(`${host.url}/generation?id=${r.requestId}`, host.proxyKey)).toEqual({
      status: 200,
      body: usage.find((e) => e.requestId === r.requestId),
    });
  }
  expect(transactions.filter((e) => e.type !== 'usage').map((e) => [e.type, e.reference, e.amount])).toEqual([
    ['credit', 'opening', initial],
  ]);
  const ordered = [...transactions].sort((a, b) => a.id - b.id);
  for (let i = 1; i < ordered.length; i++) {
    const [previous, current] = [ordered[i - 1] as PublicLedgerEntry, ordered[i] as PublicLedgerEntry];
    expect(current.balanceAfter, `entry ${current.id}`).toBeCloseTo(previous.balanceAfter + current.amount, 9);
  }
  expect(roundUsd((ordered.at(-1) as PublicLedgerEntry).balanceAfter)).toBe(balance);
  expect(roundUsd(transactions.reduce((total, e) => total + e.amount, 0))).toBe(balance);

  const account = await getJson(`${host.apiUrl}/account`, host.billingKey);
  expect(account).toEqual({
    status: 200,
    body: { id: host.account.id, balance, reserved: 0, available: balance, isFreeTier: false, createdAt: expect.any(String) },
  });
  const info = await getJson(`${host.url}/auth/key`, host.proxyKey);
  const data = (info.body as { data: { usage: number; limit: number } }).data;
  expect({ status: info.status, usage: data.usage, limit: data.limit }).toEqual({ status: 200, usage: spent, limit: balance });

  const models = [...new Set(requests.map((r) => r.model))].sort();
  const sum = (list: readonly SettledRequest[]) => ({
    requests: list.length,
    promptTokens: list.reduce((total, r) => total + r.promptTokens, 0),
    completionTokens: list.reduce((total, r) => total + r.completionTokens, 0),
    cost: roundUsd(list.reduce((total, r) => total + r.cost, 0)),
  });
  const rounded = <T extends { cost: number }>(row: T): T => ({ ...row, cost: roundUsd(row.cost) });
  const byKeyModel = await getJson(`${host.apiUrl}/usage?group_by=key,model`, host.billingKey);
  const body = byKeyModel.body as { usage: Array<{ model: string; cost: number }>; total: { cost: number } };
  expect({ status: byKeyModel.status, usage: body.usage.map(rounded), total: rounded(body.total) }).toEqual({
    status: 200,
    usage: models.map((model) => ({ keyId: host.proxyKeyId, model, ...sum(requests.filter((r) => r.model === model)) })),
    total: sum(requests),
  });
}
