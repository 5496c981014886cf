import type { ClientRequest, IncomingMessage, OutgoingHttpHeader, ServerResponse } from 'node:http';
import { PassThrough, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { generateApiKey } from '../../src/keys/api-key.js';
import { Exchange } from '../../src/proxy/exchange.js';
import { UpstreamEvents, upstreamHeaders, upstreamPath } from '../../src/proxy/upstream-events.js';
import { HOLD_ID, REQUEST_ID, exchangeWorld, preparedChat, resolvedOptions, sampleContext, settled } from './exchange-fixtures.js';

const START = Date.parse('2026-11-22T12:00:00Z');

/** The client's side of an answer, without a socket: what the events wrote, and whether it ended or was cut. */
class FakeResponse extends Writable {
  statusCode = 200;
  headersSent = false;
  readonly headers: Record<string, OutgoingHttpHeader> = {};
  private readonly chunks: Buffer[] = [];

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    this.headersSent = true;
    this.chunks.push(chunk);
    callback();
  }

  setHeader(name: string, value: OutgoingHttpHeader): this {
    this.headers[name.toLowerCase()] = value;
    return this;
  }

  flushHeaders(): void {
    this.headersSent = true;
  }

  get text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }

  get asServerResponse(): ServerResponse {
    return this as unknown as ServerResponse;
  }
}

/** An upstream answer as `node:http` hands it over: a stream with a status and headers. */
function upstreamAnswer(statusCode: number, headers: Record<string, string>): PassThrough & IncomingMessage {
  return Object.assign(new PassThrough(), { statusCode, headers }) as unknown as PassThrough & IncomingMessage;
}

/** A reserved exchange for a request, and the events that find it by that request. */
async function wired(extra: Record<string, unknown> = {}) {
  const world = exchangeWorld();
  const context = sampleContext();
  const exchange = await Exchange.reserve(world.dependencies, context, preparedChat(context, world.clock, extra), REQUEST_ID);
  world.clock.advance(1500);
  const req = { headers: {} } as IncomingMessage;
  const events = new UpstreamEvents(resolvedOptions.upstreams, (r) => (r === req ? exchange : undefined), world.logger);
  return { ...world, exchange, req, events, res: new FakeResponse() };
}

/** Resolves when `res` ended (its answer complete) or was destroyed (cut). */
function finished(res: FakeResponse): Promise<'ended' | 'cut'> {
  return new Promise((resolve) => {
    res.once('finish', () => resolve('ended'));
    res.once('close', () => resolve(res.writableFinished ? 'ended' : 'cut'));
  });
}

const content = 'data: {"id":"chatcmpl-9","choices":[{"index":0,"delta":{"content":"Hello"}}],"usage":null}\n\n';
const usageChunk = 'data: {"id":"chatcmpl-9","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":8}}\n\n';
const done = 'data: [DONE]\n\n';

