import type { ClientRequest, IncomingMessage, ServerResponse } from 'node:http';
import { type RequestHandler, createProxyMiddleware } from 'http-proxy-middleware';
import { type Middleware, answerError, assertStore } from './auth.js';
import { type AuthOptions, Authenticator, type ModelSwitchContext } from './authenticate.js';
import { isJsonObject, readJsonBody } from './body.js';
import { ConfigurationError, ModelSwitchError, invalidRequest, sendError, sendJson } from './errors.js';
import { isKeyInfoRequest, keyInfoBody } from './key-info.js';
import { type ModelPrice, type Pricing, type TokenUsage, costOf, priceOf, readUsage, validatePricing } from './pricing.js';
import { checkTokenRate, countTokens, maxCost, maxOutputTokens, refusal } from './proxy-metering.js';
import { limitPeriod } from './spend.js';
import { SseUsageScanner } from './sse-usage.js';
import type { KeyStore } from './types.js';
import { type ResolvedUpstream, type Upstream, findUpstream, listModels, resolveUpstreams } from './upstreams.js';

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
}

/** One proxied request between reservation and settlement. */
interface Exchange {
  context: ModelSwitchContext;
  upstream: ResolvedUpstream;
  model: string;
  price: ModelPrice | undefined;
  period: string | null;
  reserved: number;
  /** The body as sent upstream. */
  body: Buffer;
  /** The client did not ask for `stream_options.include_usage`, so its usage-only chunk is dropped. */
  stripUsageChunk: boolean;
  proxyReq: ClientRequest | undefined;
  timedOut: boolean;
  settlement: Promise<void> | undefined;
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
/** Hop-by-hop headers (RFC 9110 §7.6.1) and upstream cookies never go back to the client. */
const DROPPED_RESPONSE_HEADERS = new Set([
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
const ANY_KEY = /m[sk]-[0-9A-Za-z]{38}/;
/** Bodies of non-streamed answers are kept up to this size to read their `usage`; larger ones are charged the reservation. */
const MAX_METERED_BODY = 16 * 1024 * 1024;

function pathOf(url: string | undefined): string {
  const path = (url ?? '/').split('?', 1)[0] as string;
  return path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path;
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
 * mounted alone). Answers `GET /auth/key` and `GET /models` without spending; every other `POST`
 * with a JSON body is routed by its `model` to an upstream (http-proxy-middleware), with the
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
export function proxyRouter(store: KeyStore, options: ProxyRouterOptions): Middleware {
  assertStore(store, 'proxyRouter');
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError('ERR_MS_OPTION', 'proxyRouter(store, options): options with upstreams and pricing are required');
  }
  const authenticator = new Authenticator(store, { ...options, keyType: 'proxy' });
  const { guard, now } = authenticator;
  const logger = options.logger ?? console;
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
  const exchanges = new WeakMap<IncomingMessage, Exchange>();
  const isListed = (model: string) => allowUnpriced || priceOf(pricing, model) !== undefined;

  /** Releases the reservation and charges what the upstream reported; runs once per exchange. */
  function settle(exchange: Exchange, usage: TokenUsage | undefined, completed: boolean): Promise<void> {
    exchange.settlement ??= (async () => {
      let cost = 0;
      if (usage !== undefined && exchange.price !== undefined) cost = costOf(exchange.price, usage);
      else if (completed && exchange.price !== undefined) {
        // A successful answer without usage is charged its reservation: nothing is served unmetered.
        cost = exchange.reserved;
        logger.warn(
          `modelswitch-keys: upstream ${exchange.upstream.name} reported no usage for model ${exchange.model}; charged the reserved maximum`,
        );
      }
      const at = now();
      const { key, account } = exchange.context;
      await Promise.all([
        guard.run('settleSpend', () =>
          store.settleSpend({ keyId: key.id, accountId: account.id, reserved: exchange.reserved, cost, period: exchange.period, now: at }),
        ),
        usage === undefined ? undefined : countTokens(store, guard, exchange.context, usage, at),
      ]).catch(() => {
        // The guard logged the outage; the answer is already on its way and must still end.
        logger.error(`modelswitch-keys: could not settle key ${key.id} (reserved ${exchange.reserved}, cost ${cost}); reconcile by hand`);
      });
    })();
    return exchange.settlement;
  }

  /** A failure before or while the upstream answered: settle, then answer 502/504 or cut the connection. */
  function onUpstreamFailure(exchange: Exchange, res: ServerResponse): void {
    void settle(exchange, undefined, false).then(() => {
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
    res.statusCode = status;
    for (const [name, value] of Object.entries(proxyRes.headers)) {
      if (value === undefined || DROPPED_RESPONSE_HEADERS.has(name)) continue;
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
      let usage: TokenUsage | undefined;
      if (scanner) {
        const rest = scanner.end();
        if (rest.length > 0) res.write(rest);
        usage = scanner.usage;
      } else if (kept !== undefined) {
        usage = usageOfJson(Buffer.concat(kept, keptBytes));
      }
      // Settle before ending, so the client's next request sees its spend.
      void settle(exchange, usage, metered).then(() => res.end());
    });
    proxyRes.on('close', function upstreamClosed() {
      if (ended) return;
      // The upstream broke off mid-answer: keep what it reported, cut the client's connection.
      void settle(exchange, scanner?.usage, false).then(() => res.destroy());
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
    // Checked on the bytes as received, so no ms-/mk- value can reach a provider inside a prompt either.
    if (ANY_KEY.test(raw.toString('latin1'))) {
      throw invalidRequest('The request body contains a ModelSwitch API key; remove it (keys are never sent to providers)');
    }
    const at = now();
    await checkTokenRate(store, guard, context, at);

    let body = raw;
    let stripUsageChunk = false;
    if (value.stream === true) {
      const streamOptions = isJsonObject(value.stream_options) ? value.stream_options : {};
      if (streamOptions.include_usage !== true) {
        stripUsageChunk = true;
        body = Buffer.from(JSON.stringify({ ...value, stream_options: { ...streamOptions, include_usage: true } }));
      }
    }
    const isEmbedding = pathOf(req.url).endsWith('/embeddings');
    const promptTokens = Math.max(0, Math.ceil(estimatePromptTokens(value, raw.length)));
    const reserved = maxCost(price, promptTokens, isEmbedding ? 0 : maxOutputTokens(value, defaultMaxTokens));
    const period = limitPeriod(context.key.limitReset, at);
    const result = await guard.run('reserveSpend', () =>
      store.reserveSpend({ keyId: context.key.id, accountId: context.account.id, amount: reserved, period }),
    );
    if (!result.ok) throw refusal(result, context, reserved);

    const exchange: Exchange = {
      context,
      upstream,
      model,
      price,
      period,
      reserved,
      body,
      stripUsageChunk,
      proxyReq: undefined,
      timedOut: false,
      settlement: undefined,
    };
    exchanges.set(req, exchange);
    res.once('close', function clientClosed() {
      if (res.writableFinished) return;
      // The client went away: stop the upstream's work and give back what was not used.
      exchange.proxyReq?.destroy();
      void settle(exchange, undefined, false);
    });
    if (res.destroyed) {
      await settle(exchange, undefined, false);
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
      context = await authenticator.authenticate(req);
      await authenticator.countRequest(context, res);
      (req as IncomingMessage & { modelSwitch?: ModelSwitchContext }).modelSwitch = context;
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
    if (req.method !== 'POST') {
      next();
      return;
    }
    await forward(req, res, context);
  }

  return function proxyRouter(req, res, next) {
    serve(req, res, next).catch((error: unknown) => answerError(res, error, logger));
  };
}

function usageOfJson(body: Buffer): TokenUsage | undefined {
  try {
    const parsed: unknown = JSON.parse(body.toString('utf8'));
    return isJsonObject(parsed) ? readUsage(parsed.usage) : undefined;
  } catch {
    return undefined;
  }
}
