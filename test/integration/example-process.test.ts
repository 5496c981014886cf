import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { EXAMPLE_PRICING } from '../../examples/upstreams-from-env.js';
import { startGateway } from '../../examples/gateway.js';
import { MemoryKeyStore } from '../../src/index.js';
import { roundUsd } from '../../src/store/spend-rules.js';
import { startExample, stopExample } from '../example-runner.js';

// A process that loads the example's TypeScript through tsx: seconds of CPU, which a busy machine
// (two CI runs at once, other jobs) stretches past the default timeout, which is for hangs.
const PROCESS_TIMEOUT_MS = 60_000;

describe('npm run example', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(
      `prints the billing key line, serves the API, and stops cleanly on ${signal}`,
      async () => {
        // The in-memory store, whatever the environment offers (CI sets DATABASE_URL and REDIS_URL).
        const example = startExample();
        try {
          const { url, billingKey } = await example.ready;
          const info = await fetch(`${url}/api/keys`, { headers: { Authorization: `Bearer ${billingKey}` } });
          expect(info.status).toBe(200);
          expect(await info.json()).toEqual({ keys: [], has_more: false });
          expect(example.output()).toMatch(/balance of 25 USD/);
          expect(example.output()).toMatch(/OFFLINE MOCK/);
          expect(example.output()).toMatch(/key store: in memory/);
          expect(await stopExample(example, signal)).toBe(0);
          expect(example.output()).toContain(`${signal}: stopping`);
        } finally {
          // A failed assertion must not leave the gateway running.
          if (example.child.exitCode === null && example.child.signalCode === null) example.child.kill('SIGKILL');
        }
      },
      PROCESS_TIMEOUT_MS,
    );
  }

  it('still drains and exits 0 on SIGTERM when its stdout pipe is broken (EPIPE)', async () => {
    const example = startExample();
    const { url, billingKey } = await example.ready;
    // A request in flight at shutdown must still be answered or cut, and its drain awaited.
    const info = await fetch(`${url}/api/keys`, { headers: { Authorization: `Bearer ${billingKey}` } });
    expect(info.status).toBe(200);
    // The reader of its stdout goes away, as with `npm run example | head -3`.
    example.child.stdout?.destroy();
    const exited = once(example.child, 'exit');
    example.child.kill('SIGTERM');
    const [code, signal] = await exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    expect(example.output()).not.toMatch(/EPIPE|Error/);
  });
});

const run = promisify(execFile);

/** The README's curl command (its bash block) that reads `path` with the billing key. */
function readmeCommand(path: string): string {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const blocks = [...readme.matchAll(/```bash\n([\s\S]*?)```/g)].map((m) => (m[1] as string).trim());
  const command = blocks.find(
    (block) => block.startsWith('curl') && block.includes(`localhost:3000${path}`) && block.includes('BILLING_KEY'),
  );
  if (!command) throw new Error(`README.md has no curl command for ${path} with the billing key`);
  return command;
}

