/**
 * What the factories report to a metrics backend. `prometheusMetrics()` answers one; pass it as the
 * `metrics` option of `modelSwitchAuth`, `keysRouter` and `proxyRouter`. Every label value the
 * factories pass is bounded: a route template (never a raw path or id), a method, a status, an
 * error code, a store operation, an upstream's configured name, a model name (which the backend
 * bounds again, see `PrometheusMetricsOptions.models`). Never a key.
 *
 * @example
 * ```ts
 * const metrics: GatewayMetrics = prometheusMetrics();
 * app.use('/v1', modelSwitchAuth(store, { metrics }), proxyRouter(store, { metrics, upstreams }));
 * ```
 */
export interface GatewayMetrics {
  /** A response of one of the package's routes ended: its route template (`/api/keys/:id`), method, status and error code (`ok` for none). */
  request(route: string, method: string, status: number, code: string): void;
  /** A Bearer authentication ended after `seconds`, with `ok` or the error code it answered. */
  authentication(seconds: number, outcome: string): void;
  /** An upstream answered (its status class `2xx`, `4xx`, `5xx`) or failed (`timeout`, `error`) `seconds` after the request was sent. */
  upstream(upstream: string, model: string, outcome: string, seconds: number): void;
  /** A settled request of `model`: the tokens the upstream reported and the USD charged. */
  metered(model: string, promptTokens: number, completionTokens: number, usd: number): void;
  /** A store call failed or timed out (the request answered 503 `store_unavailable`). */
  storeFailure(operation: string): void;
  /** A spend reservation is now held (`1`) or was settled (`-1`). */
  reservationHeld(change: 1 | -1): void;
  /** A scrypt queue to report at each scrape (a `KeyHasher`: verifications and hashes waiting for a slot). */
  watchQueue(queue: MetricsQueue): void;
}

/** A queue whose depth is read at each scrape. */
export interface MetricsQueue {
  /** Jobs waiting now. */
  readonly queued: number;
}

/** Whether `value` has every method of {@link GatewayMetrics} (duck-typed: the ESM and CommonJS builds each have their own classes). */
export function isGatewayMetrics(value: unknown): value is GatewayMetrics {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Record<string, unknown>;
  return ['request', 'authentication', 'upstream', 'metered', 'storeFailure', 'reservationHeld', 'watchQueue'].every(
    (name) => typeof candidate[name] === 'function',
  );
}
