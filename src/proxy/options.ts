import { type AuthOptions, type ResolvedAuthOptions, resolveAuthOptions } from '../auth/options.js';
import {
  DEFAULT_BALANCE_LOW_THRESHOLD,
  DEFAULT_MAX_JSON_DEPTH,
  DEFAULT_PROXY_ALLOW_UNPRICED_MODELS,
  DEFAULT_PROXY_ENFORCE_MAX_TOKENS,
  DEFAULT_PROXY_HOLD_MARGIN_MS,
  DEFAULT_PROXY_HOLD_SWEEP_INTERVAL_MS,
  DEFAULT_PROXY_KEEP_ALIVE_MS,
  DEFAULT_PROXY_MAX_BODY_BYTES,
  DEFAULT_PROXY_MAX_BUFFERED_BYTES,
  DEFAULT_PROXY_MAX_SOCKETS,
  DEFAULT_PROXY_MAX_TOKENS,
  DEFAULT_PROXY_TIMEOUT_MS,
} from '../defaults.js';
import { ConfigurationError } from '../errors/configuration-error.js';
import { isBalanceLowThreshold } from '../events/events.js';
import { MAX_USD } from '../store/spend-rules.js';
import { MAX_OUTPUT_TOKENS, type Pricing, validatePricing } from './pricing.js';
import { countPromptTokens, estimatePromptTokensByModel } from './prompt-tokens.js';

export { estimatePromptTokensFromBytes } from './prompt-tokens.js';
import {
  MAX_SOCKETS,
  MAX_TIMEOUT_MS,
  type ResolvedUpstream,
  type Upstream,
  isKeepAliveMs,
  isMaxSockets,
  isTimeoutMs,
  resolveProxyPaths,
  resolveUpstreams,
} from './upstreams.js';

