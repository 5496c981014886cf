import { describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { startGateway } from '../../examples/gateway.js';
import { MemoryKeyStore } from '../../src/index.js';
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
