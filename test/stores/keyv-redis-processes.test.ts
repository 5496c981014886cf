import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyvKeyStore } from '../../src/store/keyv/keyv-store.js';
import type { LedgerEntry } from '../../src/store/types.js';
import { issueKey } from '../../src/index.js';
import { fastHasher, seedAccount, testClock } from '../helpers.js';
import { type MockUpstream, startTestUpstream } from '../proxy/mock-upstream.js';
import { chat, deferred } from '../proxy/harness.js';
import { type DeadGatewayWorld, releasedByASweeper, releasedByTheNextRequest } from './dead-gateway.js';
import { ledgerInvariantsThroughRoutes } from './ledger-through-routes.js';
import { REDIS_URL, redisKeyv, redisSkipReason, removeKeys, runPrefix } from './redis-env.js';

/** One gateway process (test/stores/redis-gateway-process.ts) and what it wrote to stderr. */
interface GatewayProcess {
  child: ChildProcess;
  /** `http://127.0.0.1:<port>/v1` */
  v1: string;
  /** `http://127.0.0.1:<port>/api` */
  api: string;
  stderr: string[];
}

const GATEWAY_SCRIPT = fileURLToPath(new URL('./redis-gateway-process.ts', import.meta.url));

/** Spawns a gateway process; `started` gets the child at once, so a failed start still gets stopped. */
async function startGatewayProcess(env: Record<string, string>, started: ChildProcess[]): Promise<GatewayProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', GATEWAY_SCRIPT], {
    env: { ...process.env, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  started.push(child);
  const stderr: string[] = [];
  createInterface({ input: child.stderr as NonNullable<ChildProcess['stderr']> }).on('line', (line) => stderr.push(line));
  const lines = createInterface({ input: child.stdout as NonNullable<ChildProcess['stdout']> });
  const exited = once(child, 'exit').then(([code]) => {
    throw new Error(`gateway process exited with ${code} before listening: ${stderr.join('\n')}`);
  });
  const [line] = (await Promise.race([once(lines, 'line'), exited])) as [string];
  const { port } = JSON.parse(line) as { port: number };
  return { child, v1: `http://127.0.0.1:${port}/v1`, api: `http://127.0.0.1:${port}/api`, stderr };
}

/**
 * Ends a gateway process the way it expects (stdin closes: it closes, drains and exits) and waits
 * until its output is closed too, so every line it wrote was read. One that has not ended after
 * 10 s is killed. Resolves with its exit code, or the signal that ended it.
 */
async function stopGatewayProcess(child: ChildProcess): Promise<number | string | null> {
  const ended = () => child.exitCode ?? child.signalCode;
  if (ended() !== null && child.stdout?.readableEnded !== false) return ended();
  const closed = once(child, 'close');
  child.stdin?.end();
  const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
  try {
    await closed;
  } finally {
    clearTimeout(timer);
  }
  return ended();
}

function headersOf(response: Response, names: string[]): Record<string, string | null> {
  return Object.fromEntries(names.map((name) => [name, response.headers.get(name)]));
}

const RATE_LIMIT_HEADERS = ['ratelimit-policy', 'ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset'];