/** Options of {@link proxyRouter}. `upstreams` and `pricing` are required; every other field is optional (`undefined` means the default). */
export interface ProxyRouterOptions extends Omit<AuthOptions, 'keyType'> {
  /** Where requests go, chosen by the body's `model`. */
  upstreams: readonly Upstream[];
  /** USD per million tokens by model (table or function). A model without a price is refused (404) unless `allowUnpricedModels`. */
  pricing: Pricing;
  /** Serve models that have no price, free of charge (still needing a positive balance). Default false. */
  allowUnpricedModels?: boolean;
  /**
   * Output tokens (per choice) a request that sets no `max_tokens`/`max_completion_tokens`/
   * `max_output_tokens` is reserved, and sent as its cap (see `enforceMaxTokens`); a price's
   * `maxOutputTokens` lowers it for that model. Default 4096.
   */
  defaultMaxTokens?: number;
  /**
   * Send the reserved output cap upstream when a request sets none (`max_completion_tokens` for
   * OpenAI's chat models, `max_tokens` for other chat models and completions, `max_output_tokens`
   * for responses), so an upstream that obeys it can never cost more than was reserved. The
   * trade-off: such an answer stops at `min(maxOutputTokens, defaultMaxTokens)` tokens. `false`
   * forwards the request uncapped and reserves the model's `maxOutputTokens` (or `defaultMaxTokens`
   * when its price has none, which then bounds nothing). Default true.
   */
  enforceMaxTokens?: boolean;
  /**
   * Prompt tokens reserved for a request body. Default: for OpenAI's models, an upper bound counted
   * with the model's tokenizer (loaded on first use); for other models, one token per 4 bytes of JSON.
   */
  estimatePromptTokens?: (body: Readonly<Record<string, unknown>>, bodyBytes: number) => number;
  /** Upstream silent for this long (before or during the answer) → 504 `upstream_timeout`. Default 600000 (10 minutes). */
  timeoutMs?: number;
  /**
   * Connections the router opens at most to each upstream (an upstream's own `maxSockets` wins).
   * Connections are kept alive and reused: each answer holds one until it ends, so this bounds the
   * answers in flight per upstream; further requests wait for a free connection, within the
   * upstream's `timeoutMs`. Default {@link DEFAULT_PROXY_MAX_SOCKETS} (512).
   *
   * @example
   * ```ts
   * proxyRouter(store, { upstreams, pricing, maxSockets: 128, keepAliveMs: 10_000 });
   * ```
   */
  maxSockets?: number;
  /**
   * How long (ms) an idle upstream connection is kept for the next request (an upstream's own
   * `keepAliveMs` wins); 0 closes each connection after its answer. Keep it below the upstream's
   * own idle timeout, so the gateway closes an idle connection before the upstream does. Default
   * {@link DEFAULT_PROXY_KEEP_ALIVE_MS} (4000).
   */
  keepAliveMs?: number;
  /**
   * How long a reservation's hold outlives the upstream's `timeoutMs` (ms): its deadline is the
   * reservation's time + `timeoutMs` + this, renewed while the answer still streams. Past the
   * deadline any gateway instance may release the hold, so a gateway that died mid-request (a
   * crash, `kill -9`) pins the key's limit and the account's balance only until then. Default
   * 60000 (a minute).
   */
  holdMarginMs?: number;
  /**
   * How often (ms) this router releases every expired hold in the store (`releaseExpiredHolds`), on
   * an unref'd timer that `close()` stops; 0 turns the sweeper off. Without it, an expired hold is
   * released by the next reservation of its key or account. Default 0.
   */
  holdSweepIntervalMs?: number;
  /**
   * An `account.balance_low` event (see `onEvent`) fires when a settlement takes the account's
   * balance from at least this many USD to below it. Default {@link DEFAULT_BALANCE_LOW_THRESHOLD} ($1).
   */
  balanceLowThreshold?: number;
  /** Largest accepted JSON body in bytes (after decoding a `Content-Encoding`); larger answers 413. Default 4194304 (4 MiB). */
  maxBodyBytes?: number;
  /**
   * Request-body bytes held at once across this router's requests (a body counts from its first
   * byte until its response closes); past it a request answers 503 `server_busy` with `Retry-After`.
   * At least `maxBodyBytes`. Default 134217728 (128 MiB).
   */
  maxBufferedBytes?: number;
  /** Deepest nesting of arrays and objects in a request body; deeper answers 400 before parsing. Default 64. */
  maxJsonDepth?: number;
  /**
   * Paths below the mount that are proxied (for `POST`): exact paths or `RegExp`s tested on the
   * path without its query. Other paths go to `next()`. Default {@link DEFAULT_PROXY_PATHS}:
   * `/chat/completions`, `/completions`, `/embeddings`, `/responses`.
   */
  paths?: ReadonlyArray<string | RegExp>;
}

/** {@link ProxyRouterOptions} after {@link resolveProxyOptions}: every field present, checked, and the caller's objects copied. */
export interface ResolvedProxyOptions {
  /** The upstreams, validated, in configuration order (each with its own timeout resolved). */
  readonly upstreams: readonly ResolvedUpstream[];
  /** A copy of the pricing table, or the host's pricing function. */
  readonly pricing: Pricing;
  readonly allowUnpricedModels: boolean;
  readonly defaultMaxTokens: number;
  readonly enforceMaxTokens: boolean;
  readonly estimatePromptTokens: (body: Readonly<Record<string, unknown>>, bodyBytes: number) => number;
  /**
   * The asynchronous prompt count the router awaits before `prepare` (the tokenizer of OpenAI's
   * models, loaded on first use), or `undefined` when the host gave its own `estimatePromptTokens`.
   */
  readonly countPromptTokens: ((body: unknown) => Promise<number | undefined>) | undefined;
  /** The router's upstream timeout (an upstream's own `timeoutMs` wins: see `upstreams`). */
  readonly timeoutMs: number;
  /** The router's connection bound per upstream (an upstream's own `maxSockets` wins: see `upstreams`). */
  readonly maxSockets: number;
  /** The router's idle-connection time (an upstream's own `keepAliveMs` wins: see `upstreams`). */
  readonly keepAliveMs: number;
  /** Added to an upstream's `timeoutMs` for a hold's deadline. */
  readonly holdMarginMs: number;
  /** The sweeper's interval, 0 for none. */
  readonly holdSweepIntervalMs: number;
  /** USD: `account.balance_low` fires when a settlement takes a balance below it. */
  readonly balanceLowThreshold: number;
  readonly maxBodyBytes: number;
  readonly maxBufferedBytes: number;
  readonly maxJsonDepth: number;
  /** Whether a path below the mount (no query, no trailing slash) is proxied, from `paths`. */
  readonly isProxiedPath: (path: string) => boolean;
  /** The authentication options, for the proxy's own `Authenticator` (used when it is mounted without `modelSwitchAuth`). */
  readonly auth: ResolvedAuthOptions & { readonly keyType: 'proxy' };
}

