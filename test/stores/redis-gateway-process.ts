/**
 * One gateway process of keyv-redis-processes.test.ts, run with `node --import tsx`. It has what a
 * separate gateway instance has: its own `KeyvKeyStore` (its own Redis connection), its own
 * `KeyHasher` (its own verified-key cache), its own rate-limit and spend bookkeeping, with
 * `keysRouter` on `/api` and `modelSwitchAuth` + `proxyRouter` (which answers `GET /v1/auth/key` too) on `/v1`, in front of
 * the test's mock upstream. Its clock is fixed (`GATEWAY_NOW`), so no window or period rolls over
 * during a test, unless the test moves it: `PUT /clock/<epoch ms>` sets it (answering 204 once set),
 * as a rotation's grace deadline needs; `POST /drain` answers 204 once every settlement of the
 * process has landed. Prints `{"port":…}` once listening; when its stdin ends (the test is done, or
 * died), it closes, drains the proxy's settlements and exits.
 *
 * Environment: REDIS_URL, GATEWAY_PREFIX, GATEWAY_UPSTREAM (the mock's base URL with `/v1`), GATEWAY_NOW;
 * optional: GATEWAY_HOLDS (JSON of the proxy's `timeoutMs`, `holdMarginMs`, `holdSweepIntervalMs`).
 */
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { KeyHasher, KeyvKeyStore, keysRouter, modelSwitchAuth, proxyRouter } from '../../src/index.js';
import { MOCK_PRICE } from '../proxy/harness.js';
import { redisKeyv } from './redis-env.js';
import { holdOptionsFromEnv } from './gateway-processes.js';

const { REDIS_URL, GATEWAY_PREFIX, GATEWAY_UPSTREAM, GATEWAY_NOW } = process.env;
if (!REDIS_URL || !GATEWAY_PREFIX || !GATEWAY_UPSTREAM || !GATEWAY_NOW) {
  process.stderr.write('redis-gateway-process: REDIS_URL, GATEWAY_PREFIX, GATEWAY_UPSTREAM and GATEWAY_NOW must be set\n');
  process.exit(2);
}

let current = Number(GATEWAY_NOW);
const now = () => current;
const store = new KeyvKeyStore(redisKeyv(REDIS_URL), { prefix: GATEWAY_PREFIX });
const hasher = new KeyHasher({ scrypt: { logN: 10 } });
const logger = {
  warn: (message: string) => process.stderr.write(`warn: ${message}\n`),
  error: (message: string) => process.stderr.write(`error: ${message}\n`),
};
const proxy = proxyRouter(store, {
  upstreams: [{ name: 'mock', target: GATEWAY_UPSTREAM, apiKey: 'sk-upstream-secret', models: ['mock-model', /^mock-family-/] }],
  pricing: { 'mock-model': MOCK_PRICE, 'mock-family-a': MOCK_PRICE },
  defaultMaxTokens: 100,
  now,
  logger,
  hasher,
  ...holdOptionsFromEnv(process.env.GATEWAY_HOLDS),
});
const app = express();
app.put('/clock/:now', (req, res) => {
  current = Number(req.params.now);
  res.status(204).end();
});
// The test's way to wait until every settlement of this process has landed (see gateway-processes.ts).
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
  await store.close();
  process.exit(0);
});