describe.skipIf(!REDIS_URL)(`three gateway processes sharing one Redis${redisSkipReason ? ` (${redisSkipReason})` : ''}`, () => {
  const url = REDIS_URL as string;
  const prefix = runPrefix();
  // Every process runs on this same fixed instant (GATEWAY_NOW): on the hour, so a 1 h window has 3600 s left.
  const clock = testClock(Date.parse('2026-11-22T12:00:00Z'));
  const hasher = fastHasher();
  const store = new KeyvKeyStore(redisKeyv(url), { prefix });
  let upstream: MockUpstream | undefined;
  let gateways: GatewayProcess[] = [];
  /** Every child spawned, started or not. */
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    const mock = await startTestUpstream();
    upstream = mock;
    gateways = await Promise.all(
      [0, 1, 2].map(() =>
        startGatewayProcess(
          { REDIS_URL: url, GATEWAY_PREFIX: prefix, GATEWAY_UPSTREAM: mock.url, GATEWAY_NOW: String(clock.now()) },
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
      await removeKeys(url, prefix);
    }
  }, 30_000);

  it('a rate limit of 30 per hour admits exactly 30 of 90 concurrent requests spread over three processes, each counted once', async () => {
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
    // Every admitted request was counted once, in one shared window: the remaining counts are 29 down to 0, each once.
    expect(admitted.map((r) => Number(r.headers.get('ratelimit-remaining'))).sort((a, b) => a - b)).toEqual(
      Array.from({ length: 30 }, (_, i) => i),
    );
    for (const response of admitted) {
      expect(await response.json()).toEqual({
        data: {
          label: 'burst',
          usage: 0,
          limit: 10,
          is_free_tier: false,
          rate_limit: { requests: 30, interval: '1h' },
          key_limit: null,
          key_limit_remaining: null,
          limit_reset: null,
          expires_at: null,
          models: null,
        },
      });
    }
    for (const response of refused) {
      expect({
        status: response.status,
        headers: headersOf(response, ['content-type', 'cache-control', 'retry-after', ...RATE_LIMIT_HEADERS]),
        body: await response.json(),
      }).toEqual({
        status: 429,
        headers: {
          'content-type': 'application/json',
          'cache-control': 'no-store',
          'retry-after': '3600',
          'ratelimit-policy': '30;w=3600',
          'ratelimit-limit': '30',
          'ratelimit-remaining': '0',
          'ratelimit-reset': '3600',
        },
        body: {
          error: {
            message: 'Rate limit exceeded: 30 requests per 1h for this key. Retry after the window resets.',
            type: 'rate_limit_error',
            code: 'rate_limit_exceeded',
          },
        },
      });
    }
  });

  it('45 concurrent streams over three processes reserve exactly what the spend limit holds, and every settlement lands', async () => {
    const mock = upstream as MockUpstream;
    const seeded = await seedAccount(store, { hasher, balance: 100, now: clock.now() });
    // Each request reserves its 1000 output tokens ($2.00) plus its estimated prompt (the 145-byte body
    // sent upstream: 37 tokens, $0.037): $2.037 each, so 10 fit in $21 ($20.37) and 11 do not.
    await store.updateKey(seeded.proxyKeyId, { limit: 21 });
    const gate = deferred();
    mock.behaviour = { holdBeforeFirstChunk: gate.promise };
    const received = mock.requests.length;
    let admitted: Response[] = [];
    try {
      const body = JSON.stringify(chat({ stream: true, max_tokens: 1000 }));
      const responses = await Promise.all(
        Array.from({ length: 45 }, (_, i) =>
          fetch(`${(gateways[i % 3] as GatewayProcess).v1}/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${seeded.proxyKey}`, 'content-type': 'application/json' },
            body,
          }),
        ),
      );
      // Every admitted stream is now held upstream, its reservation standing; the others were refused.
      admitted = responses.filter((r) => r.status === 200);
      const refused = responses.filter((r) => r.status === 403);
      expect({ admitted: admitted.length, refused: refused.length, upstream: mock.requests.length - received }).toEqual({
        admitted: 10,
        refused: 35,
        upstream: 10,
      });
      const held = await store.getKey(seeded.proxyKeyId);
      expect(held?.reserved).toBeGreaterThan(20);
      expect(held?.reserved).toBeLessThanOrEqual(21);
      for (const response of refused) {
        expect({
          status: response.status,
          headers: headersOf(response, ['content-type', 'x-should-retry']),
          body: await response.json(),
        }).toEqual({
          status: 403,
          headers: { 'content-type': 'application/json', 'x-should-retry': 'false' },
          body: {
            error: {
              message: expect.stringMatching(
                /^This request could cost up to \$2\.0\d+, more than the \$[0-9.]+ left of this key's spend limit of \$21\. Lower max_tokens or raise the key's limit\.$/,
              ),
              type: 'permission_error',
              code: 'spend_limit_reached',
            },
          },
        });
      }
    } finally {
      // Whatever failed above, the held streams end (and settle) before the next test.
      gate.resolve();
      mock.behaviour = {};
    }
    // The client did not ask for stream_options.include_usage, so the usage chunk the proxy asked for is not forwarded.
    const chunk = (delta: object, finish: string | null) =>
      `data: ${JSON.stringify({
        id: 'chatcmpl-mock',
        object: 'chat.completion.chunk',
        created: 1700000000,
        model: 'mock-model',
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      })}\n\n`;
    const stream = [
      chunk({ role: 'assistant', content: '' }, null),
      chunk({ content: 'Hello' }, null),
      chunk({ content: ' world' }, null),
      chunk({}, 'stop'),
      'data: [DONE]\n\n',
    ].join('');
    expect(await Promise.all(admitted.map((r) => r.text()))).toEqual(Array.from({ length: 10 }, () => stream));
    // Each process settles a stream before it ends it: once the ten bodies are read, the ten charges have landed.
    const key = await store.getKey(seeded.proxyKeyId);
    const account = await store.getAccount(seeded.account.id);
    // 12 prompt + 8 completion tokens at the mock price: $0.028 each, ten times.
    expect(key?.reserved).toBe(0);
    expect(key?.usage).toBeCloseTo(0.28, 10);
    expect(account?.reserved).toBeCloseTo(0, 10);
    expect(account?.balance).toBeCloseTo(100 - 0.28, 10);
  });

  it('proxied requests over three processes and credits from a fourth connection, all at once, keep every ledger invariant', async () => {
    const seeded = await seedAccount(store, { hasher, balance: 100, now: clock.now() });
    const requests = 60;
    const [answers, credits] = await Promise.all([
      Promise.all(
        Array.from({ length: requests }, async (_, i) => {
          const response = await fetch(`${(gateways[i % 3] as GatewayProcess).v1}/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${seeded.proxyKey}`, 'content-type': 'application/json' },
            body: JSON.stringify(chat({ stream: i % 2 === 0, max_tokens: 50 })),
          });
          return { status: response.status, body: await response.text() };
        }),
      ),
      // Ten deliveries of five payments: each pays once.
      Promise.all(
        Array.from({ length: 10 }, (_, i) =>
          store.changeBalance({
            accountId: seeded.account.id,
            type: 'credit',
            amount: 2,
            reference: `pay_${i % 5}`,
            note: null,
            now: clock.now(),
          }),
        ),
      ),
    ]);
    expect(answers.map((answer) => answer.status)).toEqual(Array.from({ length: requests }, () => 200));
    expect(credits.filter((answer) => answer?.applied)).toHaveLength(5);
    // Each process settles a request before it ends its answer: every charge has landed.
    const entries: LedgerEntry[] = [];
    let before: number | undefined;
    for (;;) {
      const page = await store.listLedger(seeded.account.id, { limit: 7, ...(before === undefined ? {} : { before }) });
      entries.push(...page.entries);
      if (!page.hasMore) break;
      before = page.entries.at(-1)?.id;
    }
    const usage = entries.filter((entry) => entry.type === 'usage');
    expect({ usage: usage.length, credits: entries.filter((entry) => entry.type === 'credit').length }).toEqual({
      usage: requests,
      credits: 6,
    });
    expect(new Set(entries.map((entry) => entry.id)).size).toBe(entries.length);
    // One serial order: in id order, each balanceAfter is the previous one's plus its amount, ending at the balance.
    const ordered = [...entries].reverse();
    expect(ordered[0]).toMatchObject({ reference: 'opening', amount: 100, balanceAfter: 100 });
    for (let i = 1; i < ordered.length; i++) {
      const previous = ordered[i - 1] as LedgerEntry;
      const current = ordered[i] as LedgerEntry;
      expect(current.balanceAfter).toBeCloseTo(previous.balanceAfter + current.amount, 9);
    }
    const account = await store.getAccount(seeded.account.id);
    const key = await store.getKey(seeded.proxyKeyId);
    const spent = -usage.reduce((total, entry) => total + entry.amount, 0);
    // 12 prompt + 8 completion tokens at the mock price: $0.028 a request.
    expect(spent).toBeCloseTo(requests * 0.028, 9);
    expect(account?.balance).toBe(ordered.at(-1)?.balanceAfter);
    expect(account?.balance).toBeCloseTo(100 + 10 - spent, 9);
    expect(entries.reduce((total, entry) => total + entry.amount, 0)).toBeCloseTo(account?.balance ?? Number.NaN, 9);
    expect({ accountReserved: account?.reserved, keyReserved: key?.reserved }).toEqual({ accountReserved: 0, keyReserved: 0 });
    expect(key?.usage).toBeCloseTo(spent, 9);
    const day = new Date(clock.now()).toISOString().slice(0, 10);
    const rows = await store.getUsage(seeded.account.id, { from: day, to: day });
    expect(rows).toHaveLength(1);
    expect({ ...rows[0], cost: Math.round((rows[0]?.cost ?? 0) * 1e9) / 1e9 }).toEqual({
      date: day,
      keyId: seeded.proxyKeyId,
      model: (usage[0] as LedgerEntry).model ?? 'unknown',
      requests,
      promptTokens: usage.reduce((total, entry) => total + (entry.promptTokens ?? 0), 0),
      completionTokens: usage.reduce((total, entry) => total + (entry.completionTokens ?? 0), 0),
      cost: Math.round(spent * 1e9) / 1e9,
    });
  });

  it('JSON requests, whole streams and streams their clients leave, over three processes at once with top-ups, keep every invariant as the routes show it', async () => {
    await ledgerInvariantsThroughRoutes({ store, hasher, now: clock.now(), mock: upstream as MockUpstream, gateways });
  }, 60_000);

  /** The dead-gateway scenario of dead-gateway.ts on this file's processes. */
  function deadGateway(): DeadGatewayWorld {
    const mock = upstream as MockUpstream;
    const env = { REDIS_URL: url, GATEWAY_PREFIX: prefix, GATEWAY_UPSTREAM: mock.url };
    return {
      store,
      hasher,
      now: clock.now(),
      mock,
      start: (extra) => startGatewayProcess({ ...env, ...extra }, children),
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

  it('a key deactivated through one process is refused at once by the two others, which had verified and cached it', async () => {
    const seeded = await seedAccount(store, { hasher, now: clock.now() });
    const auth = { authorization: `Bearer ${seeded.proxyKey}` };
    const statuses = async () => Promise.all(gateways.map(async (g) => (await fetch(`${g.v1}/auth/key`, { headers: auth })).status));
    expect(await statuses()).toEqual([200, 200, 200]);

    const patch = (gateway: GatewayProcess, active: boolean) =>
      fetch(`${gateway.api}/keys/${seeded.proxyKeyId}`, {
        method: 'PATCH',
        headers: { authorization: `Bearer ${seeded.billingKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ active }),
      });
    expect((await patch(gateways[0] as GatewayProcess, false)).status).toBe(200);
    for (const gateway of gateways.slice(1)) {
      const refused = await fetch(`${gateway.v1}/auth/key`, { headers: auth });
      expect({ status: refused.status, contentType: refused.headers.get('content-type'), body: await refused.json() }).toEqual({
        status: 403,
        contentType: 'application/json',
        body: { error: { message: 'API key has been deactivated', type: 'permission_error', code: 'key_deactivated' } },
      });
    }
    expect((await patch(gateways[2] as GatewayProcess, true)).status).toBe(200);
    expect(await statuses()).toEqual([200, 200, 200]);
  });

  it('the processes logged nothing and each exits cleanly once its stdin closes', async () => {
    const codes = await Promise.all(gateways.map((g) => stopGatewayProcess(g.child)));
    expect({ codes, stderr: gateways.map((g) => g.stderr) }).toEqual({ codes: [0, 0, 0], stderr: [[], [], []] });
  });
});