/**
 * The deepest `maxJsonDepth` accepted: deeper, the recursive code after the parse (`JSON.stringify`
 * of the body sent upstream) could overflow the stack, which the limit is there to prevent.
 */
const MAX_JSON_DEPTH_OPTION = 1000;

function optionError(message: string): ConfigurationError {
  return new ConfigurationError('ERR_MS_OPTION', `proxyRouter: options.${message}`);
}

/**
 * Checks `proxyRouter`'s options once, at creation, and answers them complete: every default
 * applied from its named constant in `defaults.ts`. Never changes the caller's object. Throws
 * `ConfigurationError` (`ERR_MS_OPTION`, `ERR_MS_UPSTREAM` or `ERR_MS_PRICING`) whose message says
 * how to fix the option. The authentication options (`hasher`, `now`, `logger`, …) are resolved by
 * `resolveAuthOptions`, always for proxy keys.
 *
 * @example
 * ```ts
 * const resolved = resolveProxyOptions({
 *   upstreams: [{ name: 'openai', target: 'https://api.openai.com/v1', apiKey: process.env.OPENAI_API_KEY, models: ['gpt-4o-mini'] }],
 *   pricing: { 'gpt-4o-mini': { inputPerMillion: 0.15, outputPerMillion: 0.6 } },
 * });
 * resolved.defaultMaxTokens; // 4096
 * resolved.isProxiedPath('/chat/completions'); // true
 * ```
 */
