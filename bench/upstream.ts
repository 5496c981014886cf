/**
 * Child process of the benchmark: a fake OpenAI-compatible upstream on 127.0.0.1. Answers
 * `POST /v1/chat/completions` with a fixed chat completion of about 400 bytes (JSON), or, when the
 * body asks for `stream: true`, with SSE: 10 content chunks, a usage event and `[DONE]`, each
 * written on its own turn of the event loop so that the proxy sees them arrive one by one.
 */
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serveCommands } from './child.js';

const USAGE = { prompt_tokens: 12, completion_tokens: 10, total_tokens: 22 };
const COMPLETION = JSON.stringify({
  id: 'chatcmpl-bench',
  object: 'chat.completion',
  created: 1_700_000_000,
  model: 'bench-model',
  system_fingerprint: 'fp_bench',
  choices: [
    {
      index: 0,
      message: { role: 'assistant', content: 'Hello there! How can I help you with your benchmark today?', refusal: null },
      logprobs: null,
      finish_reason: 'stop',
    },
  ],
  usage: USAGE,
});

function event(body: Record<string, unknown>): string {
  return `data: ${JSON.stringify({ id: 'chatcmpl-bench', object: 'chat.completion.chunk', created: 1_700_000_000, model: 'bench-model', ...body })}\n\n`;
}

const WORDS = ['Hello', ' there', '!', ' How', ' can', ' I', ' help', ' you', ' today', '?'];
/** The SSE answer, event by event: 10 content chunks (the last with its finish reason), the usage event, `[DONE]`. */
const EVENTS = [
  ...WORDS.map((word, i) =>
    event({
      choices: [
        {
          index: 0,
          delta: i === 0 ? { role: 'assistant', content: word } : { content: word },
          finish_reason: i === WORDS.length - 1 ? 'stop' : null,
        },
      ],
    }),
  ),
  event({ choices: [], usage: USAGE }),
  'data: [DONE]\n\n',
];

function stream(res: ServerResponse, index: number): void {
  if (res.destroyed) return;
  if (index === EVENTS.length - 1) {
    res.end(EVENTS[index]);
    return;
  }
  res.write(EVENTS[index]);
  setImmediate(stream, res, index + 1);
}

function answer(req: IncomingMessage, res: ServerResponse): void {
  const parts: Buffer[] = [];
  req.on('data', (part: Buffer) => parts.push(part));
  req.on('end', function respond() {
    let streaming = false;
    try {
      streaming = (JSON.parse(Buffer.concat(parts).toString('utf8')) as { stream?: boolean }).stream === true;
    } catch {
      // Not JSON: answer as if not streaming.
    }
    if (!streaming) {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(COMPLETION) });
      res.end(COMPLETION);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    stream(res, 0);
  });
}

const server = createServer({ keepAliveTimeout: 60_000 }, answer);

serveCommands(
  {
    start: () => new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port))),
  },
  async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  },
);
