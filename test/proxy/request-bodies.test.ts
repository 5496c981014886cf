import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import express from 'express';
import { afterEach, describe, expect, it } from 'vitest';
import { BufferBudget } from '../../src/http/body.js';
import { invalid } from '../helpers.js';
import { type Gateway, chat, deferred, post, startGateway } from './harness.js';

let gateway: Gateway;
afterEach(async () => {
  await gateway?.close();
});

/** POSTs raw bytes with the key and the given headers; answers status, headers and the parsed body. */
async function postBytes(body: Buffer, headers: Record<string, string>): Promise<{ status: number; headers: Headers; body: unknown }> {
  const res = await fetch(`${gateway.url}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json', ...headers },
    body,
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

describe('proxyRouter compressed request bodies', () => {
  const json = Buffer.from(JSON.stringify(chat({ max_tokens: 8 })));

  it.each([
    ['gzip', gzipSync],
    ['deflate', deflateSync],
    ['br', brotliCompressSync],
  ] as const)('decodes a %s body and sends the upstream plain JSON without the client’s Content-Encoding', async (coding, compress) => {
    gateway = await startGateway();
    const res = await postBytes(compress(json), { 'content-encoding': coding });
    expect(res.status).toBe(200);
    expect(gateway.upstream.requests).toHaveLength(1);
    const sent = gateway.upstream.requests[0];
    expect(JSON.parse(sent?.body ?? '')).toEqual(chat({ max_tokens: 8 }));
    expect(sent?.headers['content-encoding']).toBeUndefined();
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.028, reserved: 0 });
  });

  it('refuses a coding it cannot decode with 415, without calling the upstream', async () => {
    gateway = await startGateway();
    for (const coding of ['compress', 'zstd', 'gzip, br']) {
      const res = await postBytes(json, { 'content-encoding': coding });
      expect({ status: res.status, body: res.body }).toEqual({
        status: 415,
        body: {
          error: {
            message: 'Content-Encoding must be gzip, deflate, br or identity (one coding) for a JSON request body',
            type: 'invalid_request_error',
            code: 'unsupported_content_encoding',
          },
        },
      });
    }
    expect(gateway.upstream.requests).toEqual([]);
  });

  it('answers a zip bomb 413 once its decoded bytes pass maxBodyBytes, without inflating the rest', async () => {
    gateway = await startGateway({ proxy: { maxBodyBytes: 64 * 1024 } });
    // 64 MiB of spaces inside a JSON string: about 64 KiB compressed, 1000 times the limit decoded.
    const bomb = gzipSync(
      Buffer.concat([Buffer.from('{"model":"mock-model","x":"'), Buffer.alloc(64 * 1024 * 1024, 0x20), Buffer.from('"}')]),
    );
    expect(bomb.length).toBeLessThan(128 * 1024);
    const res = await postBytes(bomb, { 'content-encoding': 'gzip' });
    expect({ status: res.status, body: res.body }).toEqual({
      status: 413,
      body: {
        error: {
          message: 'Request body is larger than the limit of 65536 bytes',
          type: 'invalid_request_error',
          code: 'request_too_large',
        },
      },
    });
    expect(gateway.upstream.requests).toEqual([]);
  });

  it('answers a body that is not valid gzip 400', async () => {
    gateway = await startGateway();
    const res = await postBytes(json, { 'content-encoding': 'gzip' });
    expect({ status: res.status, body: res.body }).toEqual({
      status: 400,
      body: invalid('The request body could not be decoded (Content-Encoding)'),
    });
  });
});

describe('proxyRouter deeply nested bodies', () => {
  const deep = (levels: number) => `{"model":"mock-model","messages":[],"x":${'['.repeat(levels)}${']'.repeat(levels)}}`;
  const tooDeep = invalid('Request body nests arrays and objects deeper than 64 levels', 'body');

  it('answers 400 for a body nested deeper than maxJsonDepth (64), even 100,000 deep, and nothing goes upstream', async () => {
    gateway = await startGateway();
    for (const levels of [64, 100_000]) {
      const res = await post(gateway, '/chat/completions', deep(levels));
      expect({ status: res.status, body: JSON.parse(res.text) }).toEqual({ status: 400, body: tooDeep });
    }
    const res = await post(gateway, '/chat/completions', deep(62));
    expect(res.status).toBe(200);
    expect(gateway.upstream.requests).toHaveLength(1);
  });

  it('ignores brackets inside strings, escaped quotes included', async () => {
    gateway = await startGateway();
    const text = `"\\"${'['.repeat(200)}"`;
    const res = await post(gateway, '/chat/completions', `{"model":"mock-model","messages":[{"role":"user","content":${text}}]}`);
    expect(res.status).toBe(200);
  });

  it('checks the depth of a body a host parser read (express.json) before serializing it', async () => {
    gateway = await startGateway({ proxy: { maxJsonDepth: 8 } });
    const app = express();
    app.use(express.json({ limit: '10mb' }));
    // The gateway's own app (which has no body parser) behind a host's parser.
    app.use((req, res, next) => gateway.app(req, res, next));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const port = (server.address() as { port: number }).port;
      const res = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json' },
        body: deep(9),
      });
      expect({ status: res.status, body: await res.json() }).toEqual({
        status: 400,
        body: invalid('Request body nests arrays and objects deeper than 8 levels', 'body'),
      });
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('proxyRouter maxBufferedBytes', () => {
  it('answers 503 server_busy with Retry-After while the bodies held pass it, and takes requests again once they end', async () => {
    gateway = await startGateway({ proxy: { maxBodyBytes: 4096, maxBufferedBytes: 4096 } });
    const hold = deferred();
    gateway.upstream.behaviour = { holdBeforeFirstChunk: hold.promise };
    const big = chat({ max_tokens: 8, stream: true, user: 'x'.repeat(3000) });
    const first = post(gateway, '/chat/completions', big);
    while (gateway.upstream.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    const refused = await post(gateway, '/chat/completions', big);
    expect({ status: refused.status, retryAfter: refused.headers.get('retry-after'), body: JSON.parse(refused.text) }).toEqual({
      status: 503,
      retryAfter: '1',
      body: {
        error: {
          message: 'The gateway is holding too many request bodies right now. Please retry shortly.',
          type: 'api_error',
          code: 'server_busy',
        },
      },
    });
    // A small body still fits beside the held one.
    gateway.upstream.behaviour = {};
    expect((await post(gateway, '/chat/completions', chat({ max_tokens: 8 }))).status).toBe(200);
    hold.resolve();
    expect((await first).status).toBe(200);
    expect((await post(gateway, '/chat/completions', big)).status).toBe(200);
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ reserved: 0 });
  });

  it('gives back what a body took when its response closes, and never more than it took', () => {
    const budget = new BufferBudget(10);
    expect([budget.take(6), budget.take(5), budget.bytesHeld]).toEqual([true, false, 6]);
    budget.give(6);
    budget.give(6);
    expect([budget.bytesHeld, budget.take(10)]).toEqual([0, true]);
  });
});
