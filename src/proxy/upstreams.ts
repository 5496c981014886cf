import { Agent as HttpAgent, validateHeaderName, validateHeaderValue } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { DEFAULT_PROXY_PATHS } from '../defaults.js';
import { ConfigurationError } from '../errors/configuration-error.js';

export { DEFAULT_PROXY_PATHS };

/** The longest timer Node keeps (2^31 − 1 ms, about 24.8 days); a longer one would fire after 1 ms. */
export const MAX_TIMEOUT_MS = 2_147_483_647;

/** Whether `ms` can be a socket timeout: a number of milliseconds above 0 and at most {@link MAX_TIMEOUT_MS}. */
export function isTimeoutMs(ms: unknown): ms is number {
  return typeof ms === 'number' && ms > 0 && ms <= MAX_TIMEOUT_MS;
}

/** A copy of a caller's RegExp: resetting `lastIndex` before each test (for the g and y flags) then never touches theirs. */
function ownCopy(pattern: RegExp): RegExp {
  return new RegExp(pattern);
}

/**
 * One provider the proxy forwards to. `target` is its OpenAI-compatible base URL including the
 * version path (`https://api.openai.com/v1`); the path below the mount (`/chat/completions`) is
 * appended to it, and a query of the target's own (`?api-version=…`) comes before the request's.
 */
export interface Upstream {
  /** A name for logs and `owned_by` in `GET /v1/models`. */
  name: string;
  /** Base URL, e.g. `https://api.openai.com/v1`. */
  target: string;
  /** Sent as `Authorization: Bearer <apiKey>`. Use `headers` for other schemes (`api-key`, `x-api-key`). */
  apiKey?: string;
  /** Extra headers set on every upstream request (they replace the client's headers of the same name). */
  headers?: Record<string, string>;
  /** Models this upstream serves: exact names, or `RegExp`s (exact names are listed by `GET /v1/models`). */
  models: ReadonlyArray<string | RegExp>;
  /** No answer (or no bytes mid-stream) for this long → 504 `upstream_timeout`. Default: the router's `timeoutMs`. */
  timeoutMs?: number;
  /** Connections open at most to this upstream (see the router's `maxSockets`). Default: the router's `maxSockets`. */
  maxSockets?: number;
  /** How long an idle connection to this upstream is kept (see the router's `keepAliveMs`). Default: the router's `keepAliveMs`. */
  keepAliveMs?: number;
  /**
   * Your own `http.Agent` (an `https.Agent` for an `https:` target) for this upstream's
   * connections, instead of the pool the router makes from `maxSockets` and `keepAliveMs`: for
   * TLS options, an outbound proxy agent, or a pool shared with other code. The router never
   * destroys it. Give it `keepAlive: true`, or each request opens a connection.
   *
   * @example
   * ```ts
   * import { Agent } from 'node:https';
   * const agent = new Agent({ keepAlive: true, maxSockets: 64, timeout: 4000, ca: myCompanyCa });
   * proxyRouter(store, { upstreams: [{ name: 'internal', target: 'https://llm.internal/v1', models: [/./], agent }], pricing });
   * ```
   */
  agent?: HttpAgent;
}

/** An upstream after validation: lower-cased header names, credential folded into `headers`. */
export interface ResolvedUpstream {
  readonly name: string;
  readonly target: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly exactModels: ReadonlySet<string>;
  readonly patterns: readonly RegExp[];
  readonly timeoutMs: number;
  /** Connections open at most to it (used for the router's own pool, not for a host's `agent`). */
  readonly maxSockets: number;
  /** How long an idle connection is kept, in ms; 0 closes each connection after its answer (used for the router's own pool). */
  readonly keepAliveMs: number;
  /** The host's own agent, or `undefined` for the pool the router makes (and destroys on `close()`). */
  readonly agent: HttpAgent | undefined;
}

/** What an upstream takes from the router's options when it sets none of its own. */
export interface UpstreamDefaults {
  readonly timeoutMs: number;
  readonly maxSockets: number;
  readonly keepAliveMs: number;
}

/** Whether `value` can be `maxSockets`: an integer from 1 to {@link MAX_SOCKETS}. */
export function isMaxSockets(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 1 && (value as number) <= MAX_SOCKETS;
}

/** Whether `value` can be `keepAliveMs`: 0 (no reuse) or a timeout in ms. */
export function isKeepAliveMs(value: unknown): value is number {
  return value === 0 || isTimeoutMs(value);
}

