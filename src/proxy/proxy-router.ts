import type { IncomingMessage, ServerResponse } from 'node:http';
import { Authenticator, type ModelSwitchContext } from '../auth/authenticator.js';
import { findGeneration, isGenerationRequest } from '../auth/generation.js';
import { isKeyInfoRequest, keyInfoBody } from '../auth/key-info.js';
import { nameRoute, trackRequest } from '../auth/request-metrics.js';
import { DEFAULT_PROXY_PATHS } from '../defaults.js';
import { ModelSwitchError, invalidRequest } from '../errors/errors.js';
import { BufferBudget, readJsonBody } from '../http/body.js';
import type { Middleware, NextFunction } from '../http/middleware.js';
import { answerError, sendJson } from '../http/respond.js';
import { EventDispatcher, crossesBelow, proxyKeyActor } from '../events/events.js';
import { type Logger, errorText } from '../log.js';
import { assertStore } from '../store/assert-store.js';
import type { StoreGuard } from '../store/guard.js';
import { roundUsd } from '../store/spend-rules.js';
import type { KeyStore, LedgerEntry } from '../store/types.js';
import { Exchange, type ExchangeDependencies } from './exchange.js';
import { InFlight } from './in-flight.js';
import { urlContainsKey } from './key-scan.js';
import { checkTokenRate } from './metering.js';
import { type ProxyRouterOptions, resolveProxyOptions } from './options.js';
import { isModelAllowed } from '../keys/models.js';
import { type PreparedRequest, modelNotFound, prepare } from './prepare.js';
import { priceOf } from './pricing.js';
import { REQUEST_ID_HEADER, newRequestId } from './request-id.js';
import { UpstreamEvents } from './upstream-events.js';
import { listModels } from './upstreams.js';

export type { ProxyRouterOptions } from './options.js';

/** The middleware `proxyRouter` returns, with what a graceful shutdown needs. */
export interface ProxyRouter extends Middleware {
  /**
   * Resolves once every request this router reserved spend for (or is reserving for) has ended and settled, including
   * settlements still being retried in the background after a store failure (about 15 s at most)
   * and releases of reservations the store applied late. Call it when shutting down, after the
   * server stopped taking requests and before closing the store, so no charge and no release is
   * lost. From the first call on, pending retries hold the process open until they end.
   *
   * @example
   * ```ts
   * const proxy = proxyRouter(store, options);
   * app.use('/v1', modelSwitchAuth(store), proxy);
   * process.on('SIGTERM', () => {
   *   server.close(async () => {
   *     await proxy.drain();
   *     await store.close?.();
   *   });
   * });
   * ```
   */
  drain(): Promise<void>;
  /**
   * Releases the holds in the store (of any account) whose deadline has passed: the reservations
   * of gateways that died before settling (see `holdMarginMs`). Answers how many it released. The
   * sweeper (`holdSweepIntervalMs`) calls it; a host may call it from its own scheduler instead.
   * Rejects with 503 `store_unavailable` when the store fails.
   *
   * @example
   * ```ts
   * const released = await proxy.releaseExpiredHolds(); // e.g. from a cron job
   * ```
   */
  releaseExpiredHolds(): Promise<number>;
  /**
   * Stops the hold sweeper (`holdSweepIntervalMs`), resolves once a sweep under way has ended, and
   * closes the router's pooled upstream connections (not those of an upstream's own `agent`).
   * Call it when shutting down, after `drain()` (it cuts answers still running) and before closing
   * the store. Idle pooled connections never hold a process open by themselves.
   *
   * @example
   * ```ts
   * await proxy.drain();
   * await proxy.close();
   * await store.close?.();
   * ```
   */
  close(): Promise<void>;
}

/** Holds released per store call of a sweep: the store's own default batch, one bounded call. */
const SWEEP_BATCH = 1000;
/** Store calls one sweep makes at most, so a sweep always ends; the rest waits for the next. */
const SWEEP_MAX_BATCHES = 100;

/**
 * The metered inference proxy, mounted after `modelSwitchAuth` (it authenticates by itself when
 * mounted alone). Answers `GET /auth/key` and `GET /models` without spending; a `POST` to one of
 * its `paths` (the OpenAI inference routes by default; other requests go to `next()`) is routed by
 * the JSON body's `model` to an upstream (on a pool of kept-alive connections per upstream), with the
 * client's key replaced by the upstream's credential, its maximum cost reserved against the key's
 * spend limit and the account's balance, SSE streamed through event by event, and the real cost
 * from the upstream's `usage` settled afterwards.
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { MemoryKeyStore, modelSwitchAuth, proxyRouter } from 'modelswitch-keys';
 * const store = new MemoryKeyStore();
 * const app = express();
 * app.use('/v1', modelSwitchAuth(store), proxyRouter(store, {
 *   upstreams: [{ name: 'openai', target: 'https://api.openai.com/v1', apiKey: process.env.OPENAI_API_KEY, models: ['gpt-4o-mini'] }],
 *   pricing: { 'gpt-4o-mini': { inputPerMillion: 0.15, outputPerMillion: 0.6 } },
 * }));
 * ```
 */
