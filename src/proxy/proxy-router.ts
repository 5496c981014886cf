import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import { type RequestHandler, createProxyMiddleware } from 'http-proxy-middleware';
import { API_KEY_PATTERN } from '../keys/api-key.js';
import type { Middleware, NextFunction } from '../http/middleware.js';
import { answerError } from '../http/respond.js';
import { assertStore } from '../store/assert-store.js';
import { type AuthOptions, Authenticator, type ModelSwitchContext } from '../auth/authenticator.js';
import { isJsonObject, readJsonBody } from '../http/body.js';
import { ConfigurationError } from '../errors/configuration-error.js';
import { ModelSwitchError, invalidRequest } from '../errors/errors.js';
import { sendError, sendJson } from '../http/respond.js';
import { isKeyInfoRequest, keyInfoBody } from '../auth/key-info.js';
import { type ModelPrice, type Pricing, type TokenUsage, costOf, priceOf, readUsage, validatePricing } from './pricing.js';
import { checkTokenRate, countTokens, maxCost, maxOutputTokens, refusal } from './metering.js';
import { MAX_USD, limitPeriod } from '../store/spend-rules.js';
import { SseUsageScanner } from './sse-usage.js';
import { errorText } from '../log.js';
import type { KeyStore, ReservationResult, SpendReservation } from '../store/types.js';
import { InFlight } from './in-flight.js';
import { type ResolvedUpstream, type Upstream, findUpstream, listModels, resolveProxyPaths, resolveUpstreams } from './upstreams.js';

/** Options of {@link proxyRouter}. `upstreams` and `pricing` are required. */
export interface ProxyRouterOptions extends Omit<AuthOptions, 'keyType'> {
  /** Where requests go, chosen by the body's `model`. */
  upstreams: readonly Upstream[];
  /** USD per million tokens by model (table or function). A model without a price is refused (404) unless `allowUnpricedModels`. */
  pricing: Pricing;
  /** Serve models that have no price, free of charge (still needing a positive balance). Default false. */
  allowUnpricedModels?: boolean;
  /** Output tokens reserved when a request sets no `max_tokens`/`max_completion_tokens`/`max_output_tokens`. Default 4096. */
  defaultMaxTokens?: number;
  /** Prompt tokens reserved for a request body. Default: one token per 4 bytes of JSON. */
  estimatePromptTokens?: (body: Readonly<Record<string, unknown>>, bodyBytes: number) => number;
  /** Upstream silent for this long (before or during the answer) → 504 `upstream_timeout`. Default 600000 (10 minutes). */
  timeoutMs?: number;
  /** Largest accepted JSON body in bytes; larger answers 413. Default 4194304 (4 MiB). */
  maxBodyBytes?: number;
  /**
   * Paths below the mount that are proxied (for `POST`): exact paths or `RegExp`s tested on the
   * path without its query. Other paths go to `next()`. Default {@link DEFAULT_PROXY_PATHS}:
   * `/chat/completions`, `/completions`, `/embeddings`, `/responses`.
   */
  paths?: ReadonlyArray<string | RegExp>;
}

/** One proxied request between reservation and settlement. */
interface Exchange {
  context: ModelSwitchContext;
  upstream: ResolvedUpstream;
  model: string;
  price: ModelPrice | undefined;
  period: string | null;
  reserved: number;
  /** The body as sent upstream: the parsed value that was priced, serialized again. */
  body: Buffer;
  /** The upstream answered 2xx: its answer is charged. */
  metered: boolean;
  /** Bytes of a 2xx answer written to the client; once > 0 an early end is charged (see settle). */
  forwardedBytes: number;
  /** The last usage the upstream reported (the final SSE chunk, or the JSON answer). */
  usage: TokenUsage | undefined;
  /** The client did not ask for `stream_options.include_usage`, so its usage-only chunk is dropped. */
  stripUsageChunk: boolean;
  proxyReq: ClientRequest | undefined;
  timedOut: boolean;
  settlement: Promise<void> | undefined;
  /** Still counted in the router's `InFlight` (entered before its reservation): its response has not closed yet. */
  open: boolean;
}

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
}

