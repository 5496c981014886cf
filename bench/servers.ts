/**
 * Child process of the benchmark: builds the servers of one scenario on 127.0.0.1 and answers the
 * runner's questions (scrypt runs, cache size, heap) over IPC. Never generates load itself.
 */
import { readFile } from 'node:fs/promises';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import express from 'express';
import { rateLimit } from 'express-rate-limit';
import passport from 'passport';
import { Strategy as BearerStrategy } from 'passport-http-bearer';
import { RedisStore } from 'rate-limit-redis';
import type { KeyHasher as KeyHasherType } from '../src/keys/hashing.js';
import { serveCommands } from './child.js';
import { latencySummary } from './common.js';
import { HELLO, contractFloor, expressApp, oursApp, prewarm, quietAuth, sha256 } from './hot-path.js';
import type { KeyStore } from '../src/store/types.js';
import { leanForwarder } from './lean-forwarder.js';
import { KeyHasher, MemoryKeyStore, proxyRouter } from './package.js';
import { type BenchStore, issueProxyKeys, openStore, seedFillerKeys } from './stores.js';

const servers: Server[] = [];
const stores: BenchStore[] = [];
const hashers = new Map<string, KeyHasherType>();
const cleanups: Array<() => Promise<void>> = [];

function listen(handler: Parameters<typeof createServer>[1]): Promise<number> {
  const server = createServer({ keepAliveTimeout: 60_000 }, handler);
  servers.push(server);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

function heapUsed(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().heapUsed;
}

/** A memory store with `count` proxy keys issued and verified once by a fresh logN-10 hasher registered as `name`. */
async function warmMemoryStore(name: string, count: number) {
  const bench = await openStore('memory');
  stores.push(bench);
  const hasher = new KeyHasher({ scrypt: { logN: 10 } });
  hashers.set(name, hasher);
  const keys = await issueProxyKeys(bench.store, hasher, count);
  await prewarm(hasher, bench.store, keys);
  return { bench, hasher, keys };
}

/** Scenario 1: bare node:http, Express, Express + modelSwitchAuth on the memory store, Express + the contract floor. */
async function setupHotPath() {
  const { bench, hasher, keys } = await warmMemoryStore('ours', 1);
  const bare = await listen(function bareHello(_req, res) {
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(HELLO) });
    res.end(HELLO);
  });
  const plain = await listen(expressApp());
  const ours = await listen(oursApp(bench.store, hasher));
  const floor = await listen(expressApp(contractFloor(keys[0]?.key as string) as express.RequestHandler));
  return { ports: { bare, express: plain, ours, floor }, keys: keys.map((k) => k.key) };
}

interface Theirs {
  lookup(token: string): Promise<{ id: string } | null>;
  rateLimitStore?: RedisStore;
}

/** The stack users assemble instead: passport-http-bearer with a SHA-256 lookup, then express-rate-limit. */
function theirsApp(theirs: Theirs): express.Express {
  const strategy = new BearerStrategy(function findToken(token, done) {
    theirs.lookup(token).then(
      (user) => done(null, user ?? false),
      (error: unknown) => done(error),
    );
  });
  const authenticator = new passport.Passport();
  authenticator.use(strategy);
  const limiter = rateLimit({
    windowMs: 10_000,
    limit: 1_000_000_000,
    standardHeaders: 'draft-6',
    legacyHeaders: false,
    keyGenerator: (req) => (req.user as { id: string }).id,
    validate: false,
    ...(theirs.rateLimitStore ? { store: theirs.rateLimitStore } : {}),
  });
  return expressApp(authenticator.initialize(), authenticator.authenticate('bearer', { session: false }), limiter);
}

