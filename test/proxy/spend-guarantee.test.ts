import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import o200k from 'gpt-tokenizer/encoding/o200k_base';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { modelSwitchAuth } from '../../src/auth/model-switch-auth.js';
import { createAccount, issueKey } from '../../src/keys/accounts.js';
import { proxyRouter } from '../../src/proxy/proxy-router.js';
import { KeyvKeyStore } from '../../src/store/keyv/keyv-store.js';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import type { KeyStore } from '../../src/store/types.js';
import { fastHasher } from '../helpers.js';
import { REDIS_URL, redisKeyv, redisSkipReason, removeKeys, runPrefix } from '../stores/redis-env.js';
import { type Gateway, MOCK_PRICE, chat, deferred, post, startGateway } from './harness.js';

/** What the upstream would write if nothing capped it: far more than any reservation below. */
const NATURAL_COMPLETION_TOKENS = 500;
const PLAIN = { disallowedSpecial: new Set<string>() };

/**
 * An upstream that obeys the output cap it is sent (`max_completion_tokens`, else `max_tokens`,
 * per choice) and reports the prompt as OpenAI's tokenizer counts the chat: the truth the gateway
 * must stay within.
 */
async function obedientUpstream(): Promise<{ url: string; requests: Array<Record<string, unknown>>; close(): Promise<void> }> {
  const requests: Array<Record<string, unknown>> = [];
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      requests.push(body);
      const messages = body.messages as Array<{ role: 'user'; content: string }>;
      const cap = (body.max_completion_tokens ?? body.max_tokens ?? Number.POSITIVE_INFINITY) as number;
      const choices = (body.n ?? 1) as number;
      const usage = {
        prompt_tokens: o200k.encodeChat(messages, 'gpt-4o', PLAIN).length,
        completion_tokens: Math.min(cap, NATURAL_COMPLETION_TOKENS) * choices,
      };
      const text = JSON.stringify({ id: 'chatcmpl-obedient', object: 'chat.completion', choices: [], usage });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** USD per million tokens: a request costs a few hundredths of a cent, so $0.01 admits some and refuses the rest. */
const PRICE = { inputPerMillion: 5, outputPerMillion: 10, maxOutputTokens: 16_384 };
/** Scripts whose UTF-8 bytes make fewer than one token per 4 bytes: the byte rule reserves less than they cost. */
const PROMPT = 'Translate 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝔱𝔢𝔵𝔱 ✨🙂🚀 and 𝟙𝟚𝟛 into plain words: Ωμέγα ǅǈǋ ꙮ ꧁꧂ ᚠᚢᚦ ⵣ';
const LIMIT = 0.01;
const CONCURRENT = 200;
const hasher = fastHasher();

interface Setup {
  url: string;
  key: string;
  keyId: number;
  accountId: string;
  store: KeyStore;
  close(): Promise<void>;
}

/** A gateway on `store` whose one key has either a $0.01 limit (and a large balance) or a $0.01 balance (and no limit). */
async function setup(store: KeyStore, bound: 'key limit' | 'balance'): Promise<Setup> {
  const upstream = await obedientUpstream();
  const account = await createAccount(store, { balance: bound === 'balance' ? LIMIT : 100 });
  const issued = await issueKey(
    store,
    {
      accountId: account.id,
      type: 'proxy',
      name: 'spend guarantee',
      ...(bound === 'key limit' ? { limit: LIMIT } : {}),
      rateLimit: { requests: 100_000, interval: '1m' },
    },
    { hasher },
  );
  const app = express();
  app.use(
    '/v1',
    modelSwitchAuth(store, { hasher }),
    proxyRouter(store, {
      upstreams: [{ name: 'openai-like', target: upstream.url, models: ['gpt-4o-mini'] }],
      pricing: { 'gpt-4o-mini': PRICE },
      defaultMaxTokens: 50,
      hasher,
    }),
  );
  const server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    key: issued.key,
    keyId: issued.record.id,
    accountId: account.id,
    store,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await upstream.close();
    },
  };
}

async function chatRequest(setup: Setup, extra: Record<string, unknown>): Promise<number> {
  const res = await fetch(`${setup.url}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${setup.key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: PROMPT }], ...extra }),
  });
  await res.arrayBuffer();
  return res.status;
}

/** The most one request may cost: the tokenizer's count of its prompt and the cap it can be held to, at PRICE. */
function oneRequestCost(outputTokens: number): number {
  const prompt = o200k.encodeChat([{ role: 'user', content: PROMPT }], 'gpt-4o', PLAIN).length;
  return (prompt * PRICE.inputPerMillion + outputTokens * PRICE.outputPerMillion) / 1e6;
}

function guaranteeTests(storeName: string, createStore: () => KeyStore) {
  const cases = [
    ['max_tokens: 1', { max_tokens: 1 }, 1],
    ['no output cap', {}, 50],
  ] as const;
  for (const bound of ['key limit', 'balance'] as const) {
    for (const [label, extra, cap] of cases) {
      it(`${storeName}: ${CONCURRENT} concurrent requests (${label}) end within one request's cost of a $0.01 ${bound}, never below zero`, async () => {
        const world = await setup(createStore(), bound);
        try {
          const statuses = await Promise.all(Array.from({ length: CONCURRENT }, () => chatRequest(world, extra)));
          const refusal = bound === 'key limit' ? 403 : 402;
          expect(new Set(statuses)).toEqual(new Set([200, refusal]));
          // Whatever the burst left, requests one after another use it up until one is refused.
          let more = 0;
          while ((await chatRequest(world, extra)) === 200) more++;
          expect(more).toBeLessThan(CONCURRENT);
          const key = await world.store.getKey(world.keyId);
          const account = await world.store.getAccount(world.accountId);
          const spent = bound === 'key limit' ? (key?.usage ?? 0) : LIMIT - (account?.balance ?? 0);
          expect({ keyReserved: key?.reserved, accountReserved: account?.reserved }).toEqual({ keyReserved: 0, accountReserved: 0 });
          expect(spent).toBeLessThanOrEqual(LIMIT + 1e-9);
          expect(spent).toBeGreaterThan(LIMIT - oneRequestCost(cap) - 1e-9);
          expect(account?.balance).toBeGreaterThanOrEqual(0);
        } finally {
          await world.close();
        }
      }, 60_000);
    }
  }
}