export function proxyRouter(store: KeyStore, options: ProxyRouterOptions): ProxyRouter {
  assertStore(store, 'proxyRouter');
  const resolved = resolveProxyOptions(options);
  const { upstreams, pricing, allowUnpricedModels, isProxiedPath } = resolved;
  const authenticator = new Authenticator(store, resolved.auth);
  const { guard, now, logger, metrics } = authenticator;
  /** Route labels of the metrics: the proxied paths named exactly (a RegExp-matched path is `/v1/*`, never the raw path). */
  const proxiedRoutes = new Set(
    (options.paths ?? DEFAULT_PROXY_PATHS)
      .filter((path): path is string => typeof path === 'string')
      .map((path) => path.replace(/(.)\/+$/, '$1')),
  );
  /** What `drain()` waits for. */
  const inFlight = new InFlight();
  const announcer = new EventDispatcher(resolved.auth.onEvent, logger);
  /** Each exchange's response, for events delivered after it. */
  const responses = new WeakMap<Exchange, ServerResponse>();
  const dependencies: ExchangeDependencies = {
    store,
    guard,
    now,
    logger,
    inFlight,
    holdMarginMs: resolved.holdMarginMs,
    onSettled: announcer.enabled ? reportBalance : undefined,
    metrics,
  };

  /** `account.balance_low` when this settlement took the balance below the threshold (exactly once per crossing: ledger entries are serial per account). */
  function reportBalance(exchange: Exchange, entry: LedgerEntry): void {
    const threshold = resolved.balanceLowThreshold;
    if (!crossesBelow(roundUsd(entry.balanceAfter - entry.amount), entry.balanceAfter, threshold)) return;
    const keyId = exchange.context.key.id;
    announcer.afterResponse(responses.get(exchange), {
      type: 'account.balance_low',
      accountId: entry.accountId,
      keyId,
      actor: proxyKeyActor(keyId),
      time: entry.createdAt,
      balance: entry.balanceAfter,
      threshold,
    });
  }

  /** Reserves for the request; a refusal for the key's limit is reported as `key.limit_reached` once answered. */
  async function reserve(
    res: ServerResponse,
    context: ModelSwitchContext,
    prepared: PreparedRequest,
    requestId: string,
  ): Promise<Exchange> {
    try {
      return await Exchange.reserve(dependencies, context, prepared, requestId);
    } catch (error) {
      if (announcer.enabled && error instanceof ModelSwitchError && error.code === 'spend_limit_reached') {
        const { key, account, usage } = context;
        announcer.afterResponse(res, {
          type: 'key.limit_reached',
          accountId: account.id,
          keyId: key.id,
          actor: proxyKeyActor(key.id),
          time: prepared.at,
          limit: key.limit ?? 0,
          usage,
        });
      }
      throw error;
    }
  }
  const exchanges = new WeakMap<IncomingMessage, Exchange>();
  const events = new UpstreamEvents(upstreams, (req) => exchanges.get(req), logger);
  const isListed = (model: string) => allowUnpricedModels || priceOf(pricing, model) !== undefined;
  /** The request bodies this router holds, bounded by `maxBufferedBytes`. */
  const budget = new BufferBudget(resolved.maxBufferedBytes);

  /** A POST to a proxied path: prepare it, check the key's token rate, reserve, then send it upstream. */
  async function forward(req: IncomingMessage, res: ServerResponse, context: ModelSwitchContext): Promise<void> {
    // The gateway's own id (a client's X-Request-Id is not trusted to be unique), on every answer
    // from here on, refusals included, and before the first byte of a stream.
    const requestId = newRequestId();
    res.setHeader(REQUEST_ID_HEADER, requestId);
    const body = await readJsonBody(req, res, resolved.maxBodyBytes, { maxDepth: resolved.maxJsonDepth, budget });
    // OpenAI prompts are counted with their tokenizer here, in turns, so a large one does not hold other requests up.
    const promptTokens = await resolved.countPromptTokens?.(body.value);
    const prepared = prepare(body, pathOf(req.url), resolved, context, now, promptTokens);
    if (!prepared.ok) {
      if (prepared.hostBug !== undefined) logger.error(prepared.hostBug);
      throw prepared.error;
    }
    await checkTokenRate(store, guard, context, prepared.at);
    const exchange = await reserve(res, context, prepared, requestId);
    responses.set(exchange, res);
    exchanges.set(req, exchange);
    await events.send(exchange, req, res);
  }

  async function serve(req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void): Promise<void> {
    let context = (req as IncomingMessage & { modelSwitch?: ModelSwitchContext }).modelSwitch;
    if (context === undefined) {
      // Mounted alone: the same check as modelSwitchAuth (one store round trip for a key seen before).
      context = await authenticator.admit(req, res);
      (req as IncomingMessage & { modelSwitch?: ModelSwitchContext }).modelSwitch = context;
    }
    // Checked before routing: no key may reach an upstream in the URL either (nor sit in access logs).
    if (urlContainsKey(req.url ?? '')) {
      throw invalidRequest('The request URL contains a ModelSwitch API key; remove it (keys are never sent to providers)');
    }
    if (isKeyInfoRequest(req)) {
      nameRoute(req, '/v1/auth/key');
      sendJson(res, 200, keyInfoBody(context));
      return;
    }
    if (isGenerationRequest(req)) {
      nameRoute(req, '/v1/generation');
      sendJson(res, 200, await findGeneration(store, guard, context, req.url));
      return;
    }
    const path = pathOf(req.url);
    const allowed = context.key.models;
    const isOffered = allowed === null ? isListed : (model: string) => isModelAllowed(allowed, model) && isListed(model);
    if (req.method === 'GET' && path === '/models') {
      nameRoute(req, '/v1/models');
      sendJson(res, 200, { object: 'list', data: listModels(upstreams, isOffered) });
      return;
    }
    if (req.method === 'GET' && path.startsWith('/models/')) {
      nameRoute(req, '/v1/models/:id');
      let id = path.slice('/models/'.length);
      try {
        id = decodeURIComponent(id);
      } catch {
        // A malformed escape names no model: answered as unknown below.
      }
      // A model the key may not call is not in its list, so not found here either (as OpenAI answers a model you have no access to).
      const model = listModels(upstreams, isOffered).find((m) => m.id === id);
      if (model === undefined) throw modelNotFound(id, 'unknown');
      sendJson(res, 200, model);
      return;
    }
    if (req.method !== 'POST' || !isProxiedPath(path)) {
      next();
      return;
    }
    nameRoute(req, proxiedRoutes.has(path) ? `/v1${path}` : '/v1/*');
    await forward(req, res, context);
  }

  const router = function proxyRouter(req: IncomingMessage, res: ServerResponse, next: NextFunction): void {
    // Counted as `/v1/*` unless it is one of the proxy's own routes (named in serve).
    trackRequest(metrics, req, res, '/v1/*');
    serve(req, res, next).catch((error: unknown) => answerError(res, error, logger));
  };
  const sweeper = new HoldSweeper(store, guard, now, logger, resolved.holdSweepIntervalMs);
  return Object.assign(router, {
    drain: () => inFlight.drain(),
    releaseExpiredHolds: () => sweeper.sweep(),
    close: async () => {
      await sweeper.close();
      events.close();
    },
  });
}