/** Request headers never sent upstream: the gateway's credential and client state that is not the provider's business. */
const DROPPED_REQUEST_HEADERS = new Set([
  'authorization',
  'proxy-authorization',
  'cookie',
  'x-api-key',
  'api-key',
  'openai-organization',
  'openai-project',
  'expect',
  'transfer-encoding',
  'x-forwarded-for',
  'x-real-ip',
  'forwarded',
]);
/**
 * Hop-by-hop headers (RFC 9110 §7.6.1), upstream cookies, and what describes the operator's own
 * provider account (its organization and project ids; its `x-ratelimit-*`, easily mistaken for the
 * gateway's limits, and its IETF `RateLimit`/`RateLimit-*`, which would overwrite the gateway's own)
 * never go back to the client.
 */
const DROPPED_RESPONSE_HEADERS = new Set([
  'openai-organization',
  'anthropic-organization-id',
  'openai-project',
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'set-cookie',
]);
/** API_KEY_PATTERN without its word boundaries: a key glued to other characters is still a key. */
const ANY_KEY = new RegExp(API_KEY_PATTERN.source.replaceAll('\\b', ''));
const PERCENT_ESCAPE = /%([0-9A-Fa-f]{2})/g;
/** How an exchange ended, for settlement and its log line. */
type Ending = 'completed' | 'client_closed' | 'upstream_broke' | 'failed';
const ENDING_TEXT: Record<Exclude<Ending, 'completed'>, string> = {
  client_closed: 'client disconnected',
  upstream_broke: 'upstream broke off',
  failed: 'upstream failed',
};
/** Pauses between settlement attempts when the store fails (ms). */
const SETTLE_RETRIES = [100, 400, 1500, 4000, 9000];

/**
 * Runs `attempt` again after each pause of SETTLE_RETRIES until it succeeds; `giveUp` after the
 * last. Resolves when it succeeded or gave up; its timers are `inFlight`'s (see `ProxyRouter.drain`).
 */
function retryInBackground(attempt: () => Promise<unknown>, giveUp: () => void, inFlight: InFlight): Promise<void> {
  return new Promise((resolve) => {
    const wait = (round: number) => {
      if (round >= SETTLE_RETRIES.length) {
        giveUp();
        resolve();
        return;
      }
      inFlight.later(() => {
        attempt().then(
          () => resolve(),
          () => wait(round + 1),
        );
      }, SETTLE_RETRIES[round] as number);
    };
    wait(0);
  });
}
/** Bodies of non-streamed answers are kept up to this size to read their `usage`; larger ones are charged the reservation. */
const MAX_METERED_BODY = 16 * 1024 * 1024;

/** The provider's own rate-limit headers, OpenAI's, Anthropic's and the IETF's (names as Node gives them, lower case). */
function isProviderRateLimit(name: string): boolean {
  return (
    name.startsWith('x-ratelimit-') || name === 'ratelimit' || name.startsWith('ratelimit-') || name.startsWith('anthropic-ratelimit-')
  );
}

function pathOf(url: string | undefined): string {
  const path = (url ?? '/').split('?', 1)[0] as string;
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
}

/**
 * Whether a request URL (path, query names and values) contains a key, also percent-encoded once
 * or several times: the upstream receives the URL as it is, and no key may reach it.
 */