describe('the spend guarantee, with an upstream that obeys the cap it is sent', () => {
  guaranteeTests('memory', () => new MemoryKeyStore());
});

describe.skipIf(!REDIS_URL)(`the spend guarantee on Redis${redisSkipReason ? ` (${redisSkipReason})` : ''}`, () => {
  const prefix = runPrefix();
  const stores: KeyvKeyStore[] = [];
  afterAll(async () => {
    await Promise.all(stores.map((store) => store.close?.()));
    await removeKeys(REDIS_URL as string, prefix);
  });
  guaranteeTests('Redis', () => {
    const store = new KeyvKeyStore(redisKeyv(REDIS_URL as string), { prefix });
    stores.push(store);
    return store;
  });
});

describe('the output cap a request is reserved and sent', () => {
  let gateway: Gateway;
  afterEach(async () => {
    await gateway?.close();
  });

  /** Opens a stream the mock holds before its first chunk, and reads the key's reservation meanwhile. */
  async function reservedWhileHeld(body: Record<string, unknown>, path = '/chat/completions'): Promise<number | undefined> {
    const hold = deferred();
    gateway.upstream.behaviour = { holdBeforeFirstChunk: hold.promise };
    const seen = gateway.upstream.requests.length;
    const answer = post(gateway, path, { ...body, stream: true });
    while (gateway.upstream.requests.length === seen) await new Promise((resolve) => setTimeout(resolve, 5));
    const reserved = (await gateway.store.getKey(gateway.proxyKeyId))?.reserved;
    hold.resolve();
    expect((await answer).status).toBe(200);
    return reserved;
  }

  it('reserves three output caps for n: 3, whether the client set the cap or the gateway did', async () => {
    gateway = await startGateway({ proxy: { estimatePromptTokens: () => 12 } });
    // 12 prompt tokens at $1000/M, 3 × 10 output tokens at $2000/M.
    expect(await reservedWhileHeld(chat({ max_tokens: 10, n: 3 }))).toBe(
      (12 * MOCK_PRICE.inputPerMillion + 30 * MOCK_PRICE.outputPerMillion) / 1e6,
    );
    // No cap: 3 × defaultMaxTokens (100), and each choice is sent the cap of 100.
    expect(await reservedWhileHeld(chat({ n: 3 }))).toBe((12 * MOCK_PRICE.inputPerMillion + 300 * MOCK_PRICE.outputPerMillion) / 1e6);
    expect(JSON.parse(gateway.upstream.requests[1]?.body ?? '')).toMatchObject({ n: 3, max_tokens: 100 });
  });

  it('reserves best_of completions on /completions, which the upstream generates and bills', async () => {
    gateway = await startGateway({ proxy: { estimatePromptTokens: () => 12 } });
    const body = { model: 'mock-model', prompt: 'Hi', max_tokens: 10, n: 2, best_of: 5 };
    expect(await reservedWhileHeld(body, '/completions')).toBe((12 * 1000 + 50 * 2000) / 1e6);
  });

  it("sends OpenAI chat models the cap as max_completion_tokens, capped by the model's maxOutputTokens", async () => {
    const upstream = await obedientUpstream();
    const store = new MemoryKeyStore();
    const account = await createAccount(store, { balance: 10 });
    const issued = await issueKey(store, { accountId: account.id, type: 'proxy', name: 'caps' }, { hasher });
    const app = express();
    app.use(
      '/v1',
      proxyRouter(store, {
        upstreams: [{ name: 'openai-like', target: upstream.url, models: ['gpt-4o-mini', 'gpt-4o'] }],
        pricing: { 'gpt-4o-mini': { ...PRICE, maxOutputTokens: 30 }, 'gpt-4o': { inputPerMillion: 5, outputPerMillion: 10 } },
        defaultMaxTokens: 50,
        hasher,
      }),
    );
    const server = createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
      for (const model of ['gpt-4o-mini', 'gpt-4o']) {
        const res = await post({ url, proxyKey: issued.key }, '/chat/completions', { model, messages: [{ role: 'user', content: 'Hi' }] });
        expect(res.status).toBe(200);
      }
      expect(upstream.requests.map((body) => [body.model, body.max_completion_tokens, body.max_tokens])).toEqual([
        ['gpt-4o-mini', 30, undefined],
        ['gpt-4o', 50, undefined],
      ]);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await upstream.close();
    }
  });

  it("with enforceMaxTokens: false, forwards the request uncapped and reserves the model's maxOutputTokens", async () => {
    gateway = await startGateway({
      proxy: {
        estimatePromptTokens: () => 12,
        enforceMaxTokens: false,
        pricing: { 'mock-model': { ...MOCK_PRICE, maxOutputTokens: 200 } },
      },
    });
    expect(await reservedWhileHeld(chat())).toBe((12 * 1000 + 200 * 2000) / 1e6);
    expect(JSON.parse(gateway.upstream.requests[0]?.body ?? '')).not.toHaveProperty('max_tokens');
  });
});