/**
 * Releases expired holds (see `ProxyRouter.releaseExpiredHolds`), every `intervalMs` when it is not
 * 0, on an unref'd timer: a sweeper never keeps the process alive. One sweep at a time; a sweep
 * that releases a whole batch goes on with the next, up to {@link SWEEP_MAX_BATCHES}.
 */
class HoldSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;
  private closed = false;

  constructor(
    private readonly store: KeyStore,
    private readonly guard: StoreGuard,
    private readonly now: () => number,
    private readonly logger: Logger,
    intervalMs: number,
  ) {
    if (intervalMs > 0) {
      this.timer = setInterval(() => {
        this.sweep().catch((error: unknown) => {
          // A store failure is logged by the guard (once per outage); anything else is the host's clock.
          if (!(error instanceof ModelSwitchError)) logger.error(`modelswitch-keys: could not sweep expired holds: ${errorText(error)}`);
        });
      }, intervalMs).unref();
    }
  }

  sweep(): Promise<number> {
    this.running ??= this.run().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async run(): Promise<number> {
    let total = 0;
    for (let batch = 0; batch < SWEEP_MAX_BATCHES && !this.closed; batch++) {
      const now = this.now();
      const released = await this.guard.run('releaseExpiredHolds', () => this.store.releaseExpiredHolds(now, SWEEP_BATCH));
      total += released;
      if (released < SWEEP_BATCH) break;
    }
    if (total > 0) {
      this.logger.warn(`modelswitch-keys: released ${total} expired spend holds (requests whose gateway stopped before settling them)`);
    }
    return total;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => {});
  }
}

/** The path below the mount, without its query or a trailing slash. */
function pathOf(url: string | undefined): string {
  const path = (url ?? '/').split('?', 1)[0] as string;
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
}
