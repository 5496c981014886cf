import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';

/** What the mock upstream received, byte for byte, so tests can prove what reached a provider. */
export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  body: string;
}

/** How the mock answers the next completion; tests change it between requests. */
export interface MockBehaviour {
  /** Usage it reports. Default 12 prompt + 8 completion tokens. */
  usage?: { prompt_tokens: number; completion_tokens: number };
  /** Answer this status and JSON body instead of a completion. */
  error?: { status: number; body: unknown };
  /** Never answer (for timeouts). */
  hang?: boolean;
  /** Destroy the connection without answering. */
  reset?: boolean;
  /** For streams: send the first chunk, then wait for this before sending the rest. */
  holdAfterFirstChunk?: Promise<void>;
  /** For streams: send the headers, then wait for this before the first chunk. */
  holdBeforeFirstChunk?: Promise<void>;
  /** For streams: send every content chunk up to `finish_reason`, then wait for this before the usage chunk. */
  holdBeforeUsage?: Promise<void>;
  /** For streams: send everything up to the usage chunk, then wait for this before `data: [DONE]`. */
  holdBeforeDone?: Promise<void>;
  /** For streams: send the headers, then destroy the connection without any chunk. */
  resetBeforeFirstChunk?: boolean;
  /** For streams: destroy the connection after the first chunk. */
  resetAfterFirstChunk?: boolean;
  /** Leave `usage` out of the answer. */
  omitUsage?: boolean;
}

export interface MockUpstream {
  /** Base URL including `/v1`, as an upstream `target`. */
  url: string;
  requests: RecordedRequest[];
  behaviour: MockBehaviour;
  /** Resolves when a request's connection to the mock closed (for abort tests). */
  closed: Promise<void>[];
  close(): Promise<void>;
}

const DEFAULT_USAGE = { prompt_tokens: 12, completion_tokens: 8 };

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    // What OpenAI says about the operator's own account: the gateway must not pass it on.
    'openai-organization': 'org-operator',
    'openai-project': 'proj_operator',
    'x-ratelimit-remaining-requests': '4999',
    // The IETF names a provider may send for the operator's account: they must not overwrite the gateway's.
    ratelimit: 'limit=5000, remaining=4999, reset=1',
    'ratelimit-limit': '5000',
    'ratelimit-remaining': '4999',
    'ratelimit-policy': '5000;w=60',
    'anthropic-ratelimit-requests-remaining': '4999',
    'anthropic-organization-id': 'org-operator',
    'x-request-id': 'req_mock',
  });
  res.end(text);
}

function chunk(model: string, delta: Record<string, unknown>, finish: string | null, withUsageNull: boolean): string {
  const body: Record<string, unknown> = {
    id: 'chatcmpl-mock',
    object: 'chat.completion.chunk',
    created: 1_700_000_000,
    model,
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
  };
  if (withUsageNull) body.usage = null;
  return `data: ${JSON.stringify(body)}\n\n`;
}

async function answer(mock: MockUpstream, req: IncomingMessage, res: ServerResponse, body: string): Promise<void> {
  const behaviour = mock.behaviour;
  const path = (req.url ?? '').split('?')[0];
  if (req.method === 'GET' && path === '/v1/models') {
    json(res, 200, { object: 'list', data: [{ id: 'mock-model', object: 'model', created: 0, owned_by: 'mock' }] });
    return;
  }
  if (behaviour.reset) {
    req.socket.destroy();
    return;
  }
  if (behaviour.hang) return;
  if (behaviour.error) {
    json(res, behaviour.error.status, behaviour.error.body);
    return;
  }
  const request = JSON.parse(body) as { model: string; stream?: boolean; stream_options?: { include_usage?: boolean } };
  const u = behaviour.usage ?? DEFAULT_USAGE;
  const usage = {
    prompt_tokens: u.prompt_tokens,
    completion_tokens: u.completion_tokens,
    total_tokens: u.prompt_tokens + u.completion_tokens,
  };
  if (path === '/v1/embeddings') {
    json(res, 200, {
      object: 'list',
      data: [{ object: 'embedding', index: 0, embedding: [0.1, 0.2] }],
      model: request.model,
      usage: { prompt_tokens: u.prompt_tokens, total_tokens: u.prompt_tokens },
    });
    return;
  }
  if (!request.stream) {
    json(res, 200, {
      id: 'chatcmpl-mock',
      object: 'chat.completion',
      created: 1_700_000_000,
      model: request.model,
      choices: [{ index: 0, message: { role: 'assistant', content: 'Hello world', refusal: null }, logprobs: null, finish_reason: 'stop' }],
      ...(behaviour.omitUsage ? {} : { usage }),
    });
    return;
  }
  const includeUsage = request.stream_options?.include_usage === true && !behaviour.omitUsage;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  if (behaviour.resetBeforeFirstChunk) {
    res.flushHeaders();
    setTimeout(() => req.socket.destroy(), 20);
    return;
  }
  if (behaviour.holdBeforeFirstChunk) {
    res.flushHeaders();
    await behaviour.holdBeforeFirstChunk;
  }
  const first = chunk(request.model, { role: 'assistant', content: '' }, null, includeUsage);
  if (behaviour.resetAfterFirstChunk) {
    // Destroy only once the first chunk is on the wire, so the gateway has started answering.
    res.write(first, () => setTimeout(() => req.socket.destroy(), 20));
    return;
  }
  res.write(first);
  if (behaviour.holdAfterFirstChunk) await behaviour.holdAfterFirstChunk;
  res.write(chunk(request.model, { content: 'Hello' }, null, includeUsage));
  res.write(chunk(request.model, { content: ' world' }, null, includeUsage));
  res.write(chunk(request.model, {}, 'stop', includeUsage));
  if (behaviour.holdBeforeUsage) await behaviour.holdBeforeUsage;
  if (includeUsage) {
    res.write(
      `data: ${JSON.stringify({ id: 'chatcmpl-mock', object: 'chat.completion.chunk', created: 1_700_000_000, model: request.model, choices: [], usage })}\n\n`,
    );
  }
  if (behaviour.holdBeforeDone) await behaviour.holdBeforeDone;
  res.end('data: [DONE]\n\n');
}

/**
 * A local OpenAI-compatible upstream for the proxy tests: `/v1/chat/completions` (JSON and SSE,
 * `stream_options.include_usage` honoured like OpenAI), `/v1/embeddings`, `/v1/models`, and faults
 * chosen through `behaviour`. It records every request it receives.
 */
export async function startTestUpstream(): Promise<MockUpstream> {
  const sockets = new Set<import('node:net').Socket>();
  const mock: MockUpstream = { url: '', requests: [], behaviour: {}, closed: [], close: async () => {} };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    mock.closed.push(new Promise((resolve) => res.once('close', () => resolve())));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      mock.requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body });
      answer(mock, req, res, body).catch(() => res.destroy());
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  mock.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  mock.close = () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
  return mock;
}
