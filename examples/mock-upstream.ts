/**
 * OFFLINE MOCK UPSTREAM — not a real model.
 *
 * A tiny OpenAI-compatible server the example gateway starts when no OPENAI_API_KEY is set, so
 * `npm run example`, the README's curl commands and the usual clients (openai, the Vercel AI SDK,
 * LangChain) work without network access or a provider account. It answers canned text, says so
 * in every answer, and reports made-up but plausible token `usage` (one token per word of the
 * answer, about one per 4 characters of the prompt) so metering, spend limits and balances can be
 * seen working.
 *
 * Routes, shaped like OpenAI's:
 * - `GET /v1/models`
 * - `POST /v1/chat/completions` and `POST /v1/completions`: JSON, or SSE with `"stream": true`
 *   (the usage chunk only with `stream_options.include_usage`, like OpenAI)
 * - `POST /v1/responses`: JSON, or SSE with the Responses API's typed events, ending in
 *   `response.completed` (or `response.incomplete`) with `usage`
 * - `POST /v1/embeddings`: one deterministic, unit-length vector per input (a string, an array of
 *   strings, a token array or an array of token arrays), of the model's dimension or `dimensions`,
 *   as `encoding_format` `float` or `base64` (little-endian float32, what the SDKs decode)
 *
 * `max_tokens`, `max_completion_tokens` and `max_output_tokens` are honoured: the answer is cut to
 * the cap and ends with `finish_reason: "length"` (Responses API: `status: "incomplete"`).
 * Every answer carries the header `x-modelswitch-mock: true`, and every text starts with
 * "OFFLINE MOCK".
 */
import { createHash } from 'node:crypto';
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** The models the mock pretends to serve (named like OpenAI's so the README's commands work either way). */
export const MOCK_MODELS = ['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small'] as const;

/** The canned answer; each word (with its leading space) counts as one completion token. */
export const MOCK_ANSWER = 'OFFLINE MOCK answer from the modelswitch-keys example: no real model was called.';

/** The vector length of OpenAI's embedding models; other models get {@link DEFAULT_EMBEDDING_DIMENSIONS}. */
export const EMBEDDING_DIMENSIONS: Readonly<Record<string, number>> = {
  'text-embedding-3-small': 1536,
  'text-embedding-3-large': 3072,
  'text-embedding-ada-002': 1536,
};
const DEFAULT_EMBEDDING_DIMENSIONS = 1536;

type Body = Record<string, unknown>;

/** A bad request, answered 400 in OpenAI's error shape. */
class BadRequest extends Error {
  constructor(
    message: string,
    readonly param: string,
  ) {
    super(message);
  }
}

const MOCK_HEADER = { 'x-modelswitch-mock': 'true' } as const;

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...MOCK_HEADER });
  res.end(text);
}

function startStream(res: ServerResponse): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', ...MOCK_HEADER });
}

/** About one token per 4 characters of what the request asks about, like OpenAI's rule of thumb. */
function promptTokens(body: Body): number {
  const text = JSON.stringify(body.messages ?? body.input ?? body.prompt ?? '') + String(body.instructions ?? '');
  return Math.max(1, Math.ceil(text.length / 4));
}

/** The answer's tokens, cut to the request's output cap (the first of `fields` that is set). */
function answerTokens(body: Body, fields: readonly string[]): { tokens: string[]; cut: boolean } {
  const words = MOCK_ANSWER.split(/(?= )/);
  for (const field of fields) {
    const cap = body[field];
    if (cap === undefined || cap === null) continue;
    if (typeof cap !== 'number' || !Number.isInteger(cap) || cap < 1) throw new BadRequest(`${field} must be a positive integer`, field);
    return { tokens: words.slice(0, cap), cut: cap < words.length };
  }
  return { tokens: words, cut: false };
}