/** The largest `maxSockets`: the TCP ports one process can use towards one address. */
export const MAX_SOCKETS = 65_535;

/** Validates the upstream list once, at creation; throws `ConfigurationError` `ERR_MS_UPSTREAM` with a fix. */
export function resolveUpstreams(upstreams: readonly Upstream[] | undefined, defaults: UpstreamDefaults): ResolvedUpstream[] {
  if (!Array.isArray(upstreams) || upstreams.length === 0) {
    throw new ConfigurationError(
      'ERR_MS_UPSTREAM',
      "proxyRouter: options.upstreams must be a non-empty array, e.g. [{ name: 'openai', target: 'https://api.openai.com/v1', apiKey: process.env.OPENAI_API_KEY, models: ['gpt-4o-mini'] }]",
    );
  }
  return upstreams.map((upstream, index) => {
    const where = `proxyRouter: options.upstreams[${index}]`;
    if (typeof upstream !== 'object' || upstream === null) {
      throw new ConfigurationError(
        'ERR_MS_UPSTREAM',
        `${where} must be an object like { name, target, apiKey?, headers?, models, timeoutMs?, maxSockets?, keepAliveMs?, agent? }`,
      );
    }
    if (typeof upstream.name !== 'string' || upstream.name === '')
      throw new ConfigurationError('ERR_MS_UPSTREAM', `${where}.name must be a non-empty string`);
    let url: URL;
    try {
      url = new URL(upstream.target);
    } catch {
      throw new ConfigurationError('ERR_MS_UPSTREAM', `${where}.target must be an absolute http(s) URL such as https://api.openai.com/v1`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ConfigurationError('ERR_MS_UPSTREAM', `${where}.target must use http: or https:`);
    }
    const models: ReadonlyArray<unknown> = Array.isArray(upstream.models) ? upstream.models : [null];
    if (models.length === 0 || models.some((m) => typeof m !== 'string' && !(m instanceof RegExp))) {
      throw new ConfigurationError('ERR_MS_UPSTREAM', `${where}.models must be a non-empty array of model names or RegExps`);
    }
    const timeoutMs = upstream.timeoutMs ?? defaults.timeoutMs;
    if (!isTimeoutMs(timeoutMs)) {
      throw new ConfigurationError(
        'ERR_MS_UPSTREAM',
        `${where}.timeoutMs must be a number of milliseconds above 0 and at most ${MAX_TIMEOUT_MS} (or left out for the router's timeoutMs)`,
      );
    }
    const maxSockets = upstream.maxSockets ?? defaults.maxSockets;
    if (!isMaxSockets(maxSockets)) {
      throw new ConfigurationError(
        'ERR_MS_UPSTREAM',
        `${where}.maxSockets must be an integer from 1 to ${MAX_SOCKETS} (or left out for the router's maxSockets)`,
      );
    }
    const keepAliveMs = upstream.keepAliveMs ?? defaults.keepAliveMs;
    if (!isKeepAliveMs(keepAliveMs)) {
      throw new ConfigurationError(
        'ERR_MS_UPSTREAM',
        `${where}.keepAliveMs must be 0 (no reuse) or a number of milliseconds above 0 and at most ${MAX_TIMEOUT_MS} (or left out for the router's keepAliveMs)`,
      );
    }
    const agent = resolveAgent(upstream.agent, url.protocol, where);
    const headers = resolveHeaders(upstream.headers, where);
    if (upstream.apiKey !== undefined) {
      const authorization = `Bearer ${upstream.apiKey}`;
      if (typeof upstream.apiKey !== 'string' || upstream.apiKey === '' || !isHeaderValue(authorization))
        throw new ConfigurationError(
          'ERR_MS_UPSTREAM',
          `${where}.apiKey must be a non-empty string without line breaks or control characters`,
        );
      headers.authorization = authorization;
    }
    return {
      name: upstream.name,
      target: upstream.target.replace(/\/+$/, ''),
      headers,
      exactModels: new Set(models.filter((m): m is string => typeof m === 'string')),
      patterns: models.filter((m): m is RegExp => m instanceof RegExp).map(ownCopy),
      timeoutMs,
      maxSockets,
      keepAliveMs,
      agent,
    };
  });
}

/**
 * A host's agent, checked against its target's protocol as Node checks it on every request (an
 * `https.Agent` for an `http:` target, or Node's plain `http.Agent` for an `https:` one, would fail
 * each request); other subclasses of `http.Agent` (outbound proxy agents) choose per request.
 */
function resolveAgent(agent: unknown, protocol: string, where: string): HttpAgent | undefined {
  if (agent === undefined || agent === null) return undefined;
  const secure = protocol === 'https:';
  const fits = agent instanceof HttpsAgent ? secure : agent instanceof HttpAgent && !(secure && agent.constructor === HttpAgent);
  if (!fits) {
    throw new ConfigurationError(
      'ERR_MS_UPSTREAM',
      `${where}.agent must be an ${secure ? 'https.Agent' : 'http.Agent'} for its ${protocol} target, e.g. new ${secure ? 'https' : 'http'}.Agent({ keepAlive: true })`,
    );
  }
  return agent as HttpAgent;
}

/**
 * An upstream's `headers` with lower-cased names, checked once as Node checks them when they are set
 * on a request, so a bad name or value (a line break, say) fails at creation rather than on every request.
 */
function resolveHeaders(headers: Readonly<Record<string, string>> | undefined, where: string): Record<string, string> {
  if (headers !== undefined && (typeof headers !== 'object' || headers === null || Array.isArray(headers))) {
    throw new ConfigurationError(
      'ERR_MS_UPSTREAM',
      `${where}.headers must be an object of header names to values, like { 'x-api-key': '…' }`,
    );
  }
  const resolved: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    const text = String(value);
    if (!isHeaderName(name) || !isHeaderValue(text)) {
      throw new ConfigurationError(
        'ERR_MS_UPSTREAM',
        `${where}.headers["${name}"] is not a valid HTTP header: use a token name and a value without line breaks or control characters`,
      );
    }
    resolved[name.toLowerCase()] = text;
  }
  return resolved;
}