/** Scenario 2: theirs vs ours, on memory and (when available) on Redis. */
async function setupStack(args: { redis: boolean }) {
  const ports: Record<string, number> = {};
  const keysByTarget: Record<string, string[]> = {};
  const { bench: memory, hasher, keys } = await warmMemoryStore('ours-memory', 1);
  const tokens = new Map(keys.map((k) => [sha256(k.key), { id: String(k.id) }]));
  ports['theirs-memory'] = await listen(theirsApp({ lookup: async (token) => tokens.get(sha256(token)) ?? null }));
  ports['ours-memory'] = await listen(oursApp(memory.store, hasher));
  keysByTarget['theirs-memory'] = keys.map((k) => k.key);
  keysByTarget['ours-memory'] = keys.map((k) => k.key);
  if (args.redis) {
    const redis = await openStore('redis');
    stores.push(redis);
    const redisHasher = new KeyHasher({ scrypt: { logN: 10 } });
    hashers.set('ours-redis', redisHasher);
    const redisKeys = await issueProxyKeys(redis.store, redisHasher, 1);
    await prewarm(redisHasher, redis.store, redisKeys);
    const { createClient } = await import('@keyv/redis');
    const client = createClient({ url: process.env.REDIS_URL as string });
    await client.connect();
    cleanups.push(async () => {
      await client.del(redisKeys.map((k) => `benchtoken:${sha256(k.key)}`));
      await client.quit();
    });
    // Theirs on Redis too: the token's SHA-256 is looked up in Redis, the counter lives there.
    for (const k of redisKeys) await client.set(`benchtoken:${sha256(k.key)}`, JSON.stringify({ id: String(k.id) }));
    ports['theirs-redis'] = await listen(
      theirsApp({
        lookup: async (token) => {
          const found = await client.get(`benchtoken:${sha256(token)}`);
          return found === null ? null : (JSON.parse(found) as { id: string });
        },
        rateLimitStore: new RedisStore({
          prefix: `benchrl:${process.pid}:`,
          sendCommand: (...command: string[]) => client.sendCommand(command) as Promise<number>,
        }),
      }),
    );
    ports['ours-redis'] = await listen(oursApp(redis.store, redisHasher));
    keysByTarget['theirs-redis'] = redisKeys.map((k) => k.key);
    keysByTarget['ours-redis'] = redisKeys.map((k) => k.key);
  }
  return { ports, keys: keysByTarget };
}

/** Scenario 3: one store holding `size` keys; 100 of them are real and pre-warmed, the rest filler. */
async function setupScale(args: { size: number; kind: 'memory' | 'redis' }) {
  const before = heapUsed();
  const bench = await openStore(args.kind);
  stores.push(bench);
  const started = performance.now();
  await seedFillerKeys(bench.store, args.size - 100, args.kind === 'memory' ? 1 : 64);
  const seedMs = performance.now() - started;
  const heapBytes = heapUsed() - before;
  const hasher = new KeyHasher({ scrypt: { logN: 10 } });
  hashers.set('ours', hasher);
  const keys = await issueProxyKeys(bench.store, hasher, 100);
  await prewarm(hasher, bench.store, keys);
  const ours = await listen(oursApp(bench.store, hasher));
  return {
    ports: { ours },
    keys: keys.map((k) => k.key),
    seedMs,
    heapBytesPer100k: args.kind === 'memory' ? (heapBytes / (args.size - 100)) * 100_000 : null,
  };
}

/** Scenario 3b: verify more distinct keys than the cache holds; report what the cache kept. */
async function cacheBound(args: { cacheSize: number; keys: number }) {
  const maker = new KeyHasher({ scrypt: { logN: 4 } });
  const hasher = new KeyHasher({ scrypt: { logN: 4 }, cacheSize: args.cacheSize });
  let largest = 0;
  for (let i = 0; i < args.keys; i++) {
    const key = `ms-bench-cache-${i}`;
    await hasher.verify(key, await maker.hash(key));
    largest = Math.max(largest, hasher.cachedKeys);
  }
  return { cacheSize: args.cacheSize, verifiedKeys: args.keys, cachedKeys: hasher.cachedKeys, largest };
}