export function resolveProxyOptions(options: ProxyRouterOptions): ResolvedProxyOptions {
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError('ERR_MS_OPTION', 'proxyRouter(store, options): options with upstreams and pricing are required');
  }
  const {
    upstreams,
    pricing,
    allowUnpricedModels,
    defaultMaxTokens,
    enforceMaxTokens,
    estimatePromptTokens,
    timeoutMs,
    maxSockets,
    keepAliveMs,
    holdMarginMs,
    holdSweepIntervalMs,
    balanceLowThreshold,
    maxBodyBytes,
    maxBufferedBytes,
    maxJsonDepth,
    paths,
    ...auth
  } = options;
  const resolvedPricing = validatePricing(pricing);
  const allowUnpriced = allowUnpricedModels ?? DEFAULT_PROXY_ALLOW_UNPRICED_MODELS;
  if (typeof allowUnpriced !== 'boolean') throw optionError('allowUnpricedModels must be true or false');
  const maxTokens = defaultMaxTokens ?? DEFAULT_PROXY_MAX_TOKENS;
  if (!Number.isInteger(maxTokens) || maxTokens < 0 || maxTokens > MAX_OUTPUT_TOKENS) {
    throw optionError(
      `defaultMaxTokens must be an integer from 0 to ${MAX_OUTPUT_TOKENS}: the output tokens reserved when a request sets no cap`,
    );
  }
  const enforce = enforceMaxTokens ?? DEFAULT_PROXY_ENFORCE_MAX_TOKENS;
  if (typeof enforce !== 'boolean') throw optionError('enforceMaxTokens must be true or false');
  const estimate = estimatePromptTokens ?? estimatePromptTokensByModel;
  if (typeof estimate !== 'function') {
    throw optionError(
      "estimatePromptTokens must be a function (body, bodyBytes) => prompt tokens, or left out for the model's tokenizer (OpenAI) or one token per 4 bytes",
    );
  }
  const bodyLimit = maxBodyBytes ?? DEFAULT_PROXY_MAX_BODY_BYTES;
  if (!Number.isSafeInteger(bodyLimit) || bodyLimit < 1) {
    throw optionError('maxBodyBytes must be a positive integer number of bytes, e.g. 4194304 for 4 MiB');
  }
  const bufferLimit = maxBufferedBytes ?? Math.max(DEFAULT_PROXY_MAX_BUFFERED_BYTES, bodyLimit);
  if (!Number.isSafeInteger(bufferLimit) || bufferLimit < bodyLimit) {
    throw optionError(
      `maxBufferedBytes must be an integer number of bytes of at least maxBodyBytes (${bodyLimit}), e.g. 134217728 for 128 MiB`,
    );
  }
  const depth = maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH;
  if (!Number.isSafeInteger(depth) || depth < 1 || depth > MAX_JSON_DEPTH_OPTION) {
    throw optionError(`maxJsonDepth must be an integer from 1 to ${MAX_JSON_DEPTH_OPTION}, e.g. ${DEFAULT_MAX_JSON_DEPTH}`);
  }
  const timeout = timeoutMs ?? DEFAULT_PROXY_TIMEOUT_MS;
  if (!isTimeoutMs(timeout)) {
    throw optionError(`timeoutMs must be a number of milliseconds above 0 and at most ${MAX_TIMEOUT_MS}, e.g. 600000 for 10 minutes`);
  }
  const sockets = maxSockets ?? DEFAULT_PROXY_MAX_SOCKETS;
  if (!isMaxSockets(sockets)) {
    throw optionError(`maxSockets must be an integer from 1 to ${MAX_SOCKETS}: the connections open at most to each upstream, e.g. 512`);
  }
  const keepAlive = keepAliveMs ?? DEFAULT_PROXY_KEEP_ALIVE_MS;
  if (!isKeepAliveMs(keepAlive)) {
    throw optionError(
      `keepAliveMs must be 0 (no reuse) or a number of milliseconds above 0 and at most ${MAX_TIMEOUT_MS}, e.g. ${DEFAULT_PROXY_KEEP_ALIVE_MS}`,
    );
  }
  const margin = holdMarginMs ?? DEFAULT_PROXY_HOLD_MARGIN_MS;
  if (!isTimeoutMs(margin)) {
    throw optionError(
      `holdMarginMs must be a number of milliseconds above 0 and at most ${MAX_TIMEOUT_MS}, e.g. ${DEFAULT_PROXY_HOLD_MARGIN_MS} for a minute`,
    );
  }
  const sweepInterval = holdSweepIntervalMs ?? DEFAULT_PROXY_HOLD_SWEEP_INTERVAL_MS;
  if (sweepInterval !== 0 && !(isTimeoutMs(sweepInterval) && sweepInterval >= 1)) {
    throw optionError(`holdSweepIntervalMs must be 0 (no sweeper) or a number of milliseconds from 1 to ${MAX_TIMEOUT_MS}, e.g. 60000`);
  }
  const threshold = balanceLowThreshold ?? DEFAULT_BALANCE_LOW_THRESHOLD;
  if (!isBalanceLowThreshold(threshold)) {
    throw optionError(`balanceLowThreshold must be a number of USD from 0 to ${MAX_USD}, e.g. ${DEFAULT_BALANCE_LOW_THRESHOLD}`);
  }
  const resolvedUpstreams = resolveUpstreams(upstreams, { timeoutMs: timeout, maxSockets: sockets, keepAliveMs: keepAlive });
  const isProxiedPath = resolveProxyPaths(paths);
  return {
    upstreams: resolvedUpstreams,
    pricing: resolvedPricing,
    allowUnpricedModels: allowUnpriced,
    defaultMaxTokens: maxTokens,
    enforceMaxTokens: enforce,
    estimatePromptTokens: estimate,
    countPromptTokens: estimatePromptTokens === undefined ? countPromptTokens : undefined,
    timeoutMs: timeout,
    maxSockets: sockets,
    keepAliveMs: keepAlive,
    holdMarginMs: margin,
    holdSweepIntervalMs: sweepInterval,
    balanceLowThreshold: threshold,
    maxBodyBytes: bodyLimit,
    maxBufferedBytes: bufferLimit,
    maxJsonDepth: depth,
    isProxiedPath,
    auth: { ...resolveAuthOptions({ ...auth, keyType: 'proxy' }, 'proxyRouter'), keyType: 'proxy' },
  };
}