function isHeaderName(name: string): boolean {
  try {
    validateHeaderName(name);
    return true;
  } catch {
    return false;
  }
}

function isHeaderValue(value: string): boolean {
  try {
    // The name only labels Node's own error, which is not shown.
    validateHeaderValue('x', value);
    return true;
  } catch {
    return false;
  }
}

/** The first upstream serving `model` (exact names win over patterns), or `undefined`. */
export function findUpstream(upstreams: readonly ResolvedUpstream[], model: string): ResolvedUpstream | undefined {
  for (const upstream of upstreams) if (upstream.exactModels.has(model)) return upstream;
  for (const upstream of upstreams) {
    // A RegExp with the g or y flag keeps state between test() calls; reset it so routing is stable.
    const served = upstream.patterns.some((pattern) => {
      pattern.lastIndex = 0;
      return pattern.test(model);
    });
    if (served) return upstream;
  }
  return undefined;
}

/** One entry of `GET /v1/models`, OpenAI's shape. */
export interface ModelObject {
  id: string;
  object: 'model';
  created: number;
  owned_by: string;
}

/** The exact model names of every upstream, in configuration order, each listed once. */
export function listModels(upstreams: readonly ResolvedUpstream[], isListed: (model: string) => boolean): ModelObject[] {
  const seen = new Set<string>();
  const models: ModelObject[] = [];
  for (const upstream of upstreams) {
    for (const id of upstream.exactModels) {
      if (seen.has(id) || !isListed(id)) continue;
      seen.add(id);
      models.push({ id, object: 'model', created: 0, owned_by: upstream.name });
    }
  }
  return models;
}

/** Validates the `paths` option once, at creation; answers whether a path (no query, no trailing slash) is proxied. */
export function resolveProxyPaths(paths: ReadonlyArray<string | RegExp> | undefined): (path: string) => boolean {
  const list: ReadonlyArray<unknown> = paths ?? DEFAULT_PROXY_PATHS;
  const valid =
    Array.isArray(list) &&
    list.length > 0 &&
    list.every((p) => p instanceof RegExp || (typeof p === 'string' && p.startsWith('/') && !p.includes('?')));
  if (!valid) {
    throw new ConfigurationError(
      'ERR_MS_OPTION',
      "proxyRouter: options.paths must be a non-empty array of paths below the mount starting with '/' (like '/chat/completions') or RegExps",
    );
  }
  const exact = new Set(list.filter((p): p is string => typeof p === 'string').map((p) => (p.length > 1 ? p.replace(/\/+$/, '') : p)));
  const patterns = list.filter((p): p is RegExp => p instanceof RegExp).map(ownCopy);
  return function isProxiedPath(path: string): boolean {
    if (exact.has(path)) return true;
    return patterns.some((pattern) => {
      // A RegExp with the g or y flag keeps state between test() calls.
      pattern.lastIndex = 0;
      return pattern.test(path);
    });
  };
}
