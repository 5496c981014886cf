/**
 * OFFLINE MOCK UPSTREAM — not a real model.
 *
 * A tiny OpenAI-compatible server the example gateway starts when no OPENAI_API_KEY is set, so
 * `npm run example` and the README's curl commands work without network access or a provider
 * account. It answers canned text, says so in every answer, and reports made-up but plausible
 * token `usage` so metering, spend limits and balances can be seen working.
 *
 * Routes: `GET /v1/models`, `POST /v1/chat/completions` (JSON, and SSE with `"stream": true`,
 * honouring `stream_options.include_usage` like OpenAI), `POST /v1/embeddings`.
 * Every answer carries the header `x-modelswitch-mock: true`.
 */
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** The models the mock pretends to serve (named like OpenAI's so the README's commands work either way). */
export const MOCK_MODELS = ['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small'] as const;

const ANSWER = 'Hello from the modelswitch-keys OFFLINE MOCK upstream. No real model was called.';

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'x-modelswitch-mock': 'true' });
  res.end(text);
}

/** About one token per 4 characters of the messages, like OpenAI's rule of thumb. */
function promptTokens(body: Record<string, unknown>): number {
  const text = JSON.stringify(body.messages ?? body.input ?? body.prompt ?? '');
  return Math.max(1, Math.ceil(text.length / 4));
}

function completionsAnswer(res: ServerResponse, body: Record<string, unknown>): void {
  const model = String(body.model);
  const prompt = promptTokens(body);
  const words = ANSWER.split(/(?= )/);
  const usage = { prompt_tokens: prompt, completion_tokens: words.length, total_tokens: prompt + words.length };
  const base = { id: `chatcmpl-mock-${Date.now()}`, created: Math.floor(Date.now() / 1000), model };
  if (body.stream !== true) {
    send(res, 200, {
      ...base,
      object: 'chat.completion',
      choices: [{ index: 0, message: { role: 'assistant', content: ANSWER, refusal: null }, logprobs: null, finish_reason: 'stop' }],
      usage,
    });
    return;
  }
  const options = body.stream_options as { include_usage?: boolean } | undefined;
  const includeUsage = options?.include_usage === true;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-modelswitch-mock': 'true' });
  const event = (delta: Record<string, unknown>, finish: string | null) => {
    const chunk = {
      ...base,
      object: 'chat.completion.chunk',
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      ...(includeUsage ? { usage: null } : {}),
    };
    res.write(`data: ${JSON.stringify(chunk)}\n\n`);
  };
  event({ role: 'assistant', content: '' }, null);
  for (const word of words) event({ content: word }, null);
  event({}, 'stop');
  if (includeUsage) res.write(`data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices: [], usage })}\n\n`);
  res.end('data: [DONE]\n\n');
}

function route(req: IncomingMessage, res: ServerResponse, raw: string): void {
  const path = (req.url ?? '/').split('?', 1)[0];
  if (req.method === 'GET' && path === '/v1/models') {
    send(res, 200, { object: 'list', data: MOCK_MODELS.map((id) => ({ id, object: 'model', created: 0, owned_by: 'modelswitch-mock' })) });
    return;
  }
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    send(res, 400, { error: { message: 'Invalid JSON (mock upstream)', type: 'invalid_request_error', param: null, code: null } });
    return;
  }
  if (req.method === 'POST' && path === '/v1/chat/completions') {
    completionsAnswer(res, body);
    return;
  }
  if (req.method === 'POST' && path === '/v1/embeddings') {
    const prompt = promptTokens(body);
    send(res, 200, {
      object: 'list',
      data: [{ object: 'embedding', index: 0, embedding: [0.0123, -0.0456, 0.0789] }],
      model: body.model,
      usage: { prompt_tokens: prompt, total_tokens: prompt },
    });
    return;
  }
  send(res, 404, {
    error: { message: `Unknown route ${req.method} ${path} (mock upstream)`, type: 'invalid_request_error', param: null, code: null },
  });
}

/**
 * Starts the OFFLINE MOCK upstream on 127.0.0.1 (`port` 0 or omitted picks a free one). `url` is
 * its base URL including `/v1`, ready to be an upstream `target`.
 *
 * @example
 * ```ts
 * const mock = await startMockUpstream();
 * const upstreams = [{ name: 'mock', target: mock.url, models: ['gpt-4o-mini'] }];
 * // ... later
 * await mock.close();
 * ```
 */
export async function startMockUpstream(port = 0): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => route(req, res, Buffer.concat(chunks).toString('utf8')));
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  return {
    url,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
