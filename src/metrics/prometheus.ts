import type { IncomingMessage, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type * as PromClient from 'prom-client';
import {
  DEFAULT_METRICS_MAX_MODELS,
  DEFAULT_METRICS_PREFIX,
  METRICS_AUTHENTICATION_BUCKETS,
  METRICS_UPSTREAM_BUCKETS,
} from '../defaults.js';
import { ConfigurationError } from '../errors/configuration-error.js';
import type { GatewayMetrics, MetricsQueue } from './gateway-metrics.js';

/** Options of {@link prometheusMetrics}; all optional. */
export interface PrometheusMetricsOptions {
  /** The registry to register the metrics in, e.g. prom-client's global `register` beside your own metrics. Default: a new `Registry`. */
  registry?: PromClient.Registry;
  /** Prepended to every metric name, `[a-zA-Z_:][a-zA-Z0-9_:]*`. Default `modelswitch_`. */
  prefix?: string;
  /**
   * The model names reported as themselves; any other model is reported as `other`. Default: the
   * first 50 distinct names seen (1–100 characters of letters, digits, `_ . : / @ -`), then `other`,
   * so clients naming random models cannot grow the series without bound.
   */
  models?: readonly string[];
}

/** {@link prometheusMetrics}' answer: the registry and a handler that serves it. */
export interface PrometheusMetrics extends GatewayMetrics {
  readonly registry: PromClient.Registry;
  /**
   * A request handler (Express, Connect or plain Node) answering the registry in the Prometheus
   * text format. Mount it where only your scraper reaches it.
   */
  handler(): (req: IncomingMessage, res: ServerResponse) => void;
}

/** The message when prom-client is not installed, with the command that fixes it. */
export const PROM_CLIENT_MISSING_MESSAGE =
  "prometheusMetrics needs the 'prom-client' package, an optional peer dependency that is not installed: run `npm install prom-client`";

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
const LABEL_TEXT = /^[\w.:/@-]{1,100}$/;
const CODE = /^[a-z0-9_]{1,64}$/;
/** A route template: `/api/keys/:id`, `/v1/*`. */
const ROUTE = /^[\w.:/*@-]{1,100}$/;
const PREFIX = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
/** Upstream names are the host's configuration; this only bounds a misconfiguration. */
const MAX_UPSTREAMS = 50;

/**
 * Prometheus metrics of the gateway with [prom-client](https://github.com/siimon/prom-client) (an
 * optional peer dependency: `npm install prom-client`). Pass the answer as the `metrics` option of
 * `modelSwitchAuth`, `keysRouter` and `proxyRouter`, and serve `handler()` to your scraper:
 *
 * | Metric | Type | Labels |
 * |---|---|---|
 * | `modelswitch_http_requests_total` | counter | `route` (template), `method`, `status`, `code` |
 * | `modelswitch_authentication_duration_seconds` | histogram | `outcome` (`ok` or the error code) |
 * | `modelswitch_upstream_duration_seconds` | histogram (to the answer's headers) | `upstream`, `model`, `outcome` |
 * | `modelswitch_tokens_total` | counter | `model`, `kind` (`prompt`, `completion`) |
 * | `modelswitch_spend_usd_total` | counter | `model` |
 * | `modelswitch_store_failures_total` | counter | `operation` |
 * | `modelswitch_scrypt_queue_depth` | gauge | none |
 * | `modelswitch_reservations_held` | gauge | none |
 *
 * Throws a ConfigurationError (`ERR_MS_OPTION`) when prom-client is missing or an option is wrong.
 *
 * @example
 * ```ts
 * import { prometheusMetrics, modelSwitchAuth, keysRouter, proxyRouter } from 'modelswitch-keys';
 * const metrics = prometheusMetrics();
 * app.get('/metrics', metrics.handler());
 * app.use('/api', keysRouter(store, { metrics }));
 * app.use('/v1', modelSwitchAuth(store, { metrics }), proxyRouter(store, { metrics, upstreams }));
 * ```
 */
export function prometheusMetrics(options: PrometheusMetricsOptions = {}): PrometheusMetrics {
  const client = loadPromClient();
  const prefix = options.prefix ?? DEFAULT_METRICS_PREFIX;
  if (typeof prefix !== 'string' || !PREFIX.test(prefix)) {
    throw new ConfigurationError('ERR_MS_OPTION', 'prometheusMetrics: options.prefix must match [a-zA-Z_:][a-zA-Z0-9_:]*, e.g. "gateway_"');
  }
  if (options.models !== undefined && (!Array.isArray(options.models) || !options.models.every((model) => typeof model === 'string'))) {
    throw new ConfigurationError(
      'ERR_MS_OPTION',
      'prometheusMetrics: options.models must be an array of model names, e.g. ["gpt-4o-mini"]',
    );
  }
  const registry = options.registry ?? new client.Registry();
  if (typeof registry !== 'object' || registry === null || typeof registry.metrics !== 'function') {
    throw new ConfigurationError('ERR_MS_OPTION', 'prometheusMetrics: options.registry must be a prom-client Registry');
  }
  const registers = [registry];
  const requests = new client.Counter({
    name: `${prefix}http_requests_total`,
    help: 'Responses of the modelswitch-keys routes, by route template, method, status and error code (ok for none).',
    labelNames: ['route', 'method', 'status', 'code'] as const,
    registers,
  });
  const authentication = new client.Histogram({
    name: `${prefix}authentication_duration_seconds`,
    help: 'Bearer authentications (checksum, store read, scrypt verification or cache, rate limit), by outcome.',
    labelNames: ['outcome'] as const,
    buckets: [...METRICS_AUTHENTICATION_BUCKETS],
    registers,
  });
  const upstream = new client.Histogram({
    name: `${prefix}upstream_duration_seconds`,
    help: 'Time from sending a request upstream to its answer headers (or its failure), by upstream, model and outcome.',
    labelNames: ['upstream', 'model', 'outcome'] as const,
    buckets: [...METRICS_UPSTREAM_BUCKETS],
    registers,
  });
  const tokens = new client.Counter({
    name: `${prefix}tokens_total`,
    help: 'Tokens metered on settled requests, by model and kind (prompt, completion).',
    labelNames: ['model', 'kind'] as const,
    registers,
  });
  const spend = new client.Counter({
    name: `${prefix}spend_usd_total`,
    help: 'USD charged to balances for settled requests, by model.',
    labelNames: ['model'] as const,
    registers,
  });
  const storeFailures = new client.Counter({
    name: `${prefix}store_failures_total`,
    help: 'Store calls that failed or timed out (answered 503 store_unavailable), by operation.',
    labelNames: ['operation'] as const,
    registers,
  });
  const queues = new Set<MetricsQueue>();
  new client.Gauge({
    name: `${prefix}scrypt_queue_depth`,
    help: 'Key verifications and hashes waiting for a scrypt slot.',
    registers,
    collect() {
      let queued = 0;
      for (const queue of queues) queued += queue.queued;
      this.set(queued);
    },
  });
  const reservations = new client.Gauge({
    name: `${prefix}reservations_held`,
    help: 'Spend reservations held by requests in flight in this process.',
    registers,
  });
  const modelLabel = boundedLabel(options.models, DEFAULT_METRICS_MAX_MODELS);
  const upstreamLabel = boundedLabel(undefined, MAX_UPSTREAMS);

  return {
    registry,
    request(route, method, status, code) {
      requests.inc({
        route: ROUTE.test(route) ? route : 'other',
        method: METHODS.has(method) ? method : 'other',
        status: Number.isInteger(status) && status >= 100 && status <= 599 ? String(status) : 'other',
        code: CODE.test(code) ? code : 'other',
      });
    },
    authentication(seconds, outcome) {
      if (Number.isFinite(seconds) && seconds >= 0) authentication.observe({ outcome: CODE.test(outcome) ? outcome : 'other' }, seconds);
    },
    upstream(name, model, outcome, seconds) {
      if (!(Number.isFinite(seconds) && seconds >= 0)) return;
      upstream.observe(
        { upstream: upstreamLabel(name), model: modelLabel(model), outcome: CODE.test(outcome) ? outcome : 'other' },
        seconds,
      );
    },
    metered(model, promptTokens, completionTokens, usd) {
      const label = modelLabel(model);
      if (Number.isFinite(promptTokens) && promptTokens > 0) tokens.inc({ model: label, kind: 'prompt' }, promptTokens);
      if (Number.isFinite(completionTokens) && completionTokens > 0) tokens.inc({ model: label, kind: 'completion' }, completionTokens);
      if (Number.isFinite(usd) && usd >= 0) spend.inc({ model: label }, usd);
    },
    storeFailure(operation) {
      storeFailures.inc({ operation: /^[A-Za-z]{1,64}$/.test(operation) ? operation : 'other' });
    },
    reservationHeld(change) {
      reservations.inc(change);
    },
    watchQueue(queue) {
      queues.add(queue);
    },
    handler() {
      return function metricsHandler(_req, res) {
        registry.metrics().then(
          (text) => {
            res.statusCode = 200;
            res.setHeader('Content-Type', registry.contentType);
            res.setHeader('Cache-Control', 'no-store');
            res.end(text);
          },
          () => {
            res.statusCode = 500;
            res.setHeader('Content-Type', 'text/plain; charset=utf-8');
            res.end('metrics could not be collected\n');
          },
        );
      };
    },
  };
}

/**
 * A label of free text kept bounded: the `allowed` names as themselves (anything else `other`),
 * or without a list the first `cap` distinct well-formed names, then `other`.
 */
function boundedLabel(allowed: readonly string[] | undefined, cap: number): (value: string) => string {
  if (allowed !== undefined) {
    const names = new Set(allowed);
    return (value) => (names.has(value) ? value : 'other');
  }
  const seen = new Set<string>();
  return (value) => {
    if (seen.has(value)) return value;
    if (seen.size >= cap || typeof value !== 'string' || !LABEL_TEXT.test(value)) return 'other';
    seen.add(value);
    return value;
  };
}

/**
 * prom-client, loaded when metrics are asked for: the package works without it otherwise. A
 * missing prom-client (not one of its own dependencies) becomes a ConfigurationError saying
 * `npm install prom-client`.
 *
 * @example
 * ```ts
 * const { Registry } = loadPromClient();
 * ```
 */
export function loadPromClient(load: (id: string) => unknown = createRequire(import.meta.url)): typeof PromClient {
  try {
    return load('prom-client') as typeof PromClient;
  } catch (error) {
    const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
    if (
      (code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') &&
      typeof message === 'string' &&
      message.includes("'prom-client'")
    ) {
      throw new ConfigurationError('ERR_MS_OPTION', PROM_CLIENT_MISSING_MESSAGE);
    }
    throw error;
  }
}
