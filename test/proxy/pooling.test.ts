import { Agent as HttpAgent, type Server, createServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { roundUsd } from '../../src/store/spend-rules.js';
import { type Gateway, MOCK_PRICE, chat, deferred, post, startGateway } from './harness.js';

/**
 * A node:http upstream that counts what the proxy's connection pool does to it: connections opened
 * and open at once, requests that reached its handler, and faults a provider's server or load
 * balancer produces on kept-alive connections.
 */
interface PoolUpstream {
  url: string;
  /** Connections it accepted. */
  connections: number;
  /** Connections open at once, at most. */
  maxOpen: number;
  /** Requests that arrived, including the ones it reset. */
  arrivals: number;
  /** The `Authorization` of every request it answered, in order. */
  answered: string[];
  /** Reset a request arriving on a connection that served one before (as a server closing it idle while the request crossed its close), this many times. */
  resetReused: number;
  /** Reset every request from this arrival on (1-based). */
  resetFrom: number;
  /** Destroy each connection right after its answer, without `Connection: close`. */
  closeAfterEach: boolean;
  /** Answers wait for this. */
  hold: Promise<void> | undefined;
  /** Resolves once `count` requests arrived. */
  arrived(count: number): Promise<void>;
  /** Resolves once no connection is open. */
  idle(): Promise<void>;
  close(): Promise<void>;
}

const COMPLETION = {
  id: 'chatcmpl-pool',
  object: 'chat.completion',
  created: 1_700_000_000,
  model: 'mock-model',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello', refusal: null }, logprobs: null, finish_reason: 'stop' }],
  usage: { prompt_tokens: 12, completion_tokens: 8, total_tokens: 20 },
};
/** What 12 prompt and 8 completion tokens cost at MOCK_PRICE. */
const COST = 0.028;

const UPSTREAM_ERROR = {
  error: {
    message: 'The upstream pool could not be reached or answered with an invalid response.',
    type: 'api_error',
    code: 'upstream_error',
  },
};

async function startPoolUpstream(): Promise<PoolUpstream> {
  const served = new WeakMap<Socket, number>();
  const sockets = new Set<Socket>();
  let open = 0;
  const waiters: Array<() => void> = [];
  const wake = () => {
    for (const waiter of waiters.splice(0)) waiter();
  };
  const until = (done: () => boolean) =>
    new Promise<void>((resolve) => {
      const check = () => (done() ? resolve() : waiters.push(check));
      check();
    });
  const upstream: PoolUpstream = {
    url: '',
    connections: 0,
    maxOpen: 0,
    arrivals: 0,
    answered: [],
    resetReused: 0,
    resetFrom: Number.POSITIVE_INFINITY,
    closeAfterEach: false,
    hold: undefined,
    arrived: (count) => until(() => upstream.arrivals >= count),
    idle: () => until(() => open === 0),
    close: async () => {},
  };
  const server: Server = createServer((req, res) => {
    const { socket } = req;
    const before = served.get(socket) ?? 0;
    served.set(socket, before + 1);
    upstream.arrivals++;
    wake();
    if (upstream.arrivals >= upstream.resetFrom || (before > 0 && upstream.resetReused > 0)) {
      if (before > 0 && upstream.resetReused > 0) upstream.resetReused--;
      socket.destroy();
      return;
    }
    req.resume();
    req.on('end', async () => {
      await upstream.hold;
      upstream.answered.push(String(req.headers.authorization));
      const text = JSON.stringify(COMPLETION);
      if (upstream.closeAfterEach) res.once('finish', () => setImmediate(() => socket.destroy()));
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  server.on('connection', (socket: Socket) => {
    upstream.connections++;
    open++;
    upstream.maxOpen = Math.max(upstream.maxOpen, open);
    sockets.add(socket);
    socket.once('close', () => {
      open--;
      sockets.delete(socket);
      wake();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  upstream.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  upstream.close = () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
  return upstream;
}

let gateway: Gateway | undefined;
let upstream: PoolUpstream | undefined;
afterEach(async () => {
  await gateway?.proxy.close();
  await gateway?.close();
  await upstream?.close();
  gateway = undefined;
  upstream = undefined;
});

async function start(options: { maxSockets?: number; keepAliveMs?: number; agent?: HttpAgent } = {}): Promise<[Gateway, PoolUpstream]> {
  upstream = await startPoolUpstream();
  const { agent, ...pool } = options;
  gateway = await startGateway({
    proxy: {
      upstreams: [
        { name: 'pool', target: upstream.url, apiKey: 'sk-upstream-secret', models: ['mock-model'], ...(agent ? { agent } : {}) },
      ],
      pricing: { 'mock-model': MOCK_PRICE },
      ...pool,
    },
  });
  return [gateway, upstream];
}

/** Posts a chat completion and checks the whole answer: 200, JSON, the upstream's body unchanged. */
async function expectCompletion(gw: Gateway): Promise<void> {
  const res = await post(gw, '/chat/completions', chat());
  expect({ status: res.status, type: res.headers.get('content-type'), body: JSON.parse(res.text) }).toEqual({
    status: 200,
    type: 'application/json',
    body: COMPLETION,
  });
}

/** The usage entries of the gateway's account, oldest first, and what the key and account hold. */
async function ledger(gw: Gateway) {
  const { entries } = await gw.store.listLedger(gw.account.id, { limit: 100, type: 'usage' });
  const key = await gw.store.getKey(gw.proxyKeyId);
  const account = await gw.store.getAccount(gw.account.id);
  return {
    entries: entries.length,
    requestIds: new Set(entries.map((entry) => entry.requestId)).size,
    usage: key?.usage,
    reserved: [key?.reserved, account?.reserved],
    balance: account?.balance,
  };
}

function charged(requests: number) {
  return {
    entries: requests,
    requestIds: requests,
    usage: roundUsd(requests * COST),
    reserved: [0, 0],
    balance: roundUsd(10 - requests * COST),
  };
}

describe('proxyRouter upstream connections', () => {
  it('sends sequential requests on one kept-alive connection', async () => {
    const [gw, up] = await start();
    for (let i = 0; i < 10; i++) await expectCompletion(gw);
    expect({ connections: up.connections, answered: up.answered.length }).toEqual({ connections: 1, answered: 10 });
    expect(await ledger(gw)).toEqual(charged(10));
  });

  it('opens at most maxSockets connections; requests past it wait for one and go whole, with their upstream credential', async () => {
    const [gw, up] = await start({ maxSockets: 2 });
    const release = deferred();
    up.hold = release.promise;
    const answers = Array.from({ length: 5 }, () => expectCompletion(gw));
    await up.arrived(2);
    release.resolve();
    await Promise.all(answers);
    expect({ connections: up.connections, maxOpen: up.maxOpen, answered: up.answered }).toEqual({
      connections: 2,
      maxOpen: 2,
      answered: Array(5).fill('Bearer sk-upstream-secret'),
    });
    expect(await ledger(gw)).toEqual(charged(5));
  });

  it('never sends a request whose client left while it waited for a connection, and charges it nothing', async () => {
    const [gw, up] = await start({ maxSockets: 1 });
    const release = deferred();
    up.hold = release.promise;
    const first = expectCompletion(gw);
    await up.arrived(1);
    const reservedBy = async () => (await gw.store.getKey(gw.proxyKeyId))?.reserved ?? 0;
    const one = await reservedBy();
    const leaving = new AbortController();
    const second = fetch(`${gw.url}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gw.proxyKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(chat()),
      signal: leaving.signal,
    }).catch((error: unknown) => (error as Error).name);
    await vi.waitFor(async () => expect(await reservedBy()).toBeGreaterThan(one));
    leaving.abort();
    expect(await second).toBe('AbortError');
    await vi.waitFor(async () => expect(await reservedBy()).toBe(one));
    release.resolve();
    await first;
    await gw.proxy.drain();
    expect({ arrivals: up.arrivals, connections: up.connections }).toEqual({ arrivals: 1, connections: 1 });
    expect(await ledger(gw)).toEqual(charged(1));
  });

  it('sends a request again, once and on a new connection, when the upstream closed its kept connection as it arrived; charged once', async () => {
    const [gw, up] = await start();
    await expectCompletion(gw);
    up.resetReused = 1;
    await expectCompletion(gw);
    expect({ connections: up.connections, arrivals: up.arrivals, answered: up.answered.length }).toEqual({
      connections: 2,
      arrivals: 3,
      answered: 2,
    });
    expect(await ledger(gw)).toEqual(charged(2));
  });

  it('answers 502 and charges nothing when the request fails again on the new connection: it is sent again only once', async () => {
    const [gw, up] = await start();
    await expectCompletion(gw);
    up.resetFrom = 2;
    const res = await post(gw, '/chat/completions', chat());
    expect({ status: res.status, type: res.headers.get('content-type'), body: JSON.parse(res.text) }).toEqual({
      status: 502,
      type: 'application/json',
      body: UPSTREAM_ERROR,
    });
    expect({ connections: up.connections, arrivals: up.arrivals }).toEqual({ connections: 2, arrivals: 3 });
    expect(await ledger(gw)).toEqual(charged(1));
  });

  it('answers every request whole when the upstream closes each connection right after its answer', async () => {
    const [gw, up] = await start();
    up.closeAfterEach = true;
    for (let i = 0; i < 20; i++) await expectCompletion(gw);
    expect(up.answered.length).toBe(20);
    expect(await ledger(gw)).toEqual(charged(20));
  });

  it('opens a connection per request with keepAliveMs 0', async () => {
    const [gw, up] = await start({ keepAliveMs: 0 });
    for (let i = 0; i < 3; i++) await expectCompletion(gw);
    expect(up.connections).toBe(3);
  });

  it("closes its pooled connections on close(), and leaves an upstream's own agent alone", async () => {
    const [gw, up] = await start();
    await expectCompletion(gw);
    await gw.proxy.close();
    await up.idle();
    expect(up.connections).toBe(1);

    const agent = new HttpAgent({ keepAlive: true });
    await gw.close();
    await up.close();
    const [own, ownUpstream] = await start({ agent });
    await expectCompletion(own);
    await expectCompletion(own);
    await own.proxy.close();
    expect({ connections: ownUpstream.connections, free: Object.values(agent.freeSockets).flat().length }).toEqual({
      connections: 1,
      free: 1,
    });
    agent.destroy();
  });
});
