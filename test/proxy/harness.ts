import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import compression from 'compression';
import express from 'express';
import { modelSwitchAuth } from '../../src/auth/model-switch-auth.js';
import { keysRouter } from '../../src/management/keys-router.js';
import { type ProxyRouter, type ProxyRouterOptions, proxyRouter } from '../../src/proxy/proxy-router.js';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import type { KeyStore } from '../../src/store/types.js';
import type { GatewayMetrics } from '../../src/metrics/gateway-metrics.js';
import { type SeededAccount, type TestClock, fastHasher, recordingLogger, seedAccount, testClock } from '../helpers.js';
import { type MockUpstream, startTestUpstream } from './mock-upstream.js';

/** The 400 body of a request whose URL holds a ModelSwitch key (the proxy refuses it before any upstream call). */
export const KEY_IN_URL = {
  error: {
    message: 'The request URL contains a ModelSwitch API key; remove it (keys are never sent to providers)',
    type: 'invalid_request_error',
    code: 'invalid_request',
  },
};

/** The 400 body of a request whose JSON body holds a ModelSwitch key. */
export const KEY_IN_BODY = {
  error: {
    message: 'The request body contains a ModelSwitch API key; remove it (keys are never sent to providers)',
    type: 'invalid_request_error',
    code: 'invalid_request',
  },
};

/** USD per million tokens chosen so 12 prompt + 8 completion tokens cost exactly $0.028. */
export const MOCK_PRICE = { inputPerMillion: 1000, outputPerMillion: 2000 };

export interface Gateway extends SeededAccount {
  /** Base URL of the gateway's inference API, `http://127.0.0.1:<port>/v1`. */
  url: string;
  /** Base URL of its management API, `http://127.0.0.1:<port>/api` (mounted with `api: true`). */
  apiUrl: string;
  app: express.Express;
  /** The mounted proxyRouter (for `drain()`). */
  proxy: ProxyRouter;
  store: KeyStore;
  upstream: MockUpstream;
  clock: TestClock;
  logger: ReturnType<typeof recordingLogger>;
  close(): Promise<void>;
}

export interface GatewayOptions {
  balance?: number;
  /** Mount compression() in front, as a host might. */
  compression?: boolean;
  proxy?: Partial<ProxyRouterOptions>;
  store?: KeyStore;
  /** Metrics for both modelSwitchAuth and proxyRouter. */
  metrics?: GatewayMetrics;
  /** Mount keysRouter at `/api` too, with the same hasher, clock and logger. */
  api?: boolean;
}

/** An Express host mounting modelSwitchAuth + proxyRouter in front of a fresh mock upstream. */
export async function startGateway(options: GatewayOptions = {}): Promise<Gateway> {
  const store = options.store ?? new MemoryKeyStore();
  const hasher = fastHasher();
  const clock = testClock();
  const logger = recordingLogger();
  const upstream = await startTestUpstream();
  const seeded = await seedAccount(store, { hasher, balance: options.balance ?? 10, now: clock.now() });
  const app = express();
  if (options.compression) app.use(compression());
  if (options.api) app.use('/api', keysRouter(store, { hasher, now: clock.now, logger }));
  const proxy = proxyRouter(store, {
    upstreams: [
      { name: 'mock', target: upstream.url, apiKey: 'sk-upstream-secret', models: ['mock-model', 'mock-unpriced', /^mock-family-/] },
    ],
    pricing: { 'mock-model': MOCK_PRICE, 'mock-family-a': MOCK_PRICE },
    defaultMaxTokens: 100,
    now: clock.now,
    logger,
    hasher,
    ...(options.metrics ? { metrics: options.metrics } : {}),
    ...options.proxy,
  });
  app.use(
    '/v1',
    modelSwitchAuth(store, { hasher, now: clock.now, logger, ...(options.metrics ? { metrics: options.metrics } : {}) }),
    proxy,
  );
  const server: Server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const url = `${origin}/v1`;
  return {
    ...seeded,
    url,
    apiUrl: `${origin}/api`,
    app,
    proxy,
    store,
    upstream,
    clock,
    logger,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await upstream.close();
    },
  };
}

/** A MemoryKeyStore whose next `failures` settlements reject (a store blip); `failuresLeft()` counts down below 0 once they pass. */
export function storeFailingSettlements(failures: number): { store: MemoryKeyStore; failuresLeft: () => number } {
  const store = new MemoryKeyStore();
  const settle = store.settleSpend.bind(store);
  let left = failures;
  store.settleSpend = (settlement) => (left-- > 0 ? Promise.reject(new Error('connection reset')) : settle(settlement));
  return { store, failuresLeft: () => left };
}

/** A chat completion body for the mock model. */
export function chat(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model: 'mock-model', messages: [{ role: 'user', content: 'Say hello' }], ...extra };
}

/** POSTs JSON with the key and returns status, headers and text. */
export async function post(
  gateway: Pick<Gateway, 'url' | 'proxyKey'>,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: Headers; text: string }> {
  const res = await fetch(gateway.url + path, {
    method: 'POST',
    headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** A promise the test resolves by hand, to hold the mock upstream at a chosen point. */
export function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => {};
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
