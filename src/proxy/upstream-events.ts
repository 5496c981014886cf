import {
  type ClientRequest,
  Agent as HttpAgent,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type RequestOptions,
  type ServerResponse,
  request as httpRequest,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { ModelSwitchError } from '../errors/errors.js';
import { isJsonObject } from '../http/body.js';
import { sendError } from '../http/respond.js';
import type { Logger } from '../log.js';
import type { Exchange } from './exchange.js';
import { containsKey } from './key-scan.js';
import { type TokenUsage, readUsage } from './pricing.js';
import { UPSTREAM_REQUEST_ID_HEADER, answerIdOf } from './request-id.js';
import { SseUsageScanner } from './sse-usage.js';
import { MAX_USAGE_NAME_LENGTH } from '../store/spend-rules.js';
import type { ResolvedUpstream } from './upstreams.js';

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
  // The body sent is the decoded JSON serialized again: the client's coding no longer describes it.
  'content-encoding',
  'x-forwarded-for',
  'x-real-ip',
  'forwarded',
  // Hop-by-hop (RFC 9110 §7.6.1): the client's connection is not the pooled upstream one (a
  // client's `Connection: close` would close a pooled connection after each answer).
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'upgrade',
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
/** Bodies of non-streamed answers are kept up to this size to read their `usage`; larger ones are charged the reservation. */
const MAX_METERED_BODY = 16 * 1024 * 1024;

/** The provider's own rate-limit headers, OpenAI's, Anthropic's and the IETF's (names as Node gives them, lower case). */
function isProviderRateLimit(name: string): boolean {
  return (
    name.startsWith('x-ratelimit-') || name === 'ratelimit' || name.startsWith('ratelimit-') || name.startsWith('anthropic-ratelimit-')
  );
}

function flush(res: ServerResponse): void {
  // compression() adds res.flush(); calling it pushes each SSE event out instead of waiting for a full gzip block.
  (res as ServerResponse & { flush?: () => void }).flush?.();
}

/** The usage and the answer's `id` of a JSON answer (`undefined` each when it has none or is not JSON). */
function readJsonAnswer(body: Buffer): { usage: TokenUsage | undefined; id: string | undefined } {
  try {
    const parsed: unknown = JSON.parse(body.toString('utf8'));
    if (isJsonObject(parsed)) return { usage: readUsage(parsed.usage), id: answerIdOf(parsed.id, MAX_USAGE_NAME_LENGTH) };
  } catch {
    // Not JSON: nothing to read.
  }
  return { usage: undefined, id: undefined };
}

/**
 * Errors of a request sent on a pooled connection that the upstream had closed meanwhile (it closes
 * idle connections after its own timeout, and its close can cross the next request on the wire):
 * the connection was reset, or written to after it closed ("socket hang up" is `ECONNRESET` too).
 */
const STALE_CONNECTION_ERRORS = new Set(['ECONNRESET', 'EPIPE']);

/** One sending of a request upstream (there are two when a stale pooled connection is retried). */
interface Attempt {
  readonly request: ClientRequest;
  /** The upstream's answer began: from here the request is never sent again. */
  answered: boolean;
}

/**
 * The router's own pool for `upstream`: kept-alive connections, at most `maxSockets`, an idle one
 * closed after `keepAliveMs` (the agent's socket timeout, which a request's own timeout replaces
 * while it runs); the most recently used connection is taken first, so idle ones age out.
 */
function poolFor(upstream: ResolvedUpstream): HttpAgent {
  const keepAlive = upstream.keepAliveMs > 0;
  const options = {
    keepAlive,
    maxSockets: upstream.maxSockets,
    scheduling: 'lifo' as const,
    ...(keepAlive ? { timeout: upstream.keepAliveMs } : {}),
  };
  return upstream.target.startsWith('https:') ? new HttpsAgent(options) : new HttpAgent(options);
}

/** The answer to a failed upstream call: 504 when it timed out, 502 otherwise. */
function upstreamFailure(exchange: Exchange): ModelSwitchError {
  const { upstream } = exchange.request;
  return exchange.timedOut
    ? new ModelSwitchError('upstream_timeout', `The upstream ${upstream.name} did not answer within ${upstream.timeoutMs} ms.`)
    : new ModelSwitchError('upstream_error', `The upstream ${upstream.name} could not be reached or answered with an invalid response.`);
}

/** Where one upstream's requests go: made once per upstream from its `target`. */
interface UpstreamTarget {
  /** `http.request` or `https.request`, by the target's protocol. */
  readonly send: (options: RequestOptions) => ClientRequest;
  /** What every request to it shares: host, port, credentials of the target URL, the pool. */
  readonly options: RequestOptions;
  /** The `Host` header: the target's, as a proxy changing the origin sends it. */
  readonly host: string;
  /** The target's path without a trailing slash (`/v1`), or `''`. */
  readonly basePath: string;
  /** The target's own query (`?api-version=…`), or `''`. */
  readonly query: string;
}

function targetOf(upstream: ResolvedUpstream, agent: HttpAgent): UpstreamTarget {
  const url = new URL(upstream.target);
  const secure = url.protocol === 'https:';
  const options: RequestOptions = {
    protocol: url.protocol,
    // An IPv6 literal without its brackets, as `http.request` takes it.
    hostname: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port === '' ? (secure ? 443 : 80) : Number(url.port),
    agent,
  };
  if (url.username !== '' || url.password !== '') {
    options.auth = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
  }
  return {
    send: secure ? httpsRequest : httpRequest,
    options,
    host: url.host,
    basePath: url.pathname.replace(/\/+$/, ''),
    query: url.search,
  };
}

/**
 * The path a request takes upstream: the target's path, then the request's below the router's
 * mount (`/v1` + `/chat/completions`), with runs of slashes made one; the target's own query first,
 * then the request's.
 */
export function upstreamPath(target: Pick<UpstreamTarget, 'basePath' | 'query'>, url: string): string {
  const mark = url.indexOf('?');
  const path = mark === -1 ? url : url.slice(0, mark);
  const joined = `${target.basePath}/${path}`.replace(/\/{2,}/g, '/');
  const query = mark === -1 ? '' : url.slice(mark + 1);
  if (target.query === '') return query === '' && mark === -1 ? joined : `${joined}?${query}`;
  return query === '' ? `${joined}${target.query}` : `${joined}${target.query}&${query}`;
}

/**
 * The headers a request carries upstream: the client's, less its credential, its private and
 * hop-by-hop headers and any header holding a key, then the upstream's own (its credential), the
 * body's type and length, `Accept-Encoding: identity` (usage is read from the answer) and the
 * target's `Host`.
 */
export function upstreamHeaders(
  client: IncomingHttpHeaders,
  upstream: ResolvedUpstream,
  bodyBytes: number,
  host: string,
): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = {};
  for (const name in client) {
    const value = client[name];
    // A key percent-encoded (x-request-id: ms%2D…) is still the key: such a header is dropped too.
    if (value === undefined || DROPPED_REQUEST_HEADERS.has(name) || containsKey(String(value))) continue;
    headers[name] = value;
  }
  for (const name in upstream.headers) headers[name] = upstream.headers[name];
  headers['content-type'] = 'application/json';
  headers['content-length'] = bodyBytes;
  headers['accept-encoding'] = 'identity';
  headers.host = host;
  return headers;
}

