import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueKey } from '../../src/index.js';
import { PostgresKeyStore } from '../../src/store/postgres/index.js';
import type { LedgerEntry } from '../../src/store/types.js';
import { fastHasher, seedAccount, testClock } from '../helpers.js';
import { chat, deferred } from '../proxy/harness.js';
import { type MockUpstream, startTestUpstream } from '../proxy/mock-upstream.js';
import { type DeadGatewayWorld, releasedByASweeper, releasedByTheNextRequest } from './dead-gateway.js';
import { type GatewayProcess, startGatewayProcess, stopGatewayProcess } from './gateway-processes.js';
import { ledgerInvariantsThroughRoutes } from './ledger-through-routes.js';
import { COLLECTED_DATABASE_URL, DATABASE_URL, dropSchema, postgresSkipReason, testSchema } from './postgres-env.js';

const GATEWAY_SCRIPT = fileURLToPath(new URL('./postgres-gateway-process.ts', import.meta.url));

function headersOf(response: Response, names: string[]): Record<string, string | null> {
  return Object.fromEntries(names.map((name) => [name, response.headers.get(name)]));
}

/** The SSE body every admitted stream gets (the usage chunk the proxy asked for is not forwarded). */
function mockStream(): string {
  const chunk = (delta: object, finish: string | null) =>
    `data: ${JSON.stringify({
      id: 'chatcmpl-mock',
      object: 'chat.completion.chunk',
      created: 1700000000,
      model: 'mock-model',
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    })}\n\n`;
  return [
    chunk({ role: 'assistant', content: '' }, null),
    chunk({ content: 'Hello' }, null),
    chunk({ content: ' world' }, null),
    chunk({}, 'stop'),
    'data: [DONE]\n\n',
  ].join('');
}

