/**
 * Gateway processes for the several-processes tests: the test side starts and stops them; the
 * child side (a small script per store) builds its store and calls {@link serveGateway}, which
 * gives the process what a separate gateway instance has: its own `KeyHasher` (its own
 * verified-key cache), its own rate-limit and spend bookkeeping, `keysRouter` on `/api` and
 * `modelSwitchAuth` + `proxyRouter` on `/v1`, in front of the test's mock upstream, on a fixed
 * clock; `POST /drain` answers 204 once every settlement of the process has landed. It prints
 * `{"port":…}` once listening; when its stdin ends (the test is done, or died),
 * it closes, drains the proxy's settlements, closes the store and exits.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import express from 'express';
import { KeyHasher, type KeyStore, type ProxyRouterOptions, keysRouter, modelSwitchAuth, proxyRouter } from '../../src/index.js';
import { MOCK_PRICE } from '../proxy/harness.js';

/** One gateway process and what it wrote to stderr. */
export interface GatewayProcess {
  child: ChildProcess;
  /** `http://127.0.0.1:<port>/v1` */
  v1: string;
  /** `http://127.0.0.1:<port>/api` */
  api: string;
  stderr: string[];
}

/** Spawns `script` with `node --import tsx`; `started` gets the child at once, so a failed start still gets stopped. */
export async function startGatewayProcess(script: string, env: Record<string, string>, started: ChildProcess[]): Promise<GatewayProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
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
 * Ends a gateway process the way it expects (stdin closes) and waits until its output is closed
 * too, so every line it wrote was read. One that has not ended after 10 s is killed. Resolves with
 * its exit code, or the signal that ended it.
 */
export async function stopGatewayProcess(child: ChildProcess): Promise<number | string | null> {
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

/** The proxy's hold options a test gives a gateway process, as the JSON of its GATEWAY_HOLDS variable. */
export type HoldOptions = Pick<ProxyRouterOptions, 'timeoutMs' | 'holdMarginMs' | 'holdSweepIntervalMs'>;

/** Child side: the hold options in GATEWAY_HOLDS (JSON), or none. */
export function holdOptionsFromEnv(value: string | undefined): HoldOptions {
  if (value === undefined || value === '') return {};
  const { timeoutMs, holdMarginMs, holdSweepIntervalMs } = JSON.parse(value) as HoldOptions;
  return {
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(holdMarginMs === undefined ? {} : { holdMarginMs }),
    ...(holdSweepIntervalMs === undefined ? {} : { holdSweepIntervalMs }),
  };
}

/** Child side: serves the gateway on `store` until stdin ends (see the module's comment). */
export function serveGateway(store: KeyStore, options: { upstream: string; now: number; holds?: HoldOptions }): void {
  const now = () => options.now;
  const hasher = new KeyHasher({ scrypt: { logN: 10 } });
  const logger = {
    warn: (message: string) => process.stderr.write(`warn: ${message}\n`),
    error: (message: string) => process.stderr.write(`error: ${message}\n`),
  };
  const proxy = proxyRouter(store, {
    upstreams: [{ name: 'mock', target: options.upstream, apiKey: 'sk-upstream-secret', models: ['mock-model', /^mock-family-/] }],
    pricing: { 'mock-model': MOCK_PRICE, 'mock-family-a': MOCK_PRICE },
    defaultMaxTokens: 100,
    now,
    logger,
    hasher,
    ...options.holds,
  });
  const app = express();
  // The test's way to wait until every settlement of this process has landed: a stream its client
  // left is settled after its answer ended, so no answer the test holds says when.
  app.post('/drain', async (_req, res) => {
    await proxy.drain();
    res.status(204).end();
  });
  app.use('/api', keysRouter(store, { hasher, now, logger }));
  app.use('/v1', modelSwitchAuth(store, { hasher, now, logger }), proxy);

  const server: Server = createServer(app);
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`${JSON.stringify({ port: (server.address() as AddressInfo).port })}\n`);
  });
  process.stdin.resume();
  process.stdin.on('end', async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await proxy.drain();
    await proxy.close();
    await store.close?.();
    process.exit(0);
  });
}
