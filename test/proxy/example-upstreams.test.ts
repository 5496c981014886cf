import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import OpenAI from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { upstreamsFromEnv } from '../../examples/upstreams-from-env.js';
import { modelSwitchAuth } from '../../src/auth/model-switch-auth.js';
import { proxyRouter } from '../../src/proxy/proxy-router.js';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import { fastHasher, recordingLogger, seedAccount } from '../helpers.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

describe('the example upstreams', () => {
  it('use OpenAI with OPENAI_API_KEY and OPENAI_BASE_URL, never printing the key', async () => {
    const chosen = await upstreamsFromEnv({ OPENAI_API_KEY: 'sk-test-123', OPENAI_BASE_URL: 'https://llm.example/v1' });
    expect(chosen.options.upstreams).toEqual([
      {
        name: 'openai',
        target: 'https://llm.example/v1',
        apiKey: 'sk-test-123',
        models: ['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small'],
      },
    ]);
    expect(chosen.description).not.toContain('sk-test-123');
  });

  it('fall back to the offline mock, which the gateway proxies and meters like a real provider', async () => {
    const chosen = await upstreamsFromEnv({});
    cleanups.push(chosen.close);
    expect(chosen.description).toMatch(/^Upstream: OFFLINE MOCK at http:\/\/127\.0\.0\.1:\d+\/v1/);
    const store = new MemoryKeyStore();
    const hasher = fastHasher();
    const logger = recordingLogger();
    const seeded = await seedAccount(store, { hasher, balance: 1 });
    const app = express();
    app.use('/v1', modelSwitchAuth(store, { hasher, logger }), proxyRouter(store, { ...chosen.options, hasher, logger }));
    const server: Server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const client = new OpenAI({
      apiKey: seeded.proxyKey,
      baseURL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
      maxRetries: 0,
    });

    const completion = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Hi' }] });
    expect(completion.choices[0]?.message.content).toContain('OFFLINE MOCK');
    let streamed = '';
    for await (const chunk of await client.chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'Hi' }],
      stream: true,
    })) {
      streamed += chunk.choices[0]?.delta.content ?? '';
    }
    expect(streamed).toBe(completion.choices[0]?.message.content);
    const key = await store.getKey(seeded.proxyKeyId);
    expect(key?.usage).toBeGreaterThan(0);
    expect(key?.reserved).toBe(0);
    expect((await store.getAccount(seeded.account.id))?.balance).toBeCloseTo(1 - (key?.usage ?? 0), 10);
    const models = [];
    for await (const model of client.models.list()) models.push(model.id);
    expect(models).toEqual(['gpt-4o-mini', 'gpt-4o', 'text-embedding-3-small']);
  });
});
