/**
 * The example gateway: `npm run example`.
 *
 * An Express 5 app with the three factories mounted, on PORT (default 3000). It creates an
 * account with MODELSWITCH_INITIAL_BALANCE USD (default 10) and prints its billing key once, as
 * `MODELSWITCH_BILLING_KEY=mk-…`, so every curl command of the README can be run against it. The
 * dashboard is at /dashboard (its URL is printed beside the billing key): sign in with that key.
 *
 * With MODELSWITCH_ACCOUNT set it uses that account instead (made beforehand, e.g. with
 * `modelswitch-keys account create` and `billing-key create` on the same DATABASE_URL or
 * REDIS_URL) and issues no key: the account, its keys, balance and ledger carry over restarts.
 * Prometheus metrics are served at /metrics.
 */
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import express from 'express';
import {
  type KeyStore,
  ModelSwitchError,
  createAccount,
  dashboardRouter,
  issueKey,
  keysRouter,
  modelSwitchAuth,
  prometheusMetrics,
  proxyRouter,
  sendError,
} from '../src/index.js';
import { exampleStore } from './example-store.js';
import { upstreamsFromEnv } from './upstreams-from-env.js';

/**
 * How long a client may take to send a request's headers, and its whole request (headers and body),
 * before Node answers 408 and closes the socket. Node's defaults (60 s and 300 s) let a client that
 * trickles a body hold a socket and its buffer for five minutes; a 4 MiB body needs well under 30 s
 * at any usable bandwidth. Answers are not bounded by these (a stream may run for minutes).
 */
export const HEADERS_TIMEOUT_MS = 10_000;
export const REQUEST_TIMEOUT_MS = 30_000;

/**
 * A log line that can never throw: stdout may be a pipe whose reader is gone (`| head`, a closed
 * terminal), and a failed write must not stop the shutdown that settles and drains the proxy.
 */
export function safeLog(line: string): void {
  try {
    console.log(line);
  } catch {
    // Nowhere to write it: dropped.
  }
}

/** A write to a closed pipe also fails later, as an 'error' event on the stream: without a listener that kills the process. */
function ignoreBrokenPipes(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EPIPE') throw error;
    });
  }
}

export interface RunningGateway {
  server: Server;
  store: KeyStore;
  url: string;
  /** The billing key issued at start. */
  billingKey: string;
  close(): Promise<void>;
}

/** The example on an existing account (`accountId`): it issues no billing key. */
export interface RunningAccountGateway extends Omit<RunningGateway, 'billingKey'> {
  billingKey: null;
}

/** Options of {@link startGateway}. */
export interface StartOptions {
  port?: number;
  initialBalance?: number;
  store?: KeyStore;
  log?: (line: string) => void;
}

/** Starts the example gateway; `port` 0 picks a free port. */
export function startGateway(options?: StartOptions & { accountId?: undefined }): Promise<RunningGateway>;
/** Starts the example gateway on an existing account of the store, issuing no key. */
export function startGateway(options: StartOptions & { accountId: string }): Promise<RunningAccountGateway>;
export async function startGateway(
  options: StartOptions & { accountId?: string | undefined } = {},
): Promise<RunningGateway | RunningAccountGateway> {
  const log = options.log ?? safeLog;
  const chosen = options.store ? { store: options.store, description: 'key store: given by the caller' } : await exampleStore();
  const store = chosen.store;
  const existing = options.accountId === undefined ? null : await store.getAccount(options.accountId);
  if (options.accountId !== undefined && existing === null) {
    await store.close?.();
    throw new Error(
      `MODELSWITCH_ACCOUNT ${options.accountId} does not exist in this store: create it with modelswitch-keys account create --id ${options.accountId}`,
    );
  }
  const account = existing ?? (await createAccount(store, { balance: options.initialBalance ?? 10 }));
  const billing = existing === null ? await issueKey(store, { accountId: account.id, type: 'billing', name: 'example billing key' }) : null;

  const app = express();
  app.disable('x-powered-by');
  // Prometheus metrics of the three factories, served at /metrics (in production, where only the
  // scraper reaches it: a private port or network).
  const metrics = prometheusMetrics();
  app.get('/metrics', metrics.handler());
  app.use('/api', keysRouter(store, { metrics }));
  // The session secret signs dashboard sessions. A production host sets its own (shared by every
  // instance, kept across restarts); the example makes one per start, so a restart signs everyone out.
  const sessionSecret = process.env.DASHBOARD_SESSION_SECRET ?? randomBytes(32).toString('base64url');
  app.use('/dashboard', dashboardRouter(store, { session: { secret: sessionSecret } }));
  const upstreams = await upstreamsFromEnv();
  const proxy = proxyRouter(store, { ...upstreams.options, metrics });
  app.use('/v1', modelSwitchAuth(store, { metrics }), proxy);
  // Anything else: a 404 written like every other error of the gateway (same JSON, no-store). The path
  // is the client's own text: ModelSwitchError redacts a key pasted into it (GET /api/ms-…).
  app.use((req, res) => {
    sendError(res, new ModelSwitchError('route_not_found', `Unknown route: ${req.method} ${req.path}`));
  });

  const server = await new Promise<Server>((resolve) => {
    const listening = app.listen(options.port ?? 3000, '127.0.0.1', () => resolve(listening));
  });
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  const address = server.address();
  const url = `http://localhost:${typeof address === 'object' && address ? address.port : options.port}`;
  log(`ModelSwitch example gateway on ${url}; ${chosen.description}`);
  log(upstreams.description);
  if (billing === null) {
    log(`Account ${account.id} (MODELSWITCH_ACCOUNT) with a balance of ${account.balance} USD: use its billing key`);
    log(`Dashboard: ${url}/dashboard/ (sign in with its billing key)`);
  } else {
    log(`Account ${account.id} with a balance of ${account.balance} USD. Its billing key, shown once:`);
    log(`MODELSWITCH_BILLING_KEY=${billing.key}`);
    log(`Dashboard: ${url}/dashboard/ (sign in with the billing key above)`);
  }
  log(`Metrics: ${url}/metrics`);
  const running = {
    server,
    store,
    url,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Idle keep-alive connections would hold close() open; in-flight answers are cut.
      server.closeAllConnections();
      await closed;
      // Cut answers are settled (and failed settlements retried) before the store goes away.
      await proxy.drain();
      await proxy.close();
      await upstreams.close();
      await store.close?.();
    },
  };
  return billing === null ? { ...running, billingKey: null } : { ...running, billingKey: billing.key };
}

const isMain = process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/\\/g, '/').split('/').pop() ?? '');
if (isMain) {
  const balance = Number(process.env.MODELSWITCH_INITIAL_BALANCE ?? 10);
  if (!Number.isFinite(balance)) {
    console.error('MODELSWITCH_INITIAL_BALANCE must be a number of USD');
    process.exit(1);
  }
  ignoreBrokenPipes();
  const accountId = process.env.MODELSWITCH_ACCOUNT || undefined;
  const port = Number(process.env.PORT ?? 3000);
  const gateway = accountId ? await startGateway({ port, accountId }) : await startGateway({ port, initialBalance: balance });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    safeLog(`${signal}: stopping`);
    gateway.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}
