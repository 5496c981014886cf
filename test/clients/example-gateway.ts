/**
 * The example gateway (`npm run example`, in-memory store, offline mock upstream) as the client
 * tests meet it: a base URL ending in `/v1`, an `ms-` key for the happy paths, and one key (or
 * model) for each refusal a client must understand.
 */
import { expect } from 'vitest';
import { EXAMPLE_PRICING } from '../../examples/upstreams-from-env.js';
import { type RunningGateway, startGateway } from '../../examples/gateway.js';
import { MemoryKeyStore, createAccount, issueKey } from '../../src/index.js';

/** What a client is pointed at, and the keys that make the gateway refuse with each status. */
export interface ClientGateway {
  gateway: RunningGateway;
  /** The gateway's `/v1`: what a client takes as `baseURL`. */
  baseURL: string;
  /** A working `ms-` key with money on its account. */
  apiKey: string;
  /** The keys or model that get each refusal: 401, 402, 403, 404 (a model nobody serves), 429. */
  refusals: { unknownKey: string; noBalanceKey: string; spendLimitKey: string; unknownModel: string; rateLimitedKey: string };
  /** How many HTTP requests the gateway has received so far (to see whether a client retried). */
  requests(): number;
  /** Runs `call` and returns what it cost the key: its `/v1/auth/key` `usage` after, minus before. */
  charged<T>(call: () => Promise<T>): Promise<{ result: T; cost: number }>;
  close(): Promise<void>;
}

/** The price of `promptTokens` in and `completionTokens` out of `model`, from the example's pricing table. */
export function priceOf(model: keyof typeof EXAMPLE_PRICING, promptTokens: number, completionTokens: number): number {
  const price = EXAMPLE_PRICING[model];
  return (promptTokens * price.inputPerMillion + completionTokens * price.outputPerMillion) / 1_000_000;
}

async function api(gateway: RunningGateway, key: string, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const headers = { authorization: `Bearer ${key}` };
  const response = await fetch(
    `${gateway.url}${path}`,
    body === undefined
      ? { method, headers }
      : { method, headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify(body) },
  );
  const json = (await response.json()) as Record<string, unknown>;
  expect(response.ok, `${method} ${path}: ${JSON.stringify(json)}`).toBe(true);
  return json;
}

/** Starts the example gateway on a free port with a fresh in-memory store, and makes the keys. */
export async function startClientGateway(): Promise<ClientGateway> {
  // The in-memory store even when REDIS_URL is set: these tests are about the clients, not the store.
  const gateway = await startGateway({ port: 0, store: new MemoryKeyStore(), log: () => {} });
  let requests = 0;
  gateway.server.on('request', () => {
    requests++;
  });
  const billing = gateway.billingKey;
  const create = async (body: Record<string, unknown>) => String((await api(gateway, billing, 'POST', '/api/keys', body)).key);
  const broke = await createAccount(gateway.store, { balance: 0 });
  // Made (and then verified, below) side by side: each is a scrypt run, the slow part of the set-up.
  const [apiKey, spendLimitKey, rateLimitedKey, noBalanceKey] = await Promise.all([
    create({ name: 'clients' }),
    create({ name: 'spent', limit: 0 }),
    create({ name: 'one a minute', rate_limit: { requests: 1, interval: '1m' } }),
    issueKey(gateway.store, { accountId: broke.id, type: 'proxy', name: 'no balance' }).then((issued) => issued.key),
  ]);
  // One request each, which never spends: the rate-limited key's one of the minute (every later one answers 429).
  await Promise.all([apiKey, spendLimitKey, rateLimitedKey, noBalanceKey].map((key) => api(gateway, key, 'GET', '/v1/auth/key')));

  const usage = async () => ((await api(gateway, apiKey, 'GET', '/v1/auth/key')).data as { usage: number }).usage;
  return {
    gateway,
    baseURL: `${gateway.url}/v1`,
    apiKey,
    refusals: {
      unknownKey: `ms-${'A'.repeat(38)}`,
      noBalanceKey,
      spendLimitKey,
      unknownModel: 'gpt-nonexistent',
      rateLimitedKey,
    },
    requests: () => requests,
    async charged(call) {
      const before = await usage();
      const result = await call();
      return { result, cost: (await usage()) - before };
    },
    close: () => gateway.close(),
  };
}
