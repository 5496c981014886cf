/**
 * Issue 19's "done means", as an operator runs it on a fresh clone with PostgreSQL: the CLI
 * migrates, creates an account with 10 USD and its billing key; `npm run example` with
 * DATABASE_URL and MODELSWITCH_ACCOUNT serves that account; keys, balance and ledger survive a
 * restart; /metrics shows the traffic.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresKeyStore } from '../../src/store/postgres/index.js';
import { DATABASE_URL, dropSchema, postgresSkipReason, testSchema } from '../stores/postgres-env.js';
import { type BinRun, ROOT, ensureBuilt, runBin } from './built-bin.js';

/** `npm run example` as a process on a free port, with the offline mock upstream; resolves with its URL once it listens. */
function startExample(env: Record<string, string>): { child: ChildProcess; ready: Promise<string>; output: () => string } {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, PORT: '0', ...env };
  delete childEnv.REDIS_URL;
  delete childEnv.OPENAI_API_KEY;
  const child = spawn(process.execPath, ['--import', 'tsx', 'examples/gateway.ts'], {
    cwd: ROOT,
    env: childEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const ready = new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const url = /Metrics: (http:\/\/localhost:\d+)\/metrics/.exec(text)?.[1];
      if (url) resolve(url);
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`example exited early with ${code}: ${text}`)));
  });
  return { child, ready, output: () => text };
}

async function stop(child: ChildProcess): Promise<number | null> {
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  return ((await exited) as [number | null])[0];
}

function ok(run: BinRun): string {
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  return run.stdout;
}

describe.skipIf(!DATABASE_URL)(`the operator's flow on PostgreSQL${postgresSkipReason ? ` (${postgresSkipReason})` : ''}`, () => {
  const url = DATABASE_URL as string;
  const schema = testSchema();
  const accountId = `team_${schema.slice(-6)}`;
  const cli = (...args: string[]) => runBin([...args, '--schema', schema], { MODELSWITCH_STORE: url });

  beforeAll(async () => {
    await ensureBuilt();
  }, 120_000);
  afterAll(async () => {
    await dropSchema(url, schema);
  });

  it('migrate, account create --balance 10, billing-key create, then npm run example keeps keys, balance and ledger across a restart, and /metrics shows the traffic', async () => {
    expect(ok(await cli('migrate'))).toMatch(new RegExp(`^Schema ${schema} migrated to version 1; applied 1 \\(`));
    ok(await cli('account', 'create', '--id', accountId, '--balance', '10'));
    const billingKey = /^(mk-[0-9A-Za-z]{38})$/m.exec(ok(await cli('billing-key', 'create', accountId, '--name', 'ops')))?.[1] as string;
    expect(billingKey).toBeDefined();

    const env = { DATABASE_URL: url, DATABASE_SCHEMA: schema, MODELSWITCH_ACCOUNT: accountId };
    const first = startExample(env);
    const firstUrl = await first.ready;
    expect(first.output()).toContain(`Account ${accountId} (MODELSWITCH_ACCOUNT) with a balance of 10 USD: use its billing key`);
    expect(first.output()).not.toContain('MODELSWITCH_BILLING_KEY=');
    let proxyKey: string;
    let cost: number;
    try {
      const created = await fetch(`${firstUrl}/api/keys`, {
        method: 'POST',
        headers: { authorization: `Bearer ${billingKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'app' }),
      });
      expect(created.status).toBe(201);
      proxyKey = ((await created.json()) as { key: string }).key;
      const completion = await fetch(`${firstUrl}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${proxyKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Say hello' }] }),
      });
      expect(completion.status).toBe(200);
      await completion.text();

      // A response is counted when it closes on the server, which may come a moment after the
      // client read its last byte: scrape until the completion is in (a few tries at most).
      let metrics = '';
      for (let attempt = 0; attempt < 50 && !metrics.includes('route="/v1/chat/completions"'); attempt++) {
        if (attempt > 0) await new Promise((resolve) => setTimeout(resolve, 20));
        metrics = await (await fetch(`${firstUrl}/metrics`)).text();
      }
      expect(metrics).toContain('modelswitch_http_requests_total{route="/api/keys",method="POST",status="201",code="ok"} 1');
      expect(metrics).toContain('modelswitch_http_requests_total{route="/v1/chat/completions",method="POST",status="200",code="ok"} 1');
      const spent = /^modelswitch_spend_usd_total\{model="gpt-4o-mini"\} (\S+)$/m.exec(metrics)?.[1];
      cost = Number(spent);
      expect(cost).toBeGreaterThan(0);
      expect(metrics).toMatch(/^modelswitch_tokens_total\{model="gpt-4o-mini",kind="prompt"\} [1-9]\d*$/m);
      expect(metrics).not.toMatch(/m[sk]-[0-9A-Za-z]{8}/);
    } finally {
      expect(await stop(first.child)).toBe(0);
    }

    const second = startExample(env);
    const secondUrl = await second.ready;
    try {
      const balance = Math.round((10 - cost) * 1e10) / 1e10;
      expect(second.output()).toContain(`Account ${accountId} (MODELSWITCH_ACCOUNT) with a balance of ${balance} USD`);
      const listed = await fetch(`${secondUrl}/api/keys`, { headers: { authorization: `Bearer ${billingKey}` } });
      expect(((await listed.json()) as { keys: Array<{ name: string }> }).keys.map((key) => key.name)).toEqual(['app']);
      const info = await fetch(`${secondUrl}/v1/auth/key`, { headers: { authorization: `Bearer ${proxyKey}` } });
      expect(info.status).toBe(200);
      expect(((await info.json()) as { data: { limit: number } }).data.limit).toBe(balance);
    } finally {
      expect(await stop(second.child)).toBe(0);
    }

    expect(JSON.parse(ok(await cli('account', 'show', accountId, '--json')))).toMatchObject({
      id: accountId,
      balance: Math.round((10 - cost) * 1e10) / 1e10,
      reserved: 0,
    });
    expect(JSON.parse(ok(await cli('usage', accountId, '--group-by', 'model', '--json'))).rows).toEqual([
      { model: 'gpt-4o-mini', requests: 1, promptTokens: expect.any(Number), completionTokens: expect.any(Number), cost },
    ]);
    const store = new PostgresKeyStore({ connectionString: url, schema });
    try {
      const ledger = await store.listLedger(accountId, { limit: 10 });
      expect(ledger.entries.map((entry) => [entry.type, entry.amount, entry.reference])).toEqual([
        ['usage', -cost, null],
        ['credit', 10, 'opening'],
      ]);
    } finally {
      await store.close();
    }
  }, 120_000);
});
