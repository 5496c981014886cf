import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { startGateway } from '../../examples/gateway.js';
import { MemoryKeyStore } from '../../src/index.js';

/** Starts `examples/gateway.ts` as `npm run example` does, on a free port, with the in-memory store. */
function startExample(): { child: ChildProcess; output: () => string; ready: Promise<{ url: string; billingKey: string }> } {
  const env: NodeJS.ProcessEnv = { ...process.env, PORT: '0', MODELSWITCH_INITIAL_BALANCE: '25' };
  delete env.REDIS_URL;
  delete env.OPENAI_API_KEY;
  const child = spawn(process.execPath, ['--import', 'tsx', 'examples/gateway.ts'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const ready = new Promise<{ url: string; billingKey: string }>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const url = /on (http:\/\/localhost:\d+)/.exec(text)?.[1];
      const billingKey = /^MODELSWITCH_BILLING_KEY=(mk-[0-9A-Za-z]{38})$/m.exec(text)?.[1];
      if (url && billingKey) resolve({ url, billingKey });
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`example exited early with ${code}: ${text}`)));
  });
  return { child, output: () => text, ready };
}

// A process that loads the example's TypeScript through tsx: seconds of CPU, which a busy machine
// (two CI runs at once, other jobs) stretches past the default timeout, which is for hangs.
const PROCESS_TIMEOUT_MS = 60_000;

describe('npm run example', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(
      `prints the billing key line, serves the API, and stops cleanly on ${signal}`,
      async () => {
        const example = startExample();
        try {
          const { url, billingKey } = await example.ready;
          const info = await fetch(`${url}/api/keys`, { headers: { Authorization: `Bearer ${billingKey}` } });
          expect(info.status).toBe(200);
          expect(await info.json()).toEqual({ keys: [], has_more: false });
          expect(example.output()).toMatch(/balance of 25 USD/);
          expect(example.output()).toMatch(/OFFLINE MOCK/);
          const exited = once(example.child, 'exit');
          example.child.kill(signal);
          const [code] = await exited;
          expect(code).toBe(0);
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
