import { type ClientRequest, Agent as HttpAgent, type IncomingMessage, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Stream } from 'node:stream';
import { type RequestHandler, createProxyMiddleware } from 'http-proxy-middleware';
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

/**
 * The http-proxy side of one `proxyRouter`: one http-proxy-middleware per upstream, each with its
 * pool of kept-alive connections, whose events find the request's {@link Exchange} and report to
 * it what the upstream did; the exchange does the accounting.
 */
export class UpstreamEvents {
  private readonly proxies = new Map<ResolvedUpstream, RequestHandler<IncomingMessage, ServerResponse>>();
  /** The pools this router made (not a host's `agent`), destroyed by `close()`. */
  private readonly pools: HttpAgent[] = [];
  /**
   * The request http-proxy is starting to send (its `start` event), taken by `sendRequest`: http-proxy
   * emits `start`, makes the upstream request and hands it to `buffer.pipe` in one synchronous run.
   */
  private starting: IncomingMessage | undefined;
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
    // Made at creation, so a target http-proxy-middleware refuses fails then rather than on a request.
    for (const upstream of upstreams) this.proxyFor(upstream);
  }

  /** The http-proxy-middleware of `upstream`, made once. */
  private proxyFor(upstream: ResolvedUpstream): RequestHandler<IncomingMessage, ServerResponse> {
    let proxy = this.proxies.get(upstream);
    if (proxy === undefined) {
      const events = this;
      let agent = upstream.agent;
      if (agent === undefined) {
        agent = poolFor(upstream);
        this.pools.push(agent);
      }
      // The body was read to route the request: http-proxy's `buffer` (the stream it sends instead
      // of the consumed request) writes the body that was priced, as the request is made. Doing it
      // there, not on `proxyReq` (emitted once a connection is free), keeps a request that waits
      // for one of the `maxSockets` connections whole: by then http-proxy has ended it.
      const buffer = {
        pipe(request: ClientRequest): ClientRequest {
          events.sendRequest(request);
          return request;
        },
      };
      proxy = createProxyMiddleware<IncomingMessage, ServerResponse>({
        target: upstream.target,
        changeOrigin: true,
        selfHandleResponse: true,
        agent,
        buffer: buffer as unknown as Stream,
        // Without the default plugins hpm neither logs nor writes its own plain-text error pages.
        ejectPlugins: true,
        plugins: [
          function modelSwitchProxyEvents(proxyServer) {
            proxyServer.on('start', events.onStart);
            proxyServer.on('proxyRes', events.onProxyRes);
            proxyServer.on('error', events.onProxyError);
            proxyServer.on('econnreset', events.onProxyError);
          },
        ],
      });
      this.proxies.set(upstream, proxy);
    }
    return proxy;
  }

  private readonly onStart = (req: IncomingMessage): void => {
    this.starting = req;
  };

  /** http-proxy made the upstream request of the request it started (see `starting`). */
  private sendRequest(proxyReq: ClientRequest): void {
    const req = this.starting;
    this.starting = undefined;
    if (req === undefined) proxyReq.destroy();
    else this.onProxyReq(proxyReq, req);
  }

  /**
   * The request to the upstream was just made (no connection yet): swap the client's credential
   * and private headers for the upstream's, set the timeout, and send the body that was priced.
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
    for (const name of proxyReq.getHeaderNames()) {
      const value = proxyReq.getHeader(name);
      // A key percent-encoded (x-request-id: ms%2D…) is still the key: such a header is dropped too.
      if (DROPPED_REQUEST_HEADERS.has(name) || containsKey(String(value))) proxyReq.removeHeader(name);
    }
    for (const [name, value] of Object.entries(upstream.headers)) proxyReq.setHeader(name, value);
    proxyReq.setHeader('content-type', 'application/json');
    proxyReq.setHeader('content-length', body.length);
    // Usage is read from the answer, so ask for it uncompressed.
    proxyReq.setHeader('accept-encoding', 'identity');
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
      void this.forward(exchange, req, response);
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
    const proxy = this.proxies.get(exchange.request.upstream);
    if (proxy === undefined)
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
    // The body is already read: nothing is to be continued.
    delete req.headers.expect;
    await this.forward(exchange, req, res);
  }

  /** Hands the request to its upstream's http-proxy-middleware (again, for a stale connection). */
  private async forward(exchange: Exchange, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const proxy = this.proxies.get(exchange.request.upstream) as RequestHandler<IncomingMessage, ServerResponse>;
    const events = this;
    await proxy(req, res, function proxyFailed(error?: unknown) {
      events.onProxyError(error instanceof Error ? error : new Error(String(error)), req, res);
    });
  }
}