/** `/v1/chat/completions` and `/v1/completions`: the same answer in the two APIs' shapes. */
function completionsAnswer(res: ServerResponse, body: Body, chat: boolean): void {
  const { tokens, cut } = answerTokens(body, chat ? ['max_completion_tokens', 'max_tokens'] : ['max_tokens']);
  const text = tokens.join('');
  const prompt = promptTokens(body);
  const usage = { prompt_tokens: prompt, completion_tokens: tokens.length, total_tokens: prompt + tokens.length };
  const finish = cut ? 'length' : 'stop';
  const now = Date.now();
  const base = { id: `${chat ? 'chatcmpl' : 'cmpl'}-mock-${now}`, created: Math.floor(now / 1000), model: String(body.model) };
  const object = chat ? 'chat.completion' : 'text_completion';
  if (body.stream !== true) {
    const choice = chat
      ? { index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: finish }
      : { index: 0, text, logprobs: null, finish_reason: finish };
    send(res, 200, { ...base, object, choices: [choice], usage });
    return;
  }
  const includeUsage = (body.stream_options as { include_usage?: unknown } | undefined)?.include_usage === true;
  const chunkObject = chat ? 'chat.completion.chunk' : 'text_completion';
  startStream(res);
  const chunk = (piece: Record<string, unknown> | string, finishReason: string | null) => {
    const choice = chat
      ? { index: 0, delta: piece, logprobs: null, finish_reason: finishReason }
      : { index: 0, text: piece, logprobs: null, finish_reason: finishReason };
    const event = { ...base, object: chunkObject, choices: [choice], ...(includeUsage ? { usage: null } : {}) };
    res.write(`data: ${JSON.stringify(event)}\n\n`);
  };
  if (chat) chunk({ role: 'assistant', content: '', refusal: null }, null);
  for (const token of tokens) chunk(chat ? { content: token } : token, null);
  chunk(chat ? {} : '', finish);
  if (includeUsage) res.write(`data: ${JSON.stringify({ ...base, object: chunkObject, choices: [], usage })}\n\n`);
  res.end('data: [DONE]\n\n');
}

/** `/v1/responses`: the Responses API, JSON or its typed SSE events. */
function responsesAnswer(res: ServerResponse, body: Body): void {
  const { tokens, cut } = answerTokens(body, ['max_output_tokens']);
  const text = tokens.join('');
  const prompt = promptTokens(body);
  const now = Date.now();
  const itemId = `msg_mock_${now}`;
  const part = { type: 'output_text', text, annotations: [], logprobs: [] };
  const item = { id: itemId, type: 'message', status: cut ? 'incomplete' : 'completed', role: 'assistant', content: [part] };
  const response = {
    id: `resp_mock_${now}`,
    object: 'response',
    created_at: Math.floor(now / 1000),
    status: 'in_progress',
    error: null,
    incomplete_details: null,
    instructions: body.instructions ?? null,
    max_output_tokens: body.max_output_tokens ?? null,
    model: String(body.model),
    output: [] as unknown[],
    parallel_tool_calls: true,
    previous_response_id: null,
    temperature: 1,
    text: { format: { type: 'text' } },
    tool_choice: 'auto',
    tools: [],
    top_p: 1,
    truncation: 'disabled',
    usage: null as unknown,
    metadata: {},
  };
  const finished = {
    ...response,
    status: cut ? 'incomplete' : 'completed',
    incomplete_details: cut ? { reason: 'max_output_tokens' } : null,
    output: [item],
    usage: {
      input_tokens: prompt,
      input_tokens_details: { cached_tokens: 0 },
      output_tokens: tokens.length,
      output_tokens_details: { reasoning_tokens: 0 },
      total_tokens: prompt + tokens.length,
    },
  };
  if (body.stream !== true) {
    send(res, 200, finished);
    return;
  }
  startStream(res);
  let sequence = 0;
  const event = (type: string, fields: Record<string, unknown>) => {
    res.write(`event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: sequence++, ...fields })}\n\n`);
  };
  const at = { output_index: 0, item_id: itemId, content_index: 0 };
  event('response.created', { response });
  event('response.in_progress', { response });
  event('response.output_item.added', { output_index: 0, item: { ...item, status: 'in_progress', content: [] } });
  event('response.content_part.added', { ...at, part: { ...part, text: '' } });
  for (const token of tokens) event('response.output_text.delta', { ...at, delta: token, logprobs: [] });
  event('response.output_text.done', { ...at, text, logprobs: [] });
  event('response.content_part.done', { ...at, part });
  event('response.output_item.done', { output_index: 0, item });
  event(cut ? 'response.incomplete' : 'response.completed', { response: finished });
  res.end();
}

