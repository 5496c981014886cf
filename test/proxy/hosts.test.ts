import { type Server, createServer } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import connect from 'connect';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import type { Middleware } from '../../src/http/middleware.js';
import { modelSwitchAuth } from '../../src/auth/model-switch-auth.js';
import { proxyRouter } from '../../src/proxy/proxy-router.js';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import { type SeededAccount, fastHasher, recordingLogger, seedAccount, testClock } from '../helpers.js';
import { MOCK_PRICE, chat, post } from './harness.js';
import { type MockUpstream, startTestUpstream } from './mock-upstream.js';

// express4 (an npm alias of express@4) ships no types; Express 4's API used here matches Express 5's.
const express4 = createRequire(import.meta.url)('express4') as typeof express;

let server: Server | undefined;
let upstream: MockUpstream | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  await upstream?.close();
});

type Mount = (
  auth: Middleware,
  proxy: Middleware,
) => (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void;

async function host(mount: Mount): Promise<{ url: string; proxyKey: string; store: MemoryKeyStore; seeded: SeededAccount }> {
  const store = new MemoryKeyStore();
  const hasher = fastHasher();
  const clock = testClock();
  const logger = recordingLogger();
  upstream = await startTestUpstream();
  const seeded = await seedAccount(store, { hasher, now: clock.now() });
  const auth = modelSwitchAuth(store, { hasher, now: clock.now, logger });
  const proxy = proxyRouter(store, {
    upstreams: [{ name: 'mock', target: upstream.url, apiKey: 'sk-upstream-secret', models: ['mock-model'] }],
    pricing: { 'mock-model': MOCK_PRICE },
    now: clock.now,
    logger,
    hasher,
  });
  server = createServer(mount(auth, proxy));
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, proxyKey: seeded.proxyKey, store, seeded };
}

const mounts: [string, Mount][] = [
  [
    'Express 5',
    (auth, proxy) => {
      const app = express();
      app.use('/v1', auth, proxy);
      return app;
    },
  ],
  [
    'Express 5 behind express.json()',
    (auth, proxy) => {
      const app = express();
      app.use(express.json());
      app.use('/v1', auth, proxy);
      return app;
    },
  ],
  [
    'Express 4 behind express.json()',
    (auth, proxy) => {
      const app = express4();
      app.use(express4.json());
      app.use('/v1', auth, proxy);
      return app;
    },
  ],
  [
    'Connect',
    (auth, proxy) => {
      const app = connect();
      app.use('/v1', auth);
      app.use('/v1', proxy);
      return app;
    },
  ],
  [
    'Express 5 with proxyRouter alone (it authenticates by itself)',
    (_auth, proxy) => {
      const app = express();
      app.use('/v1', proxy);
      return app;
    },
  ],
];

describe('proxyRouter in different hosts', () => {
  for (const [name, mount] of mounts) {
    it(`proxies, streams and meters under ${name}`, async () => {
      const gateway = await host(mount);
      const json = await post(gateway, '/chat/completions', chat());
      expect(json.status).toBe(200);
      expect(JSON.parse(json.text).usage).toEqual({ prompt_tokens: 12, completion_tokens: 8, total_tokens: 20 });
      const stream = await post(gateway, '/chat/completions', chat({ stream: true }));
      expect(stream.status).toBe(200);
      expect(stream.text.endsWith('data: [DONE]\n\n')).toBe(true);
      // With the reserved output cap (the default 4096), as the client set none.
      expect(JSON.parse(upstream?.requests[0]?.body ?? '')).toEqual(chat({ max_tokens: 4096 }));
      expect(await gateway.store.getKey(gateway.seeded.proxyKeyId)).toMatchObject({ usage: 0.056, reserved: 0 });
      const unauthenticated = await fetch(`${gateway.url}/models`);
      expect(unauthenticated.status).toBe(401);
    });
  }
});
