import request from 'supertest';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { generateApiKey } from '../../src/keys/api-key.js';
import { PostgresKeyStore } from '../../src/store/postgres/index.js';
import { buildApp } from '../app.js';
import { fastHasher, recordingLogger, seedAccount } from '../helpers.js';
import { type Gateway, chat, deferred, startGateway } from '../proxy/harness.js';
import { PostgresCluster, postgresBinaries } from './postgres-cluster.js';
import { expectSettledOnceThroughRoutes } from './ledger-through-routes.js';
import { DATABASE_URL, postgresSkipReason } from './postgres-env.js';

const hasher = fastHasher();
const BIN = postgresBinaries();
const UNAVAILABLE = {
  status: 503,
  type: 'application/json',
  body: { error: { message: 'The key store is unavailable. Please retry shortly.', type: 'api_error', code: 'store_unavailable' } },
};

// These tests start, stop and freeze a PostgreSQL cluster of their own (initdb and pg_ctl in a temp
// directory, on a free port); DATABASE_URL gates them like every PostgreSQL test.
const skipReason =
  postgresSkipReason ?? (BIN ? undefined : 'no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: skipping the outage tests');
if (DATABASE_URL && !BIN && process.env.CI === 'true') {
  throw new Error(
    'the PostgreSQL server binaries (/usr/lib/postgresql/*/bin) must be installed when CI=true: the outage tests cannot be skipped in CI',
  );
}

function answer(response: request.Response) {
  return { status: response.status, type: response.headers['content-type'], body: response.body };
}