/**
 * The upstream side of one `proxyRouter`: a pool of kept-alive connections per upstream, the
 * request sent on it, and what the upstream does with it reported to the request's
 * {@link Exchange}, which does the accounting. Sent with `node:http`/`node:https` directly: see
 * docs/decisions.md for why not through http-proxy-middleware.
 */
export class UpstreamEvents {
  private readonly targets = new Map<ResolvedUpstream, UpstreamTarget>();
  /** The pools this router made (not a host's `agent`), destroyed by `close()`. */
  private readonly pools: HttpAgent[] = [];
  /** Each request's latest sending, for the stale-connection retry. */
  private readonly attempts = new WeakMap<IncomingMessage, Attempt>();
  /** Requests already sent again once. */
  private readonly retried = new WeakSet<IncomingMessage>();

  constructor(
    upstreams: readonly ResolvedUpstream[],
    /** The exchange of a request that reserved its spend, or `undefined` (the upstream call is then stopped). */
    private readonly exchangeOf: (req: IncomingMessage) => Exchange | undefined,
    private readonly logger: Logger,
  ) {
    for (const upstream of upstreams) {
      let agent = upstream.agent;
      if (agent === undefined) {
        agent = poolFor(upstream);
        this.pools.push(agent);
      }
      this.targets.set(upstream, targetOf(upstream, agent));
    }
  }