function urlContainsKey(url: string): boolean {
  let text = url;
  // Each round undoes one layer of percent-encoding; key characters are ASCII, so byte-wise decoding suffices.
  for (let round = 0; round < 5; round++) {
    if (ANY_KEY.test(text)) return true;
    const decoded = text.replace(PERCENT_ESCAPE, (_match, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
    if (decoded === text) return false;
    text = decoded;
  }
  return ANY_KEY.test(text);
}

function flush(res: ServerResponse): void {
  // compression() adds res.flush(); calling it pushes each SSE event out instead of waiting for a full gzip block.
  (res as ServerResponse & { flush?: () => void }).flush?.();
}

function modelNotFound(model: string, reason: 'unknown' | 'unpriced'): ModelSwitchError {
  const message =
    reason === 'unknown'
      ? `The model '${model}' does not exist or is not served by this gateway.`
      : `The model '${model}' has no price configured on this gateway, so it cannot be metered.`;
  return new ModelSwitchError('model_not_found', message, { param: 'model' });
}

/**
 * The metered inference proxy, mounted after `modelSwitchAuth` (it authenticates by itself when
 * mounted alone). Answers `GET /auth/key` and `GET /models` without spending; a `POST` to one of
 * its `paths` (the OpenAI inference routes by default; other requests go to `next()`) is routed by
 * the JSON body's `model` to an upstream (http-proxy-middleware), with the
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
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError('ERR_MS_OPTION', 'proxyRouter(store, options): options with upstreams and pricing are required');
  }
  const authenticator = new Authenticator(store, { ...options, keyType: 'proxy' });
  const { guard, now, logger } = authenticator;
  const pricing = validatePricing(options.pricing);
  const allowUnpriced = options.allowUnpricedModels ?? false;
  const defaultMaxTokens = options.defaultMaxTokens ?? 4096;
  if (!Number.isInteger(defaultMaxTokens) || defaultMaxTokens < 0) {
    throw new ConfigurationError('ERR_MS_OPTION', 'proxyRouter: defaultMaxTokens must be an integer ≥ 0');
  }
  const estimatePromptTokens = options.estimatePromptTokens ?? ((_body, bytes) => Math.ceil(bytes / 4));
  const maxBodyBytes = options.maxBodyBytes ?? 4 * 1024 * 1024;
  if (!Number.isInteger(maxBodyBytes) || maxBodyBytes < 1)
    throw new ConfigurationError('ERR_MS_OPTION', 'proxyRouter: maxBodyBytes must be a positive integer');
  const upstreams = resolveUpstreams(options.upstreams, options.timeoutMs ?? 600_000);
  const isProxiedPath = resolveProxyPaths(options.paths);
  const exchanges = new WeakMap<IncomingMessage, Exchange>();
  const isListed = (model: string) => allowUnpriced || priceOf(pricing, model) !== undefined;
  /** What `drain()` waits for. */
  const inFlight = new InFlight();

  /** An exchange's response closed: it no longer counts (once, whichever path gets here first). */
  function closeExchange(exchange: Exchange): void {
    if (!exchange.open) return;
    exchange.open = false;
    inFlight.leave();
  }

  /**
   * What an exchange costs. Reported usage wins. Without it, a 2xx answer is charged its
   * reservation when it completed, or when it ended early (client gone, upstream broken) after
   * some of it reached the client: otherwise reading a stream up to `finish_reason` and hanging
   * up before the usage chunk would get the completion for free. Nothing reached the client: free.
   */
  function chargeFor(exchange: Exchange, ending: Ending): number {
    const { price, usage, upstream, model } = exchange;
    if (price === undefined) return 0;
    if (usage !== undefined) {
      const cost = costOf(price, usage);
      if (Number.isFinite(cost) && cost <= MAX_USD) return cost;
      logger.warn(
        `modelswitch-keys: upstream ${upstream.name} reported usage for model ${model} that prices to ${cost} USD; charged the reserved maximum`,
      );
      return exchange.reserved;
    }
    if (!exchange.metered) return 0;
    if (ending === 'completed') {
      // A successful answer without usage is charged its reservation: nothing is served unmetered.
      logger.warn(`modelswitch-keys: upstream ${upstream.name} reported no usage for model ${model}; charged the reserved maximum`);
      return exchange.reserved;
    }
    if (exchange.forwardedBytes === 0) return 0;
    logger.warn(
      `modelswitch-keys: the answer of upstream ${upstream.name} for model ${model} ended early (${ENDING_TEXT[ending]}) before it reported usage; charged the reserved maximum`,
    );
    return exchange.reserved;
  }

  /** Releases the reservation and charges what the exchange cost; runs once per exchange. */
  function settle(exchange: Exchange, ending: Ending): Promise<void> {
    if (exchange.settlement !== undefined) return exchange.settlement;
    exchange.settlement = (async () => {
      const cost = chargeFor(exchange, ending);
      const usage = exchange.usage;
      const at = now();
      const { key, account } = exchange.context;
      const settlement = { keyId: key.id, accountId: account.id, reserved: exchange.reserved, cost, period: exchange.period, now: at };
      // Token counting runs beside the settlement and fails on its own (the guard logs it), so its
      // failure never reads as a lost settlement.
      const counting = usage === undefined ? undefined : countTokens(store, guard, exchange.context, usage, at).catch(() => {});
      const attempt = () => guard.run('settleSpend', () => store.settleSpend(settlement));
      try {
        await attempt();
      } catch {
        // A store blip must not lose the charge nor hold the reservation for good: retry in the
        // background with backoff (about 15 s in all; the answer does not wait), then ask for a hand
        // reconciliation.
        inFlight.track(
          retryInBackground(
            attempt,
            () =>
              logger.error(
                `modelswitch-keys: could not settle key ${key.id} (reserved ${exchange.reserved}, cost ${cost}); reconcile by hand`,
              ),
            inFlight,
          ),
        );
      }
      await counting;
    })().catch((error: unknown) => {
      // Only the host's now() can throw here (store failures are retried above, the logger is safe):
      // nothing was charged and the reservation stays held, but the answer still ends.
      logger.error(
        `modelswitch-keys: could not settle key ${exchange.context.key.id} (reserved ${exchange.reserved}): ${errorText(error)}; reconcile by hand`,
      );
    });
    inFlight.track(exchange.settlement);
    return exchange.settlement;
  }

  /**
   * Reserves through the guard while keeping the store's own promise: when the guard gives up (a
   * timeout) the call may still take effect later, and a reservation nobody settles would hold the
   * key's limit and the account's balance forever. So once it does, it is released in the background.
   */
  async function reserve(reservation: SpendReservation): Promise<ReservationResult> {
    const pending = new Promise<ReservationResult>((resolve) => resolve(store.reserveSpend(reservation)));
    try {
      return await guard.run('reserveSpend', () => pending);
    } catch (error) {
      // Tracked at once, so drain() waits for the store's late answer too.
      inFlight.track(
        pending.then(
          (result) => (result?.ok === true ? releaseLateReservation(reservation) : undefined),
          () => {
            // The store failed the call itself: nothing was reserved.
          },
        ),
      );
      throw error;
    }
  }

  async function releaseLateReservation(reservation: SpendReservation): Promise<void> {
    const { keyId, accountId, amount, period } = reservation;
    try {
      await guard.run('settleSpend', () => store.settleSpend({ keyId, accountId, reserved: amount, cost: 0, period, now: now() }));
      logger.warn(
        `modelswitch-keys: released a reservation of $${amount} for key ${keyId} that the store applied after the request was refused`,
      );
    } catch {
      logger.error(`modelswitch-keys: could not release a late reservation of $${amount} for key ${keyId}; reconcile by hand`);
    }
  }

  /** A failure before or while the upstream answered: settle, then answer 502/504 or cut the connection. */
  function onUpstreamFailure(exchange: Exchange, res: ServerResponse): void {
    void settle(exchange, 'failed').then(() => {
      if (res.headersSent || res.destroyed) {
        res.destroy();
        return;
      }
      sendError(
        res,
        exchange.timedOut
          ? new ModelSwitchError(
              'upstream_timeout',
              `The upstream ${exchange.upstream.name} did not answer within ${exchange.upstream.timeoutMs} ms.`,
            )
          : new ModelSwitchError(
              'upstream_error',
              `The upstream ${exchange.upstream.name} could not be reached or answered with an invalid response.`,
            ),
      );
    });
  }

  function onProxyReq(proxyReq: ClientRequest, req: IncomingMessage): void {
    const exchange = exchanges.get(req);
    if (exchange === undefined) {
      proxyReq.destroy();
      return;
    }
    exchange.proxyReq = proxyReq;
    for (const name of proxyReq.getHeaderNames()) {
      const value = proxyReq.getHeader(name);
      if (DROPPED_REQUEST_HEADERS.has(name) || ANY_KEY.test(String(value))) proxyReq.removeHeader(name);
    }
    for (const [name, value] of Object.entries(exchange.upstream.headers)) proxyReq.setHeader(name, value);
    proxyReq.setHeader('content-type', 'application/json');
    proxyReq.setHeader('content-length', exchange.body.length);
    // Usage is read from the answer, so ask for it uncompressed.
    proxyReq.setHeader('accept-encoding', 'identity');
    proxyReq.setTimeout(exchange.upstream.timeoutMs, () => {
      exchange.timedOut = true;
      proxyReq.destroy(new Error('upstream timeout'));
    });
    // The body was read to route the request (STYLE: fixRequestBody): send it again, as rewritten.
    proxyReq.write(exchange.body);
  }

  function onProxyRes(proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse): void {
    const exchange = exchanges.get(req);
    if (exchange === undefined || res.destroyed) {
      proxyRes.destroy();
      return;
    }
    const status = proxyRes.statusCode ?? 502;
    const contentType = String(proxyRes.headers['content-type'] ?? '');
    const isStream = contentType.includes('text/event-stream');
    const metered = status >= 200 && status < 300;
    exchange.metered = metered;
    res.statusCode = status;
    for (const [name, value] of Object.entries(proxyRes.headers)) {
      if (value === undefined || DROPPED_RESPONSE_HEADERS.has(name) || isProviderRateLimit(name)) continue;
      if (isStream && name === 'content-length') continue;
      res.setHeader(name, value);
    }
    const scanner = isStream && metered ? new SseUsageScanner(exchange.stripUsageChunk) : undefined;
    let kept: Buffer[] | undefined = !isStream && metered ? [] : undefined;
    let keptBytes = 0;
    if (isStream) {
      // no-transform keeps compression() (and other transforming proxies) from buffering the stream.
      res.setHeader('cache-control', 'no-cache, no-transform');
      res.setHeader('x-accel-buffering', 'no');
      res.flushHeaders();
    }
    let ended = false;
    proxyRes.on('data', function forwardChunk(chunk: Buffer) {
      const out = scanner ? scanner.push(chunk) : chunk;
      if (scanner?.usage !== undefined) exchange.usage = scanner.usage;
      if (metered) exchange.forwardedBytes += out.length;
      if (kept !== undefined) {
        keptBytes += chunk.length;
        if (keptBytes > MAX_METERED_BODY) kept = undefined;
        else kept.push(chunk);
      }
      if (out.length > 0 && !res.write(out)) {
        proxyRes.pause();
        res.once('drain', () => proxyRes.resume());
      }
      if (isStream) flush(res);
    });
    proxyRes.on('end', function finishAnswer() {
      ended = true;
      if (scanner) {
        const rest = scanner.end();
        if (rest.length > 0) {
          exchange.forwardedBytes += rest.length;
          res.write(rest);
        }
        exchange.usage = scanner.usage;
      } else if (kept !== undefined) {
        exchange.usage = usageOfJson(Buffer.concat(kept, keptBytes));
      }
      // Settle before ending, so the client's next request sees its spend.
      void settle(exchange, 'completed').then(() => res.end());
    });
    proxyRes.on('close', function upstreamClosed() {
      if (ended) return;
      // The upstream broke off mid-answer: charge what it reported (or what was forwarded), cut the client's connection.
      void settle(exchange, 'upstream_broke').then(() => res.destroy());
    });
  }

  function onProxyError(error: Error, req: IncomingMessage, res: ServerResponse | unknown): void {
    const exchange = exchanges.get(req);
    const response = res as ServerResponse;
    if (exchange === undefined) {
      if (typeof response.destroy === 'function') response.destroy();
      return;
    }
    // A client that hung up is not an upstream fault worth a log line.
    if (!exchange.timedOut && !response.destroyed)
      logger.warn(`modelswitch-keys: upstream ${exchange.upstream.name} failed: ${error.message}`);
    onUpstreamFailure(exchange, response);
  }

  const proxies = new Map<ResolvedUpstream, RequestHandler<IncomingMessage, ServerResponse>>();
  for (const upstream of upstreams) {
    proxies.set(
      upstream,
      createProxyMiddleware<IncomingMessage, ServerResponse>({
        target: upstream.target,
        changeOrigin: true,
        selfHandleResponse: true,
        // Without the default plugins hpm neither logs nor writes its own plain-text error pages.
        ejectPlugins: true,
        plugins: [
          function modelSwitchProxyEvents(proxyServer) {
            proxyServer.on('proxyReq', onProxyReq);
            proxyServer.on('proxyRes', onProxyRes);
            proxyServer.on('error', onProxyError);
            proxyServer.on('econnreset', onProxyError);
          },
        ],
      }),
    );
  }

  async function forward(req: IncomingMessage, res: ServerResponse, context: ModelSwitchContext): Promise<void> {
    const { raw, value } = await readJsonBody(req, res, maxBodyBytes);
    if (!isJsonObject(value)) throw invalidRequest('Request body must be a JSON object', 'body');
    const model = value.model;
    if (typeof model !== 'string' || model === '') throw invalidRequest('model is required and must be a string', 'model');
    const upstream = findUpstream(upstreams, model);
    if (upstream === undefined) throw modelNotFound(model, 'unknown');
    const price = priceOf(pricing, model);
    if (price === undefined && !allowUnpriced) throw modelNotFound(model, 'unpriced');
    let sent: Record<string, unknown> = value;
    let stripUsageChunk = false;
    const path = pathOf(req.url);
    // Only the (chat) completions APIs know stream_options; the Responses API reports usage in response.completed.
    if (value.stream === true && path.endsWith('/completions')) {
      const streamOptions = isJsonObject(value.stream_options) ? value.stream_options : {};
      if (streamOptions.include_usage !== true) {
        stripUsageChunk = true;
        sent = { ...value, stream_options: { ...streamOptions, include_usage: true } };
      }
    }
    // What was priced is what is sent: the raw bytes could say otherwise (a duplicate "model" key
    // that the upstream's parser resolves differently, say).
    const body = Buffer.from(JSON.stringify(sent));
    // Checked on the bytes as received and as sent (JSON escapes such as \u006d decoded), so no
    // ms-/mk- value can reach a provider inside a prompt either.
    if (ANY_KEY.test(raw.toString('latin1')) || ANY_KEY.test(body.toString('latin1'))) {
      throw invalidRequest('The request body contains a ModelSwitch API key; remove it (keys are never sent to providers)');
    }
    const outputTokens = maxOutputTokens(value, defaultMaxTokens);
    const at = now();
    await checkTokenRate(store, guard, context, at);

    const estimate: unknown = estimatePromptTokens(value, body.length);
    if (typeof estimate !== 'number' || !Number.isFinite(estimate) || estimate < 0) {
      logger.error(
        `modelswitch-keys: options.estimatePromptTokens returned ${String(estimate)} for model ${model}; it must return a finite number ≥ 0 (request refused)`,
      );
      throw serviceUnavailable();
    }
    const reserved = maxCost(price, Math.ceil(estimate), path.endsWith('/embeddings') ? 0 : outputTokens);
    // A NaN or Infinity reservation would pass every check and poison the stored totals: fail closed.
    if (!Number.isFinite(reserved) || reserved < 0) {
      logger.error(`modelswitch-keys: the reservation for model ${model} came to ${reserved} USD; check its price (request refused)`);
      throw serviceUnavailable();
    }
    const period = limitPeriod(context.key.limitReset, at);
    // Counted from here until the request is refused, or its exchange (below) closes.
    inFlight.enter();
    try {
      const result = await reserve({ keyId: context.key.id, accountId: context.account.id, amount: reserved, period });
      if (!result.ok) throw refusal(result, context, reserved);
    } catch (error) {
      inFlight.leave();
      throw error;
    }

    const exchange: Exchange = {
      context,
      upstream,
      model,
      price,
      period,
      reserved,
      body,
      metered: false,
      forwardedBytes: 0,
      usage: undefined,
      stripUsageChunk,
      proxyReq: undefined,
      timedOut: false,
      settlement: undefined,
      open: true,
    };
    exchanges.set(req, exchange);
    res.once('close', function clientClosed() {
      if (!res.writableFinished) {
        // The client went away: stop the upstream's work and settle what it had (see chargeFor).
        exchange.proxyReq?.destroy();
        void settle(exchange, 'client_closed');
      }
      closeExchange(exchange);
    });
    if (res.destroyed) {
      try {
        await settle(exchange, 'client_closed');
      } finally {
        closeExchange(exchange);
      }
      return;
    }
    // The body is already read; hpm's proxyReq event must fire for it to be re-sent.
    delete req.headers.expect;
    const proxy = proxies.get(upstream) as RequestHandler<IncomingMessage, ServerResponse>;
    await proxy(req, res, function proxyFailed(error?: unknown) {
      onProxyError(error instanceof Error ? error : new Error(String(error)), req, res);
    });
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
      sendJson(res, 200, keyInfoBody(context));
      return;
    }
    const path = pathOf(req.url);
    if (req.method === 'GET' && path === '/models') {
      sendJson(res, 200, { object: 'list', data: listModels(upstreams, isListed) });
      return;
    }
    if (req.method === 'GET' && path.startsWith('/models/')) {
      let id = path.slice('/models/'.length);
      try {
        id = decodeURIComponent(id);
      } catch {
        // A malformed escape names no model: answered as unknown below.
      }
      const model = listModels(upstreams, isListed).find((m) => m.id === id);
      if (model === undefined) throw modelNotFound(id, 'unknown');
      sendJson(res, 200, model);
      return;
    }
    if (req.method !== 'POST' || !isProxiedPath(path)) {
      next();
      return;
    }
    await forward(req, res, context);
  }

  const router = function proxyRouter(req: IncomingMessage, res: ServerResponse, next: NextFunction): void {
    serve(req, res, next).catch((error: unknown) => answerError(res, error, logger));
  };
  return Object.assign(router, { drain: () => inFlight.drain() });
}

/** A host bug (a bad estimate or price): the request is refused without going upstream. */
function serviceUnavailable(): ModelSwitchError {
  return new ModelSwitchError('store_unavailable', 'The service is temporarily unavailable. Please retry shortly.');
}

function usageOfJson(body: Buffer): TokenUsage | undefined {
  try {
    const parsed: unknown = JSON.parse(body.toString('utf8'));
    return isJsonObject(parsed) ? readUsage(parsed.usage) : undefined;
  } catch {
    return undefined;
  }
}
