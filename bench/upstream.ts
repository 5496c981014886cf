/**
 * Child process of the benchmark: a fake OpenAI-compatible upstream on 127.0.0.1. Answers
 * `POST /v1/chat/completions` with a fixed completion (JSON, or SSE when `stream: true`: the first
 * chunk at once, the rest 5 ms later, so "first byte" and "whole answer" differ).
 */
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serveCommands } from './child.js';

const USAGE = { prompt_tokens: 12, completion_tokens: 3, total_tokens: 15 };
const COMPLETION = JSON.stringify({
  id: 'chatcmpl-bench',
  object: 'chat.completion',
  created: 1_700_000_000,
  model: 'bench-model',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello there!' }, finish_reason: 'stop' }],
  usage: USAGE,
});

function chunk(delta: Record<string, unknown>, extra: Record<string, unknown> = {}): string {
  const body = {
    id: 'chatcmpl-bench',
    object: 'chat.completion.chunk',
    created: 1_700_000_000,
    model: 'bench-model',
    choices: [{ index: 0, delta }],
    ...extra,
  };
  return `data: ${JSON.stringify(body)}\n\n`;
}

function answer(req: IncomingMessage, res: ServerResponse): void {
  const parts: Buffer[] = [];
  req.on('data', (part: Buffer) => parts.push(part));
  req.on('end', function respond() {
    let stream = false;
    try {
      stream = (JSON.parse(Buffer.concat(parts).toString('utf8')) as { stream?: boolean }).stream === true;
    } catch {
      // Not JSON: answer as if not streaming.
    }
    if (!stream) {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(COMPLETION) });
      res.end(COMPLETION);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    res.write(chunk({ role: 'assistant', content: 'Hello' }));
    setTimeout(() => {
      res.write(chunk({ content: ' there!' }));
      res.write(
        `data: ${JSON.stringify({ id: 'chatcmpl-bench', object: 'chat.completion.chunk', created: 1_700_000_000, model: 'bench-model', choices: [], usage: USAGE })}\n\n`,
      );
      res.end('data: [DONE]\n\n');
    }, 5);
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