/** The inputs of an embeddings request, each as the text it stands for (token arrays as their JSON). */
function embeddingInputs(input: unknown): { texts: string[]; tokens: number } {
  const isTokens = (value: unknown): value is number[] =>
    Array.isArray(value) && value.length > 0 && value.every((t) => Number.isInteger(t) && (t as number) >= 0);
  let items: unknown[];
  if (typeof input === 'string' || isTokens(input)) items = [input];
  else if (Array.isArray(input) && input.length > 0) items = input;
  else throw new BadRequest('input must be a non-empty string, array of strings, or array of token arrays', 'input');
  let tokens = 0;
  const texts = items.map((item) => {
    if (typeof item === 'string' && item !== '') {
      tokens += Math.max(1, Math.ceil(item.length / 4));
      return item;
    }
    if (isTokens(item)) {
      tokens += item.length;
      return JSON.stringify(item);
    }
    throw new BadRequest('each input must be a non-empty string or a non-empty array of token ids', 'input');
  });
  return { texts, tokens };
}

/** A unit-length vector that depends only on the model and the text: same input, same vector. */
function embedding(model: string, text: string, dimensions: number): number[] {
  const full = EMBEDDING_DIMENSIONS[model] ?? DEFAULT_EMBEDDING_DIMENSIONS;
  // A SHA-256 counter stream gives 8 pseudo-random 32-bit words per block.
  const vector: number[] = [];
  for (let block = 0; vector.length < full; block++) {
    const digest = createHash('sha256').update(`${model}\n${block}\n${text}`).digest();
    for (let i = 0; i < digest.length && vector.length < full; i += 4) vector.push(digest.readUInt32LE(i) / 0x7fffffff - 1);
  }
  // Like OpenAI's shortened embeddings: the first `dimensions` values, normalized again.
  const kept = vector.slice(0, dimensions);
  const length = Math.hypot(...kept);
  return kept.map((value) => Math.fround(value / length));
}

function embeddingsAnswer(res: ServerResponse, body: Body): void {
  const model = String(body.model);
  const full = EMBEDDING_DIMENSIONS[model] ?? DEFAULT_EMBEDDING_DIMENSIONS;
  const dimensions = body.dimensions ?? full;
  if (typeof dimensions !== 'number' || !Number.isInteger(dimensions) || dimensions < 1 || dimensions > full) {
    throw new BadRequest(`dimensions must be an integer from 1 to ${full} for ${model}`, 'dimensions');
  }
  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64') throw new BadRequest("encoding_format must be 'float' or 'base64'", 'encoding_format');
  const { texts, tokens } = embeddingInputs(body.input);
  send(res, 200, {
    object: 'list',
    data: texts.map((text, index) => {
      const vector = embedding(model, text, dimensions);
      const encoded = format === 'float' ? vector : Buffer.from(new Float32Array(vector).buffer).toString('base64');
      return { object: 'embedding', index, embedding: encoded };
    }),
    model,
    usage: { prompt_tokens: tokens, total_tokens: tokens },
  });
}

const ROUTES: Readonly<Record<string, (res: ServerResponse, body: Body) => void>> = {
  '/v1/chat/completions': (res, body) => completionsAnswer(res, body, true),
  '/v1/completions': (res, body) => completionsAnswer(res, body, false),
  '/v1/responses': responsesAnswer,
  '/v1/embeddings': embeddingsAnswer,
};

function invalid(res: ServerResponse, status: number, message: string, param: string | null = null): void {
  send(res, status, { error: { message: `${message} (mock upstream)`, type: 'invalid_request_error', param, code: null } });
}

function route(req: IncomingMessage, res: ServerResponse, raw: string): void {
  const path = (req.url ?? '/').split('?', 1)[0] ?? '/';
  if (req.method === 'GET' && path === '/v1/models') {
    send(res, 200, { object: 'list', data: MOCK_MODELS.map((id) => ({ id, object: 'model', created: 0, owned_by: 'modelswitch-mock' })) });
    return;
  }
  const handler = req.method === 'POST' && Object.hasOwn(ROUTES, path) ? ROUTES[path] : undefined;
  if (handler === undefined) {
    invalid(res, 404, `Unknown route ${req.method} ${path}`);
    return;
  }
  let body: unknown;
  try {
    body = JSON.parse(raw);
  } catch {
    invalid(res, 400, 'Invalid JSON');
    return;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    invalid(res, 400, 'The body must be a JSON object');
    return;
  }
  try {
    handler(res, body as Body);
  } catch (error) {
    if (error instanceof BadRequest) invalid(res, 400, error.message, error.param);
    else
      send(res, 500, { error: { message: `The mock upstream failed: ${String(error)}`, type: 'server_error', param: null, code: null } });
  }
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