/** Scenario 4: legitimate key plus other real keys, all at the default scrypt parameters. */
async function setupAttack(args: { withUnthrottled: boolean }) {
  const bench = await openStore('memory');
  stores.push(bench);
  const maker = new KeyHasher();
  const keys = await issueProxyKeys(bench.store, maker, 11);
  const hasher = new KeyHasher();
  hashers.set('ours', hasher);
  await prewarm(hasher, bench.store, keys.slice(0, 1));
  const ports: Record<string, number> = { ours: await listen(oursApp(bench.store, hasher)) };
  if (args.withUnthrottled) {
    const open = new KeyHasher({ handleFailureLimit: null });
    hashers.set('unthrottled', open);
    await prewarm(open, bench.store, keys.slice(0, 1));
    ports.unthrottled = await listen(oursApp(bench.store, open));
  }
  return { ports, legitimate: keys[0]?.key, handles: keys.map((k) => k.handle) };
}

/** Scenario 5: 100 keys at the default parameters and a cold hasher (nothing verified yet). */
async function setupCold(args: { keys: number }) {
  const bench = await openStore('memory');
  stores.push(bench);
  const maker = new KeyHasher({ maxConcurrentHashes: 2 });
  const started = performance.now();
  const keys = await issueProxyKeys(bench.store, maker, args.keys);
  const hashMsEach = ((performance.now() - started) / args.keys) * 2;
  const hasher = new KeyHasher();
  hashers.set('ours', hasher);
  const ours = await listen(oursApp(bench.store, hasher));
  // One verification alone, on a separate hasher, for the bare scrypt cost.
  const probe = new KeyHasher();
  const first = keys[0];
  if (!first) throw new Error('no keys');
  const record = await bench.store.getKeyByHandle(first.handle);
  const single = performance.now();
  await probe.verify(first.key, record?.hash ?? '');
  const verifyMs = performance.now() - single;
  return {
    ports: { ours },
    keys: keys.map((k) => k.key),
    hashMsEach,
    verifyMs,
    threadpool: process.env.UV_THREADPOOL_SIZE ?? '4 (default)',
  };
}

/** proxyRouter as scenarios 6 and 7 mount it: one upstream serving `bench-model`, no log lines. */
function proxyApp(store: KeyStore, hasher: KeyHasherType, upstreamPort: number): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(
    '/v1',
    proxyRouter(store, {
      hasher,
      logger: { warn() {}, error() {} },
      upstreams: [{ name: 'bench', target: `http://127.0.0.1:${upstreamPort}/v1`, models: ['bench-model'] }],
      pricing: { 'bench-model': { inputPerMillion: 0.15, outputPerMillion: 0.6 } },
    }) as express.RequestHandler,
  );
  return app;
}

/**
 * Scenario 6: the same upstream through the lean keep-alive forwarder and through proxyRouter (auth,
 * reservation, settlement, metering) on the memory store and, when asked, on Redis.
 */
async function setupProxy(args: { upstreamPort: number; redis: boolean }) {
  const ports: Record<string, number> = {};
  const keys: Record<string, string[]> = {};
  ports.lean = await listen(leanForwarder(`http://127.0.0.1:${args.upstreamPort}`));
  // The same forwarder mounted on Express as proxyRouter is: what Express alone takes of the limit.
  const leanOnExpress = express();
  leanOnExpress.disable('x-powered-by');
  leanOnExpress.use('/v1', leanForwarder(`http://127.0.0.1:${args.upstreamPort}`) as express.RequestHandler);
  ports.leanExpress = await listen(leanOnExpress);
  const memory = await warmMemoryStore('proxy-memory', 1);
  ports.memory = await listen(proxyApp(memory.bench.store, memory.hasher, args.upstreamPort));
  // And behind modelSwitchAuth (same store and key as proxyRouter): the least a forwarder keeping
  // the contract's authentication costs on Express, with no reservation, settlement or metering.
  const leanBehindAuth = express();
  leanBehindAuth.disable('x-powered-by');
  leanBehindAuth.use(
    '/v1',
    quietAuth(memory.bench.store, memory.hasher) as express.RequestHandler,
    leanForwarder(`http://127.0.0.1:${args.upstreamPort}`) as express.RequestHandler,
  );
  ports.leanAuth = await listen(leanBehindAuth);
  keys.memory = memory.keys.map((k) => k.key);
  if (args.redis) {
    const redis = await openStore('redis');
    stores.push(redis);
    const hasher = new KeyHasher({ scrypt: { logN: 10 } });
    hashers.set('proxy-redis', hasher);
    const issued = await issueProxyKeys(redis.store, hasher, 1);
    await prewarm(hasher, redis.store, issued);
    ports.redis = await listen(proxyApp(redis.store, hasher, args.upstreamPort));
    keys.redis = issued.map((k) => k.key);
  }
  return { ports, keys };
}