describe('UpstreamEvents.onProxyRes', () => {
  it('streams SSE to the end without the usage chunk it asked for, then settles the reported usage before ending', async () => {
    const { events, req, res, store } = await wired({ stream: true });
    const answer = upstreamAnswer(200, {
      'content-type': 'text/event-stream',
      'content-length': '999',
      'openai-organization': 'org-operator',
      'x-ratelimit-remaining-requests': '42',
      'x-request-id': 'req_1',
    });
    const end = finished(res);
    events.onProxyRes(answer, req, res.asServerResponse);
    answer.write(content);
    answer.write(usageChunk.slice(0, 20));
    answer.end(usageChunk.slice(20) + done);
    expect(await end).toBe('ended');
    expect({ status: res.statusCode, headers: res.headers, text: res.text }).toEqual({
      status: 200,
      headers: {
        'content-type': 'text/event-stream',
        // The upstream's own id under its own name: X-Request-Id is the gateway's (set by the router).
        'x-upstream-request-id': 'req_1',
        'cache-control': 'no-cache, no-transform',
        'x-accel-buffering': 'no',
      },
      text: `data: {"id":"chatcmpl-9","choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\n${done}`,
    });
    expect(store.settlements).toEqual([
      {
        keyId: 7,
        accountId: 'acct_test',
        holdId: HOLD_ID,
        cost: 0.028,
        period: '2026-11-22',
        now: START + 1500,
        usage: { model: 'mock-model', promptTokens: 12, completionTokens: 8, requestId: REQUEST_ID, upstreamId: 'chatcmpl-9' },
      },
    ]);
  });

  it('passes a 2xx JSON answer through and settles the usage read from its body', async () => {
    const { events, req, res, store } = await wired();
    const body = JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion', usage: { prompt_tokens: 12, completion_tokens: 8 } });
    const answer = upstreamAnswer(200, { 'content-type': 'application/json', 'content-length': String(body.length) });
    const end = finished(res);
    events.onProxyRes(answer, req, res.asServerResponse);
    answer.end(body);
    expect(await end).toBe('ended');
    expect({ status: res.statusCode, headers: res.headers, text: res.text }).toEqual({
      status: 200,
      headers: { 'content-type': 'application/json', 'content-length': String(body.length) },
      text: body,
    });
    expect(store.settlements.map((s) => [s.cost, s.usage])).toEqual([
      [0.028, { model: 'mock-model', promptTokens: 12, completionTokens: 8, requestId: REQUEST_ID, upstreamId: 'chatcmpl-1' }],
    ]);
  });

  it("passes the upstream's own error answer through unchanged and charges nothing", async () => {
    const { events, req, res, store } = await wired();
    const body = JSON.stringify({ error: { message: 'Rate limited', type: 'rate_limit_error' }, usage: { prompt_tokens: 12 } });
    const answer = upstreamAnswer(429, { 'content-type': 'application/json' });
    const end = finished(res);
    events.onProxyRes(answer, req, res.asServerResponse);
    answer.end(body);
    expect(await end).toBe('ended');
    expect({ status: res.statusCode, text: res.text }).toEqual({ status: 429, text: body });
    expect(store.settlements.map((s) => s.cost)).toEqual([0]);
  });

  it('cuts the client off when the upstream breaks off mid-stream, charging the reservation for what was forwarded', async () => {
    const { events, req, res, store } = await wired({ stream: true });
    const answer = upstreamAnswer(200, { 'content-type': 'text/event-stream' });
    const end = finished(res);
    events.onProxyRes(answer, req, res.asServerResponse);
    answer.write(content);
    await settled();
    answer.destroy();
    expect(await end).toBe('cut');
    expect(res.text).toBe('data: {"id":"chatcmpl-9","choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\n');
    // Cut off before its usage, the stream still named its answer in its first event.
    expect(store.settlements.map((s) => [s.cost, s.usage?.upstreamId, s.usage?.promptTokens])).toEqual([[0.212, 'chatcmpl-9', 0]]);
  });
});

describe('UpstreamEvents.onProxyError', () => {
  it('answers 504 upstream_timeout after a timeout, with the settlement done first', async () => {
    const { events, req, res, store, exchange } = await wired();
    exchange.timeOut();
    const end = finished(res);
    events.onProxyError(new Error('upstream timeout'), req, res.asServerResponse);
    expect(await end).toBe('ended');
    expect({ status: res.statusCode, headers: res.headers, body: JSON.parse(res.text) }).toEqual({
      status: 504,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(res.text), 'cache-control': 'no-store' },
      body: { error: { message: 'The upstream mock did not answer within 600000 ms.', type: 'api_error', code: 'upstream_timeout' } },
    });
    expect(store.settlements.map((s) => s.cost)).toEqual([0]);
  });

  it('answers 502 upstream_error when the upstream cannot be reached, and logs it', async () => {
    const { events, req, res, store, logger } = await wired();
    const end = finished(res);
    events.onProxyError(new Error('connect ECONNREFUSED 127.0.0.1:9'), req, res.asServerResponse);
    expect(await end).toBe('ended');
    expect({ status: res.statusCode, body: JSON.parse(res.text) }).toEqual({
      status: 502,
      body: {
        error: {
          message: 'The upstream mock could not be reached or answered with an invalid response.',
          type: 'api_error',
          code: 'upstream_error',
        },
      },
    });
    expect(store.settlements.map((s) => s.cost)).toEqual([0]);
    expect(logger.lines).toEqual(['warn: modelswitch-keys: upstream mock failed: connect ECONNREFUSED 127.0.0.1:9']);
  });
});