  /**
   * The request to the upstream was just made (no connection yet): set its timeout and send the
   * body that was priced.
   */
  readonly onProxyReq = (proxyReq: ClientRequest, req: IncomingMessage): void => {
    const exchange = this.exchangeOf(req);
    if (exchange === undefined) {
      proxyReq.destroy();
      return;
    }
    const { upstream, body } = exchange.request;
    const attempt: Attempt = { request: proxyReq, answered: false };
    this.attempts.set(req, attempt);
    proxyReq.once('response', () => {
      attempt.answered = true;
    });
    exchange.attach(proxyReq);
    const timedOut = () => {
      exchange.timeOut();
      proxyReq.destroy(new Error('upstream timeout'));
    };
    // Silence on the connection, once it has one; before, the wait for a free connection counts.
    proxyReq.setTimeout(upstream.timeoutMs, timedOut);
    const waiting = setTimeout(timedOut, upstream.timeoutMs).unref();
    const stopWaiting = () => clearTimeout(waiting);
    proxyReq.once('socket', stopWaiting);
    proxyReq.once('close', stopWaiting);
    proxyReq.end(body);
  };

  /**
   * The upstream answered: pass its status and headers on (less the dropped ones), stream its body
   * through (SSE event by event, reading the usage on the way; a JSON body also kept to read its
   * usage), and settle when it ends or breaks off.
   */
  readonly onProxyRes = (proxyRes: IncomingMessage, req: IncomingMessage, res: ServerResponse): void => {
    const exchange = this.exchangeOf(req);
    if (exchange === undefined || res.destroyed) {
      proxyRes.destroy();
      return;
    }
    const status = proxyRes.statusCode ?? 502;
    const contentType = String(proxyRes.headers['content-type'] ?? '');
    const isStream = contentType.includes('text/event-stream');
    const metered = status >= 200 && status < 300;
    exchange.answered(metered, status);
    res.statusCode = status;
    for (const [name, value] of Object.entries(proxyRes.headers)) {
      if (value === undefined || DROPPED_RESPONSE_HEADERS.has(name) || isProviderRateLimit(name)) continue;
      if (isStream && name === 'content-length') continue;
      // X-Request-Id is the gateway's (set before the request went upstream): the upstream's own id
      // goes on under its own name, and an upstream's X-Upstream-Request-Id never stands in for it.
      if (name === 'x-upstream-request-id') continue;
      if (name === 'x-request-id') res.setHeader(UPSTREAM_REQUEST_ID_HEADER, value);
      else res.setHeader(name, value);
    }
    const scanner = isStream && metered ? new SseUsageScanner(exchange.request.stripUsageChunk) : undefined;
    let kept: Buffer[] | undefined = !isStream && metered ? [] : undefined;
    let keptBytes = 0;
    if (isStream) {
      // no-transform keeps compression() (and other transforming proxies) from buffering the stream.
      res.setHeader('cache-control', 'no-cache, no-transform');
      res.setHeader('x-accel-buffering', 'no');
      res.flushHeaders();
    }
    let ended = false;
    // A JSON answer's last chunk waits for the settlement: its Content-Length lets a client finish
    // reading as soon as the last byte arrives, and the client's next request must see the spend.
    let held: Buffer | undefined;
    proxyRes.on('data', function forwardChunk(chunk: Buffer) {
      const out = scanner ? scanner.push(chunk) : chunk;
      exchange.reportUsage(scanner?.usage);
      exchange.reportAnswerId(scanner?.answerId);
      if (kept !== undefined) {
        keptBytes += chunk.length;
        if (keptBytes > MAX_METERED_BODY) kept = undefined;
        else kept.push(chunk);
      }
      const write = isStream ? out : held;
      if (!isStream) held = out;
      // Only what is written reached the client (a held chunk has not: an answer cut off before
      // any byte was written costs nothing); every chunk renews the hold all the same.
      exchange.forwarded(write?.length ?? 0);
      if (write !== undefined && write.length > 0) {
        // The first write carries the status line and headers: corked, they leave with the body's
        // first bytes in one write instead of two (a JSON answer that fits in one chunk leaves
        // whole, headers included, with res.end after its settlement).
        const first = !res.headersSent;
        if (first) res.cork();
        const flowing = res.write(write);
        if (first) res.uncork();
        if (!flowing) {
          proxyRes.pause();
          res.once('drain', () => proxyRes.resume());
        }
      }
      if (isStream) flush(res);
    });
    proxyRes.on('end', function finishAnswer() {
      ended = true;
      if (scanner) {
        const rest = scanner.end();
        if (rest.length > 0) {
          exchange.forwarded(rest.length);
          res.write(rest);
        }
        exchange.reportUsage(scanner.usage);
        exchange.reportAnswerId(scanner.answerId);
      } else if (kept !== undefined) {
        const answer = readJsonAnswer(Buffer.concat(kept, keptBytes));
        exchange.reportUsage(answer.usage);
        exchange.reportAnswerId(answer.id);
      }
      // Settle before ending, so the client's next request sees its spend.
      void exchange.settle('completed').then(() => res.end(held));
    });
    proxyRes.on('close', function upstreamClosed() {
      if (ended) return;
      // The upstream broke off mid-answer: charge what it reported (or what was forwarded), cut the client's connection.
      void exchange.settle('upstream_broke').then(() => res.destroy());
    });
  };