/**
 * Scenario 7: a gateway process serving `keys` distinct keys through proxyRouter on the memory
 * store. The store keeps ledger entries for one second (`ledgerRetentionDays`), so what it holds
 * stays bounded by the keys, and growth over the run is the gateway's own.
 */
async function setupMemory(args: { upstreamPort: number; keys: number }) {
  const store = new MemoryKeyStore({ ledgerRetentionDays: 1 / 86_400 });
  // Cheap scrypt: each key's first request verifies it; the cache holds every key.
  const hasher = new KeyHasher({ scrypt: { logN: 4 }, cacheSize: args.keys * 2 });
  hashers.set('memory', hasher);
  const issued = await issueProxyKeys(store, hasher, args.keys);
  const port = await listen(proxyApp(store, hasher, args.upstreamPort));
  return { port, keys: issued.map((k) => k.key) };
}

const SELF = fileURLToPath(import.meta.url);
let probe: { stop: () => Promise<unknown> } | undefined;

/** Samples how long small threadpool jobs (fs.readFile) and the event loop take, until stopped. */
function startProbe() {
  const samples: number[] = [];
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  let running = true;
  const loop = (async () => {
    while (running) {
      const t = performance.now();
      await readFile(SELF);
      samples.push(performance.now() - t);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  probe = {
    async stop() {
      running = false;
      await loop;
      delay.disable();
      return { fs: { ...latencySummary(samples), samples: samples.length }, eventLoopDelayP99Ms: delay.percentile(99) / 1e6 };
    },
  };
  return null;
}

serveCommands(
  {
    hotPath: setupHotPath,
    stack: setupStack,
    scale: setupScale,
    cacheBound,
    attack: setupAttack,
    cold: setupCold,
    proxy: setupProxy,
    memory: setupMemory,
    /** Resident memory (MiB) as it is, then after a full collection, with the heap then in use. */
    rss: () => {
      const rss = process.memoryUsage().rss;
      const heap = heapUsed();
      return { rssMiB: rss / 2 ** 20, collectedRssMiB: process.memoryUsage().rss / 2 ** 20, heapMiB: heap / 2 ** 20 };
    },
    stats: (args: { hasher: string }) => {
      const hasher = hashers.get(args.hasher);
      return {
        scryptRuns: hasher?.scryptRuns ?? 0,
        throttled: hasher?.throttledVerifications ?? 0,
        cachedKeys: hasher?.cachedKeys ?? 0,
        inFlight: hasher?.hashesInFlight ?? 0,
        heapUsed: process.memoryUsage().heapUsed,
      };
    },
    /** CPU time this server process has used so far (µs), to price a request in CPU rather than throughput. */
    cpu: () => {
      const usage = process.cpuUsage();
      return { micros: usage.user + usage.system };
    },
    probeStart: startProbe,
    probeStop: async () => {
      const result = await probe?.stop();
      probe = undefined;
      return result;
    },
  },
  async () => {
    for (const server of servers) server.closeAllConnections();
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
    for (const cleanup of cleanups) await cleanup().catch(() => {});
    for (const bench of stores) await bench.close().catch(() => {});
  },
);