describe("npm run example, a few chat calls, then the README's account commands", () => {
  it(
    'show exactly what was spent, by key and model: /api/account, /api/transactions and /api/usage',
    async () => {
      const example = startExample();
      try {
        const { url, billingKey } = await example.ready;
        const createKey = async (name: string) => {
          const res = await fetch(`${url}/api/keys`, {
            method: 'POST',
            headers: { authorization: `Bearer ${billingKey}`, 'content-type': 'application/json' },
            body: JSON.stringify({ name }),
          });
          expect(res.status).toBe(201);
          return (await res.json()) as { id: number; key: string };
        };
        const production = await createKey('Production');
        const batch = await createKey('Batch');
        // Each call's X-Request-Id, key, model and the usage its own answer reported.
        const calls: Array<{ requestId: string; keyId: number; model: 'gpt-4o' | 'gpt-4o-mini'; prompt: number; completion: number }> = [];
        const chat = async (key: { id: number; key: string }, model: 'gpt-4o' | 'gpt-4o-mini', stream: boolean) => {
          const res = await fetch(`${url}/v1/chat/completions`, {
            method: 'POST',
            headers: { authorization: `Bearer ${key.key}`, 'content-type': 'application/json' },
            body: JSON.stringify({
              model,
              messages: [{ role: 'user', content: 'Hello!' }],
              ...(stream && { stream: true, stream_options: { include_usage: true } }),
            }),
          });
          expect(res.status).toBe(200);
          const text = await res.text();
          const usage = stream
            ? (
                JSON.parse((/^data: (\{.*"usage":\{.*)$/m.exec(text) as RegExpExecArray)[1] as string) as {
                  usage: { prompt_tokens: number; completion_tokens: number };
                }
              ).usage
            : (JSON.parse(text) as { usage: { prompt_tokens: number; completion_tokens: number } }).usage;
          calls.push({
            requestId: res.headers.get('x-request-id') as string,
            keyId: key.id,
            model,
            prompt: usage.prompt_tokens,
            completion: usage.completion_tokens,
          });
        };
        await chat(production, 'gpt-4o', false);
        await chat(production, 'gpt-4o-mini', true);
        await chat(batch, 'gpt-4o', false);
        const costOf = (call: (typeof calls)[number]) =>
          roundUsd(
            (call.prompt * EXAMPLE_PRICING[call.model].inputPerMillion + call.completion * EXAMPLE_PRICING[call.model].outputPerMillion) /
              1e6,
          );
        const spent = roundUsd(calls.reduce((total, call) => total + costOf(call), 0));
        expect(spent).toBeGreaterThan(0);

        const curl = async (path: string) => {
          const command = `${readmeCommand(path).replaceAll('http://localhost:3000', url)} -sS`;
          const { stdout } = await run('bash', ['-c', command], { env: { ...process.env, MODELSWITCH_BILLING_KEY: billingKey } });
          return JSON.parse(stdout) as unknown;
        };
        const balance = roundUsd(25 - spent);
        expect(await curl('/api/account')).toEqual({
          id: expect.any(String),
          balance,
          reserved: 0,
          available: balance,
          isFreeTier: false,
          createdAt: expect.any(String),
        });
        // The README's page of transactions holds three: the three calls, newest first, the opening credit after them.
        let running = 25;
        const entries = calls.map((call) => {
          running = roundUsd(running - costOf(call));
          return {
            id: expect.any(Number),
            type: 'usage',
            amount: -costOf(call),
            balanceAfter: running,
            keyId: call.keyId,
            model: call.model,
            promptTokens: call.prompt,
            completionTokens: call.completion,
            requestId: call.requestId,
            reference: null,
            createdAt: expect.any(String),
          };
        });
        expect(await curl('/api/transactions')).toEqual({ transactions: entries.reverse(), has_more: true });
        const row = (keyId: number, model: string) => {
          const own = calls.filter((call) => call.keyId === keyId && call.model === model);
          return {
            keyId,
            model,
            requests: own.length,
            promptTokens: own.reduce((total, call) => total + call.prompt, 0),
            completionTokens: own.reduce((total, call) => total + call.completion, 0),
            cost: roundUsd(own.reduce((total, call) => total + costOf(call), 0)),
          };
        };
        expect(await curl('/api/usage')).toEqual({
          usage: [row(production.id, 'gpt-4o'), row(production.id, 'gpt-4o-mini'), row(batch.id, 'gpt-4o')],
          total: {
            requests: 3,
            promptTokens: calls.reduce((total, call) => total + call.prompt, 0),
            completionTokens: calls.reduce((total, call) => total + call.completion, 0),
            cost: spent,
          },
        });
        expect(await stopExample(example, 'SIGTERM')).toBe(0);
      } finally {
        if (example.child.exitCode === null && example.child.signalCode === null) example.child.kill('SIGKILL');
      }
    },
    PROCESS_TIMEOUT_MS,
  );
});

describe('the example gateway', () => {
  it('answers an unknown route 404 in the error JSON, with Cache-Control: no-store like every other error', async () => {
    const gateway = await startGateway({ port: 0, store: new MemoryKeyStore(), log: () => {} });
    try {
      const answer = await fetch(`${gateway.url}/nothing/here?x=1`, { method: 'POST' });
      const body = await answer.text();
      expect({
        status: answer.status,
        contentType: answer.headers.get('content-type'),
        cacheControl: answer.headers.get('cache-control'),
        contentLength: answer.headers.get('content-length'),
        body: JSON.parse(body),
      }).toEqual({
        status: 404,
        contentType: 'application/json',
        cacheControl: 'no-store',
        contentLength: String(Buffer.byteLength(body)),
        body: { error: { message: 'Unknown route: POST /nothing/here', type: 'invalid_request_error', code: 'route_not_found' } },
      });
    } finally {
      await gateway.close();
    }
  });
});