  /** The upstream could not be reached, failed or timed out before or while answering: settle, then answer 502/504 or cut the connection. */
  readonly onProxyError = (error: Error, req: IncomingMessage, res: ServerResponse | unknown): void => {
    const exchange = this.exchangeOf(req);
    const response = res as ServerResponse;
    if (exchange === undefined) {
      if (typeof response.destroy === 'function') response.destroy();
      return;
    }
    if (this.isStale(req, error, exchange, response)) {
      // Nothing of it reached the upstream's handler: send it once more, on another connection,
      // under the same reservation (one exchange, settled once: never charged twice).
      this.retried.add(req);
      this.forward(exchange, req, response);
      return;
    }
    // A client that hung up is not an upstream fault worth a log line.
    if (!exchange.timedOut && !response.destroyed)
      this.logger.warn(`modelswitch-keys: upstream ${exchange.request.upstream.name} failed: ${error.message}`);
    void exchange.settle('failed').then(() => {
      if (response.headersSent || response.destroyed) {
        response.destroy();
        return;
      }
      sendError(response, upstreamFailure(exchange));
    });
  };

  /**
   * Whether `error` is a pooled connection the upstream had closed: the request went out on a
   * reused connection, failed with a reset before any byte of an answer, the client still waits,
   * and it was not sent again already. A new connection that fails is the upstream's failure.
   */
  private isStale(req: IncomingMessage, error: Error, exchange: Exchange, res: ServerResponse): boolean {
    const attempt = this.attempts.get(req);
    if (attempt === undefined || attempt.answered || !attempt.request.reusedSocket || this.retried.has(req)) return false;
    const code = (error as NodeJS.ErrnoException).code;
    return code !== undefined && STALE_CONNECTION_ERRORS.has(code) && !exchange.timedOut && !res.headersSent && !res.destroyed;
  }

  /** Destroys the pools this router made, with their connections (a host's own `agent` is left alone). */
  close(): void {
    for (const pool of this.pools) pool.destroy();
  }

  /**
   * Sends a request whose spend is reserved to its upstream: from here the exchange settles
   * however the request ends (answered, failed, or the client gone), and closes with the response.
   */
  async send(exchange: Exchange, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.targets.has(exchange.request.upstream))
      throw new TypeError(`UpstreamEvents.send: ${exchange.request.upstream.name} is not one of this router's upstreams`);
    res.once('close', function clientClosed() {
      // The client went away before the end of its answer: settle what it had (see Exchange).
      if (!res.writableFinished) void exchange.clientClosed();
      exchange.close();
    });
    if (res.destroyed) {
      try {
        await exchange.settle('client_closed');
      } finally {
        exchange.close();
      }
      return;
    }
    this.forward(exchange, req, res);
  }

  /** Sends the request to its upstream (again, for a stale connection), on the upstream's pool. */
  private forward(exchange: Exchange, req: IncomingMessage, res: ServerResponse): void {
    const target = this.targets.get(exchange.request.upstream) as UpstreamTarget;
    let proxyReq: ClientRequest;
    try {
      proxyReq = target.send({
        ...target.options,
        method: req.method,
        path: upstreamPath(target, req.url ?? '/'),
        headers: upstreamHeaders(req.headers, exchange.request.upstream, exchange.request.body.length, target.host),
      });
    } catch (error) {
      // A request Node refuses to make (a header it will not send, say) fails as the upstream call.
      this.onProxyError(error instanceof Error ? error : new Error(String(error)), req, res);
      return;
    }
    proxyReq.on('error', (error) => this.onProxyError(error, req, res));
    proxyReq.on('response', (proxyRes) => this.onProxyRes(proxyRes, req, res));
    this.onProxyReq(proxyReq, req);
  }
}
