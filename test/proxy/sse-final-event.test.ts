import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { describe, expect, it } from 'vitest';
import { createAccount, issueKey } from '../../src/keys/accounts.js';
import { proxyRouter } from '../../src/proxy/proxy-router.js';
import { SseUsageScanner } from '../../src/proxy/sse-usage.js';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import { fastHasher, recordingLogger } from '../helpers.js';
import { MOCK_PRICE } from './harness.js';

const content = 'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}\n\n';
/** The usage-only chunk, closed by the end of the stream instead of a blank line. */
const unterminatedUsage = 'data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":8}}';

describe('a final usage event the upstream closed without a blank line', () => {
  it('is read by the scanner at the end of the stream, and passed on as it came when the client asked for usage', () => {
    for (const ending of ['', '\n', '\r\n']) {
      const scanner = new SseUsageScanner(false);
      const out = Buffer.concat([scanner.push(Buffer.from(content)), scanner.push(Buffer.from(unterminatedUsage + ending)), scanner.end()]);
      expect(out.toString('utf8')).toBe(content + unterminatedUsage + ending);
      expect(scanner.usage).toEqual({ promptTokens: 12, completionTokens: 8, cachedPromptTokens: 0 });
    }
  });

  it("is read and dropped when the proxy asked for it on the client's behalf, as a terminated one is", () => {
    for (const ending of ['', '\n', '\r\n']) {
      const scanner = new SseUsageScanner(true);
      const out = Buffer.concat([scanner.push(Buffer.from(content)), scanner.push(Buffer.from(unterminatedUsage + ending)), scanner.end()]);
      expect(out.toString('utf8')).toBe('data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n');
      expect(scanner.usage).toEqual({ promptTokens: 12, completionTokens: 8, cachedPromptTokens: 0 });
    }
  });

  it('loses the "usage":null the proxy added when it is a content chunk left without its blank line', () => {
    const scanner = new SseUsageScanner(true);
    const out = Buffer.concat([scanner.push(Buffer.from(content)), scanner.push(Buffer.from(content.trimEnd())), scanner.end()]);
    const stripped = 'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}';
    expect(out.toString('utf8')).toBe(`${stripped}\n\n${stripped}`);
    expect(scanner.usage).toBeUndefined();
  });

  it('is charged at its cost through the proxy, not at the reservation', async () => {
    const upstream: Server = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(content);
        res.end(unterminatedUsage);
      });
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const store = new MemoryKeyStore();
    const hasher = fastHasher();
    const logger = recordingLogger();
    const account = await createAccount(store, { balance: 10 });
    const issued = await issueKey(store, { accountId: account.id, type: 'proxy', name: 'sse' }, { hasher });
    const app = express();
    app.use(
      '/v1',
      proxyRouter(store, {
        upstreams: [{ name: 'mock', target: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/v1`, models: ['mock-model'] }],
        pricing: { 'mock-model': MOCK_PRICE },
        defaultMaxTokens: 100,
        estimatePromptTokens: () => 12,
        hasher,
        logger,
      }),
    );
    const server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const res = await fetch(`http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${issued.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          model: 'mock-model',
          messages: [{ role: 'user', content: 'Hi' }],
          stream: true,
          stream_options: { include_usage: true },
        }),
      });
      expect({ status: res.status, text: await res.text() }).toEqual({ status: 200, text: content + unterminatedUsage });
      // 12 prompt + 8 completion tokens at $1000/$2000 per million: $0.028, not the $0.212 reserved.
      expect(await store.getKey(issued.record.id)).toMatchObject({ usage: 0.028, reserved: 0 });
      expect(logger.lines).toEqual([]);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await new Promise<void>((resolve) => upstream.close(() => resolve()));
    }
  });
});
