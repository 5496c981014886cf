/**
 * The example gateway (`npm run example`, in-memory store, offline mock upstream) as the client
 * tests meet it: a base URL ending in `/v1`, an `ms-` key for the happy paths, and one key (or
 * model) for each refusal a client must understand.
 */
import { type RunningGateway, startGateway } from '../../examples/gateway.js';
import { EXAMPLE_PRICING } from '../../examples/upstreams-from-env.js';
import { MemoryKeyStore, createAccount, issueKey } from '../../src/index.js';
import { fastHasher } from '../helpers.js';

/** What a client is pointed at, and the keys that make the gateway refuse with each status. */
export interface ClientGateway {
  gateway: RunningGateway;
  /** The gateway's `/v1`: what a client takes as `baseURL`. */
  baseURL: string;
  /** A working `ms-` key with money on its account. */
  apiKey: string;
  /** The keys or model that get each refusal: 401, 402, 403, 404 (a model nobody serves). */
  refusals: { unknownKey: string; noBalanceKey: string; spendLimitKey: string; unknownModel: string };
  /**
   * Runs `call` with a key whose one request a minute was just used, so the gateway answers 429,
   * and rejects with `call`'s error. Should the minute turn between the two requests (the call
   * gets through), it is run once more.
   */
  rateLimited(call: (apiKey: string) => Promise<unknown>): Promise<never>;
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

/** Starts the example gateway on a free port with a fresh in-memory store, and makes the keys. */
export async function startClientGateway(): Promise<ClientGateway> {
  // The in-memory store even when REDIS_URL is set: these tests are about the clients, not the store.
  const gateway = await startGateway({ port: 0, store: new MemoryKeyStore(), log: () => {} });
  let requests = 0;
  gateway.server.on('request', () => {
    requests++;
  });
  const { store } = gateway;
  // Hashed at scrypt logN 10: the gateway verifies a key at the parameters of its stored hash, so
  // these take a millisecond where the example's own keys take 100 (nothing here is about scrypt).
  const issue = async (accountId: string, fields: Omit<Parameters<typeof issueKey>[1], 'accountId' | 'type'>) =>
    (await issueKey(store, { accountId, type: 'proxy', ...fields }, { hasher: fastHasher() })).key;
  const [funded, broke] = await Promise.all([createAccount(store, { balance: 10 }), createAccount(store, { balance: 0 })]);
  const apiKey = await issue(funded.id, { name: 'clients' });
  const spendLimitKey = await issue(funded.id, { name: 'spent', limit: 0 });
  const rateLimitedKey = await issue(funded.id, { name: 'one a minute', rateLimit: { requests: 1, interval: '1m' } });
  const noBalanceKey = await issue(broke.id, { name: 'no balance' });

  const keyInfo = (key: string) => fetch(`${gateway.url}/v1/auth/key`, { headers: { authorization: `Bearer ${key}` } });
  const usage = async () => {
    const response = await keyInfo(apiKey);
    if (!response.ok) throw new Error(`GET /v1/auth/key answered ${response.status}`);
    return ((await response.json()) as { data: { usage: number } }).data.usage;
  };
  return {
    gateway,
    baseURL: `${gateway.url}/v1`,
    apiKey,
    refusals: { unknownKey: `ms-${'A'.repeat(38)}`, noBalanceKey, spendLimitKey, unknownModel: 'gpt-nonexistent' },
    async rateLimited(call) {
      for (let attempt = 0; attempt < 2; attempt++) {
        // GET /v1/auth/key counts and never spends: at most two use up the current minute.
        if ((await keyInfo(rateLimitedKey)).status !== 429) await keyInfo(rateLimitedKey);
        const rejection = await call(rateLimitedKey).then(
          () => undefined,
          (error: unknown) => ({ error }),
        );
        if (rejection !== undefined) throw rejection.error;
      }
      throw new Error('the rate-limited key got through twice');
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