/** Retries `probe` until it answers `status` (the pool opens new connections once the server is back). */
async function eventually(probe: () => Promise<request.Response>, status: number): Promise<request.Response> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const response = await probe();
    if (response.status === status || Date.now() > deadline) return response;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe.skipIf(skipReason !== undefined)(`PostgresKeyStore when PostgreSQL fails${skipReason ? ` (${skipReason})` : ''}`, () => {
  let cluster: PostgresCluster;
  const rejections: unknown[] = [];
  const onRejection = (reason: unknown) => rejections.push(reason);

  beforeAll(async () => {
    cluster = await PostgresCluster.start(BIN as string);
    process.on('unhandledRejection', onRejection);
  }, 120_000);
  afterAll(async () => {
    process.off('unhandledRejection', onRejection);
    await cluster?.remove();
  }, 60_000);
  beforeEach(async () => {
    rejections.length = 0;
    await cluster.restart();
  }, 60_000);
  afterEach(() => {
    expect(rejections).toEqual([]);
  });

  /** A store on the private cluster that gives up quickly, in a schema of its own. */
  async function clusterStore(): Promise<PostgresKeyStore> {
    const store = new PostgresKeyStore({
      connectionString: cluster.url,
      schema: `outage_${Math.random().toString(36).slice(2, 10)}`,
      statementTimeoutMs: 500,
      connectionTimeoutMs: 500,
    });
    await store.migrate();
    return store;
  }

  async function hostApp(storeTimeoutMs: number) {
    const store = await clusterStore();
    const logger = recordingLogger();
    const app = buildApp('express5', store, { hasher, logger, storeTimeoutMs });
    const seeded = await seedAccount(store, { hasher });
    const whoami = () => request(app).get('/v1/whoami').set('Authorization', `Bearer ${seeded.proxyKey}`);
    const listKeys = () => request(app).get('/api/keys').set('Authorization', `Bearer ${seeded.billingKey}`);
    return { store, logger, whoami, listKeys };
  }

  it('answers 503 on /v1 and /api while PostgreSQL is stopped, logs one line, and recovers when it is back', async () => {
    const { store, logger, whoami, listKeys } = await hostApp(2000);
    try {
      expect((await whoami()).status).toBe(200);
      await cluster.stop('fast');
      for (let i = 0; i < 3; i++) {
        expect(answer(await whoami())).toEqual(UNAVAILABLE);
        expect(answer(await listKeys())).toEqual(UNAVAILABLE);
      }
      expect(logger.lines).toHaveLength(1);
      expect(logger.lines[0]).toMatch(
        /^error: modelswitch-keys: key store unavailable \(getKeyByHandle: .+\); requests that need it answer 503/,
      );
      await cluster.restart();
      expect((await eventually(whoami, 200)).status).toBe(200);
      expect((await listKeys()).status).toBe(200);
      expect(logger.lines).toEqual([logger.lines[0], 'warn: modelswitch-keys: key store recovered']);
    } finally {
      await store.close();
    }
  }, 60_000);

  it('rejects instead of hanging when PostgreSQL stops answering, then works again without a restart of the app', async () => {
    const { store, logger, whoami } = await hostApp(5000);
    try {
      expect((await whoami()).status).toBe(200);
      cluster.freeze();
      // The store itself gives up (the server's statement timeout cannot fire on a frozen server; the
      // client's read and connection timeouts do), well before the middleware's 5 s store timeout.
      await expect(store.getAccount('anyone')).rejects.toThrow(/timeout/i);
      expect(answer(await whoami())).toEqual(UNAVAILABLE);
      expect(logger.lines).toEqual([
        // Whichever of the request's three store calls gave up first: a connection or a read timeout.
        expect.stringMatching(/^error: modelswitch-keys: key store unavailable \((getKeyByHandle|getAccount|hitCounter): .*timeout.*\)/i),
      ]);
      cluster.thaw();
      expect((await eventually(whoami, 200)).status).toBe(200);
    } finally {
      cluster.thaw();
      await store.close();
    }
  }, 60_000);

  it('answers 503 when PostgreSQL is unreachable from the start', async () => {
    const store = await clusterStore();
    await cluster.stop('fast');
    try {
      const logger = recordingLogger();
      const app = buildApp('express5', store, { hasher, logger, storeTimeoutMs: 2000 });
      // A well-formed key (valid checksum) needs a store read, which cannot happen: 503, never 401.
      const response = await request(app)
        .get('/v1/whoami')
        .set('Authorization', `Bearer ${generateApiKey('proxy').value}`);
      expect(answer(response)).toEqual(UNAVAILABLE);
      expect(logger.lines).toHaveLength(1);
    } finally {
      await store.close();
    }
  }, 60_000);

  describe('stopped mid-load', () => {
    let gateway: Gateway | undefined;
    afterEach(async () => {
      await gateway?.close();
      await gateway?.store.close?.();
    });

    it('settles the streams in flight once it is back (the proxy retries), each exactly once as the routes show, and refuses new requests meanwhile', async () => {
      const store = await clusterStore();
      gateway = await startGateway({ store, balance: 100, api: true });
      const gate = deferred();
      gateway.upstream.behaviour = { holdBeforeFirstChunk: gate.promise };
      const send = () =>
        fetch(`${gateway?.url}/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${gateway?.proxyKey}`, 'content-type': 'application/json' },
          body: JSON.stringify(chat({ stream: true, max_tokens: 1000 })),
        });
      // 20 streams reserve and wait upstream; then the server crashes under them.
      const inFlight = await Promise.all(Array.from({ length: 20 }, send));
      expect(inFlight.map((r) => r.status)).toEqual(Array.from({ length: 20 }, () => 200));
      await cluster.stop('immediate');
      const refused = await Promise.all(Array.from({ length: 5 }, send));
      for (const response of refused) {
        expect({ status: response.status, body: await response.json() }).toEqual({ status: UNAVAILABLE.status, body: UNAVAILABLE.body });
      }
      // The upstream answers; the clients get their whole streams; the settlements fail and are retried.
      gate.resolve();
      gateway.upstream.behaviour = {};
      const bodies = await Promise.all(inFlight.map((r) => r.text()));
      expect(bodies.every((body) => body.endsWith('data: [DONE]\n\n'))).toBe(true);
      await cluster.restart();
      await gateway.proxy.drain();

      // 12 prompt + 8 completion tokens at the mock price: $0.028 for each of the 20 streams, once,
      // under the X-Request-Id its client got, as every route shows it.
      await expectSettledOnceThroughRoutes(
        gateway,
        100,
        inFlight.map((r) => ({
          requestId: r.headers.get('x-request-id') as string,
          model: 'mock-model',
          cost: 0.028,
          promptTokens: 12,
          completionTokens: 8,
        })),
      );
      const key = await store.getKey(gateway.proxyKeyId);
      expect(key?.reserved).toBe(0);
      expect(gateway.logger.lines.some((line) => line.includes('key store unavailable'))).toBe(true);
    }, 90_000);
  });
});