describe('UpstreamEvents.onProxyReq', () => {
  it("replaces the client's credential, private and hop-by-hop headers and any header holding a key with the upstream's", async () => {
    const { exchange } = await wired();
    const client = {
      authorization: 'Bearer ms-client-key',
      cookie: 'session=1',
      'x-forwarded-for': '10.0.0.1',
      'x-custom': 'kept',
      'x-list': ['a', 'b'],
      connection: 'close',
      'keep-alive': 'timeout=5',
      expect: '100-continue',
      'x-note': `forwarded for ${generateApiKey('billing').value}`,
      'content-type': 'text/plain',
      'content-length': '999',
      'accept-encoding': 'gzip',
      host: 'gateway.example',
    };
    expect(upstreamHeaders(client, exchange.request.upstream, exchange.request.body.length, 'api.example:8443')).toEqual({
      'x-custom': 'kept',
      'x-list': ['a', 'b'],
      authorization: 'Bearer sk-upstream-secret',
      'content-type': 'application/json',
      'content-length': exchange.request.body.length,
      'accept-encoding': 'identity',
      host: 'api.example:8443',
    });
  });

  it("joins the target's path and query with the request's, one slash between", () => {
    const cases: Array<[{ basePath: string; query: string }, string, string]> = [
      [{ basePath: '/v1', query: '' }, '/chat/completions', '/v1/chat/completions'],
      [{ basePath: '/v1', query: '' }, '/chat/completions?a=1', '/v1/chat/completions?a=1'],
      [{ basePath: '/v1', query: '' }, '//chat//completions', '/v1/chat/completions'],
      [{ basePath: '', query: '' }, '/embeddings', '/embeddings'],
      [
        { basePath: '/openai/deployments/d', query: '?api-version=2024-10-21' },
        '/chat/completions',
        '/openai/deployments/d/chat/completions?api-version=2024-10-21',
      ],
      [
        { basePath: '/openai/deployments/d', query: '?api-version=2024-10-21' },
        '/chat/completions?a=1',
        '/openai/deployments/d/chat/completions?api-version=2024-10-21&a=1',
      ],
      [{ basePath: '/v1', query: '' }, '/chat/completions?', '/v1/chat/completions?'],
    ];
    expect(cases.map(([target, url]) => upstreamPath(target, url))).toEqual(cases.map(([, , path]) => path));
  });

  it('sets the upstream timeout and sends the priced body', async () => {
    const { events, req, exchange } = await wired();
    const written: Buffer[] = [];
    let timeout: number | undefined;
    const proxyReq = {
      setTimeout: (ms: number) => {
        timeout = ms;
      },
      end: (chunk: Buffer) => written.push(chunk),
      once: () => {},
      destroy: () => {},
    } as unknown as ClientRequest;
    events.onProxyReq(proxyReq, req);
    expect({ timeout, body: Buffer.concat(written).toString('utf8') }).toEqual({
      timeout: 600_000,
      body: exchange.request.body.toString('utf8'),
    });
  });

  it('stops an upstream request that has no reserved exchange', () => {
    const world = exchangeWorld();
    const events = new UpstreamEvents(resolvedOptions.upstreams, () => undefined, world.logger);
    let destroyed = 0;
    events.onProxyReq({ destroy: () => destroyed++ } as unknown as ClientRequest, { headers: {} } as IncomingMessage);
    expect(destroyed).toBe(1);
  });
});