describe.skipIf(!DATABASE_URL)(
  `three gateway processes sharing one PostgreSQL${postgresSkipReason ? ` (${postgresSkipReason})` : ''}`,
  () => {
    const url = COLLECTED_DATABASE_URL;
    const schema = testSchema();
    // Every process runs on this same fixed instant (GATEWAY_NOW): on the hour, so a 1 h window has 3600 s left.
    const clock = testClock(Date.parse('2026-11-22T12:00:00Z'));
    const hasher = fastHasher();
    const store = new PostgresKeyStore({ connectionString: url, schema });
    let upstream: MockUpstream | undefined;
    let gateways: GatewayProcess[] = [];
    /** Every child spawned, started or not. */
    const children: ChildProcess[] = [];

    beforeAll(async () => {
      const mock = await startTestUpstream();
      upstream = mock;
      // The three processes migrate the fresh schema as they start, all at once.
      gateways = await Promise.all(
        [0, 1, 2].map(() =>
          startGatewayProcess(
            GATEWAY_SCRIPT,
            { DATABASE_URL: url, GATEWAY_SCHEMA: schema, GATEWAY_UPSTREAM: mock.url, GATEWAY_NOW: String(clock.now()) },
            children,
          ),
        ),
      );
    }, 60_000);

    afterAll(async () => {
      try {
        await Promise.all(children.map(stopGatewayProcess));
        await upstream?.close();
      } finally {
        await store.close();
        await dropSchema(url, schema);
      }
    }, 30_000);

    /** A stream request on gateway `i % 3`, held by the mock until the test lets it go. */
    function stream(i: number, key: string): Promise<Response> {
      return fetch(`${(gateways[i % 3] as GatewayProcess).v1}/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: JSON.stringify(chat({ stream: true, max_tokens: 1000 })),
      });
    }

    /** Sends `count` held streams over the three processes, lets them go once all are answered, and reads the admitted ones. */
    async function heldStreams(count: number, key: string): Promise<{ admitted: Response[]; refused: Response[]; bodies: string[] }> {
      const mock = upstream as MockUpstream;
      const gate = deferred();
      mock.behaviour = { holdBeforeFirstChunk: gate.promise };
      let responses: Response[] = [];
      try {
        responses = await Promise.all(Array.from({ length: count }, (_, i) => stream(i, key)));
      } finally {
        // Whatever failed above, the held streams end (and settle) before the next test.
        gate.resolve();
        mock.behaviour = {};
      }
      const admitted = responses.filter((r) => r.status === 200);
      // Each process settles a stream before it ends it: once the bodies are read, the charges have landed.
      const bodies = await Promise.all(admitted.map((r) => r.text()));
      return { admitted, refused: responses.filter((r) => r.status !== 200), bodies };
    }

    /** The account's whole ledger, newest first, and whether it replays in one serial order to `balance`. */
    async function ledgerOf(accountId: string): Promise<LedgerEntry[]> {
      const entries = (await store.listLedger(accountId, { limit: 1000 })).entries;
      const ordered = [...entries].reverse();
      for (let i = 1; i < ordered.length; i++) {
        const [previous, current] = [ordered[i - 1] as LedgerEntry, ordered[i] as LedgerEntry];
        expect(current.balanceAfter, `entry ${current.id}`).toBeCloseTo(previous.balanceAfter + current.amount, 9);
      }
      return entries;
    }

    it('migrated the fresh schema once, though the three processes started at once', async () => {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        const { rows } = await client.query(`SELECT version FROM "${schema}".migrations`);
        expect(rows).toEqual([{ version: 1 }]);
      } finally {
        await client.end();
      }
      expect(await store.migrate()).toEqual({ applied: [], version: 1 });
    });

    it('a key created through one process works on the two others at once', async () => {
      const seeded = await seedAccount(store, { hasher, now: clock.now() });
      const created = await fetch(`${(gateways[0] as GatewayProcess).api}/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${seeded.billingKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'made on process 0' }),
      });
      expect(created.status).toBe(201);
      const { key } = (await created.json()) as { key: string };
      for (const gateway of gateways.slice(1)) {
        const info = await fetch(`${gateway.v1}/auth/key`, { headers: { authorization: `Bearer ${key}` } });
        expect({ status: info.status, body: await info.json() }).toEqual({
          status: 200,
          body: { data: expect.objectContaining({ label: 'made on process 0', usage: 0, limit: 10, is_free_tier: false }) },
        });
      }
    });

    it('a key deactivated or deleted through one process is refused at once by the two others, which had verified and cached it', async () => {
      const seeded = await seedAccount(store, { hasher, now: clock.now() });
      const auth = { authorization: `Bearer ${seeded.proxyKey}` };
      const statuses = async () => Promise.all(gateways.map(async (g) => (await fetch(`${g.v1}/auth/key`, { headers: auth })).status));
      expect(await statuses()).toEqual([200, 200, 200]);
      const manage = (gateway: GatewayProcess, method: string, body?: object) =>
        fetch(`${gateway.api}/keys/${seeded.proxyKeyId}`, {
          method,
          headers: { authorization: `Bearer ${seeded.billingKey}`, 'content-type': 'application/json' },
          ...(body && { body: JSON.stringify(body) }),
        });
      expect((await manage(gateways[0] as GatewayProcess, 'PATCH', { active: false })).status).toBe(200);
      for (const gateway of gateways.slice(1)) {
        const refused = await fetch(`${gateway.v1}/auth/key`, { headers: auth });
        expect({ status: refused.status, body: await refused.json() }).toEqual({
          status: 403,
          body: { error: { message: 'API key has been deactivated', type: 'permission_error', code: 'key_deactivated' } },
        });
      }
      expect((await manage(gateways[2] as GatewayProcess, 'PATCH', { active: true })).status).toBe(200);
      expect(await statuses()).toEqual([200, 200, 200]);
      expect((await manage(gateways[1] as GatewayProcess, 'DELETE')).status).toBe(200);
      expect(await statuses()).toEqual([401, 401, 401]);
    });

    it('a rate limit of 30 per hour admits exactly 30 of 90 concurrent requests spread over three processes', async () => {
      const seeded = await seedAccount(store, { hasher, now: clock.now() });
      const { key } = await issueKey(
        store,
        { accountId: seeded.account.id, type: 'proxy', name: 'burst', rateLimit: { requests: 30, interval: '1h' } },
        { hasher, now: clock.now() },
      );
      const responses = await Promise.all(
        Array.from({ length: 90 }, (_, i) =>
          fetch(`${(gateways[i % 3] as GatewayProcess).v1}/auth/key`, { headers: { authorization: `Bearer ${key}` } }),
        ),
      );
      const admitted = responses.filter((r) => r.status === 200);
      const refused = responses.filter((r) => r.status === 429);
      expect({ admitted: admitted.length, refused: refused.length }).toEqual({ admitted: 30, refused: 60 });
      // Each admitted request was counted once, in one shared window: the remaining counts are 29 down to 0, each once.
      expect(admitted.map((r) => Number(r.headers.get('ratelimit-remaining'))).sort((a, b) => a - b)).toEqual(
        Array.from({ length: 30 }, (_, i) => i),
      );
      for (const response of refused) {
        expect(headersOf(response, ['retry-after', 'ratelimit-limit', 'ratelimit-remaining'])).toEqual({
          'retry-after': '3600',
          'ratelimit-limit': '30',
          'ratelimit-remaining': '0',
        });
      }
    });

    it('45 concurrent streams over three processes never pass the key’s spend limit, and the ledger, usage and aggregates agree', async () => {
      const seeded = await seedAccount(store, { hasher, balance: 100, now: clock.now() });
      // Each request reserves its 1000 output tokens ($2.00) plus its estimated prompt ($0.037): 10 fit in $21, 11 do not.
      await store.updateKey(seeded.proxyKeyId, { limit: 21 });
      const { admitted, refused, bodies } = await heldStreams(45, seeded.proxyKey);
      expect({ admitted: admitted.length, refused: refused.map((r) => r.status) }).toEqual({
        admitted: 10,
        refused: Array.from({ length: 35 }, () => 403),
      });
      for (const response of refused) {
        expect(await response.json()).toEqual({
          error: {
            message: expect.stringMatching(
              /^This request could cost up to \$2\.0\d+, more than the \$[0-9.]+ left of this key's spend limit of \$21\./,
            ),
            type: 'permission_error',
            code: 'spend_limit_reached',
          },
        });
      }
      expect(bodies).toEqual(Array.from({ length: 10 }, () => mockStream()));
      // 12 prompt + 8 completion tokens at the mock price: $0.028 each, ten times.
      const key = await store.getKey(seeded.proxyKeyId);
      const account = await store.getAccount(seeded.account.id);
      expect({ keyReserved: key?.reserved, accountReserved: account?.reserved }).toEqual({ keyReserved: 0, accountReserved: 0 });
      expect(key?.usage).toBeCloseTo(0.28, 10);
      expect(account?.balance).toBeCloseTo(100 - 0.28, 10);
      const entries = await ledgerOf(seeded.account.id);
      const usage = entries.filter((e) => e.type === 'usage');
      expect(usage).toHaveLength(10);
      expect(usage.every((e) => e.keyId === seeded.proxyKeyId && Math.abs(e.amount + 0.028) < 1e-12)).toBe(true);
      expect(entries[0]?.balanceAfter).toBeCloseTo(account?.balance ?? Number.NaN, 10);
      const [day] = new Date(clock.now()).toISOString().split('T');
      const rows = await store.getUsage(seeded.account.id, { from: day as string, to: day as string });
      expect(rows.reduce((sum, row) => sum + row.requests, 0)).toBe(10);
      expect(rows.reduce((sum, row) => sum + row.cost, 0)).toBeCloseTo(0.28, 10);
    });

    it('45 concurrent streams over three processes never take an account below zero', async () => {
      // $5 holds two reservations of $2.037, not three.
      const seeded = await seedAccount(store, { hasher, balance: 5, now: clock.now() });
      const { admitted, refused, bodies } = await heldStreams(45, seeded.proxyKey);
      expect({ admitted: admitted.length, refused: refused.map((r) => r.status) }).toEqual({
        admitted: 2,
        refused: Array.from({ length: 43 }, () => 402),
      });
      for (const response of refused) {
        expect(((await response.json()) as { error: { code: string } }).error.code).toBe('insufficient_balance');
      }
      expect(bodies).toHaveLength(2);
      const account = await store.getAccount(seeded.account.id);
      expect(account?.reserved).toBe(0);
      expect(account?.balance).toBeCloseTo(5 - 0.056, 10);
      expect((await ledgerOf(seeded.account.id)).filter((e) => e.type === 'usage')).toHaveLength(2);
    });

    it('JSON requests, whole streams and streams their clients leave, over three processes at once with top-ups, keep every invariant as the routes show it', async () => {
      await ledgerInvariantsThroughRoutes({ store, hasher, now: clock.now(), mock: upstream as MockUpstream, gateways });
    }, 60_000);

    /** The dead-gateway scenario of dead-gateway.ts on this file's processes. */
    function deadGateway(): DeadGatewayWorld {
      const mock = upstream as MockUpstream;
      const env = { DATABASE_URL: url, GATEWAY_SCHEMA: schema, GATEWAY_UPSTREAM: mock.url };
      return {
        store,
        hasher,
        now: clock.now(),
        mock,
        start: (extra) => startGatewayProcess(GATEWAY_SCRIPT, { ...env, ...extra }, children),
        stop: stopGatewayProcess,
        running: gateways,
      };
    }

    it("a gateway killed with SIGKILL mid-stream pins the key's limit and the account's balance until its hold's deadline; then another process's next request releases it, once", async () => {
      await releasedByTheNextRequest(deadGateway());
    });

    it("a gateway killed with SIGKILL mid-stream: after the deadline another process's sweeper frees the key's full limit and the account's whole balance with no request at all", async () => {
      await releasedByASweeper(deadGateway());
    });

    it('the processes logged nothing and each exits cleanly once its stdin closes', async () => {
      const codes = await Promise.all(gateways.map((g) => stopGatewayProcess(g.child)));
      expect({ codes, stderr: gateways.map((g) => g.stderr) }).toEqual({ codes: [0, 0, 0], stderr: [[], [], []] });
    });
  },
);
