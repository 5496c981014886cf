import { afterEach, describe, expect, it } from 'vitest';
import type { LimitReset } from '../../src/store/types.js';
import { type Gateway, chat, post, startGateway } from './harness.js';

let gateway: Gateway;
afterEach(async () => {
  await gateway?.close();
});

/** 12 prompt tokens estimated + max_tokens 8 reserves exactly what the mock then reports: $0.028. */
const EXACT = { estimatePromptTokens: () => 12 };
const small = () => chat({ max_tokens: 8 });

async function get(path: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(gateway.url + path, { headers: { authorization: `Bearer ${gateway.proxyKey}` } });
  return { status: res.status, body: await res.json() };
}

const LIMIT_REACHED = (resets: string) => ({
  error: {
    message: `This key has reached its spend limit of $0.028. It resets ${resets} (UTC).`,
    type: 'permission_error',
    code: 'spend_limit_reached',
  },
});

describe('proxyRouter metering', () => {
  it('charges the key and the account the cost of the usage in the JSON answer', async () => {
    gateway = await startGateway();
    expect((await post(gateway, '/chat/completions', chat())).status).toBe(200);
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.028, reserved: 0, lastUsedAt: gateway.clock.now() });
    expect(await gateway.store.getAccount(gateway.account.id)).toMatchObject({ balance: 9.972, reserved: 0 });
    expect(await get('/auth/key')).toMatchObject({ status: 200, body: { data: { usage: 0.028, limit: 9.972 } } });
  });

  it('meters embeddings from their prompt tokens', async () => {
    gateway = await startGateway();
    const res = await post(gateway, '/embeddings', { model: 'mock-model', input: 'hello' });
    expect(res.status).toBe(200);
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.012, reserved: 0 });
  });

  it('charges the reservation when a successful answer reports no usage, and logs it', async () => {
    gateway = await startGateway({ proxy: EXACT });
    gateway.upstream.behaviour = { omitUsage: true };
    expect((await post(gateway, '/chat/completions', small())).status).toBe(200);
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.028, reserved: 0 });
    expect(gateway.logger.lines).toEqual([
      'warn: modelswitch-keys: upstream mock reported no usage for model mock-model; charged the reserved maximum',
    ]);
  });
});

describe('proxyRouter spend limits', () => {
  const rollovers: [LimitReset, number, string][] = [
    ['daily', Date.parse('2026-11-23T00:00:00Z'), 'daily'],
    ['weekly', Date.parse('2026-11-23T00:00:00Z'), 'weekly'],
    ['monthly', Date.parse('2026-12-01T00:00:00Z'), 'monthly'],
  ];
  for (const [reset, nextPeriod, word] of rollovers) {
    it(`answers 403 spend_limit_reached with x-should-retry: false at a ${reset} limit, and admits again in the next period`, async () => {
      gateway = await startGateway({ proxy: EXACT });
      await gateway.store.updateKey(gateway.proxyKeyId, { limit: 0.028, limitReset: reset });
      expect((await post(gateway, '/chat/completions', small())).status).toBe(200);

      gateway.clock.set(nextPeriod - 1);
      const refused = await post(gateway, '/chat/completions', small());
      expect(refused.status).toBe(403);
      expect(refused.headers.get('x-should-retry')).toBe('false');
      expect(refused.headers.get('content-type')).toBe('application/json');
      expect(JSON.parse(refused.text)).toEqual(LIMIT_REACHED(word));
      expect(gateway.upstream.requests).toHaveLength(1);
      // Requests that do not spend still answer at the limit.
      expect(await get('/auth/key')).toMatchObject({ status: 200, body: { data: { usage: 0.028 } } });
      expect((await get('/models')).status).toBe(200);

      gateway.clock.set(nextPeriod);
      expect(await get('/auth/key')).toMatchObject({ status: 200, body: { data: { usage: 0 } } });
      expect((await post(gateway, '/chat/completions', small())).status).toBe(200);
      expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.028, reserved: 0 });
    });
  }

  it('refuses a request whose maximum cost exceeds what is left of the limit', async () => {
    gateway = await startGateway({ proxy: EXACT });
    await gateway.store.updateKey(gateway.proxyKeyId, { limit: 0.05, limitReset: null });
    const res = await post(gateway, '/chat/completions', chat({ max_tokens: 1000 }));
    expect(res.status).toBe(403);
    expect(res.headers.get('x-should-retry')).toBe('false');
    expect(JSON.parse(res.text)).toEqual({
      error: {
        message:
          "This request could cost up to $2.012, more than the $0.05 left of this key's spend limit of $0.05. Lower max_tokens or raise the key's limit.",
        type: 'permission_error',
        code: 'spend_limit_reached',
      },
    });
  });

  it('admits at most as many of 50 concurrent requests as the limit covers, and never records more spend', async () => {
    gateway = await startGateway({ proxy: EXACT });
    await gateway.store.updateKey(gateway.proxyKeyId, { limit: 0.28, limitReset: null });
    const answers = await Promise.all(Array.from({ length: 50 }, () => post(gateway, '/chat/completions', small())));
    const admitted = answers.filter((a) => a.status === 200).length;
    const refused = answers.filter((a) => a.status === 403).length;
    expect(admitted + refused).toBe(50);
    expect(admitted).toBeGreaterThan(0);
    expect(admitted).toBeLessThanOrEqual(10);
    expect(gateway.upstream.requests).toHaveLength(admitted);
    const key = await gateway.store.getKey(gateway.proxyKeyId);
    expect(key?.usage).toBeLessThanOrEqual(0.28);
    expect(key?.usage).toBeCloseTo(admitted * 0.028, 10);
    expect(key?.reserved).toBe(0);
    expect(await gateway.store.getAccount(gateway.account.id)).toMatchObject({ reserved: 0, balance: 10 - (key?.usage ?? 0) });
  });
});

describe('proxyRouter balances', () => {
  it('answers 402 insufficient_balance with x-should-retry: false at a zero balance, while auth/key and models still answer', async () => {
    gateway = await startGateway({ balance: 0 });
    const res = await post(gateway, '/chat/completions', chat());
    expect(res.status).toBe(402);
    expect(res.headers.get('x-should-retry')).toBe('false');
    expect(JSON.parse(res.text)).toEqual({
      error: {
        message: 'Insufficient balance. Add credits to your account to continue.',
        type: 'billing_error',
        code: 'insufficient_balance',
      },
    });
    expect(gateway.upstream.requests).toEqual([]);
    expect(await get('/auth/key')).toMatchObject({ status: 200, body: { data: { limit: 0 } } });
    expect((await get('/models')).status).toBe(200);
  });

  it('answers 402 when the balance cannot cover the request maximum cost', async () => {
    gateway = await startGateway({ balance: 0.1, proxy: EXACT });
    const res = await post(gateway, '/chat/completions', chat({ max_tokens: 1000 }));
    expect(res.status).toBe(402);
    expect(JSON.parse(res.text)).toEqual({
      error: {
        message:
          "This request could cost up to $2.012, more than the account's available balance of $0.1. Lower max_tokens or add credits.",
        type: 'billing_error',
        code: 'insufficient_balance',
      },
    });
  });
});

describe('proxyRouter token rate limit', () => {
  it('answers 429 with Retry-After once the key used its tokens per minute, and admits again next minute', async () => {
    gateway = await startGateway();
    await gateway.store.updateKey(gateway.proxyKeyId, { rateLimit: { requests: 100, interval: '1m', tokens: 30 } });
    expect((await post(gateway, '/chat/completions', chat())).status).toBe(200);
    expect((await post(gateway, '/chat/completions', chat())).status).toBe(200);
    const limited = await post(gateway, '/chat/completions', chat());
    expect(limited.status).toBe(429);
    expect(limited.headers.get('retry-after')).toBe('60');
    expect(JSON.parse(limited.text)).toEqual({
      error: {
        message: 'Rate limit exceeded: 30 tokens per minute for this key. Retry after the window resets.',
        type: 'rate_limit_error',
        code: 'rate_limit_exceeded',
      },
    });
    expect(gateway.upstream.requests).toHaveLength(2);
    gateway.clock.advance(60_000);
    expect((await post(gateway, '/chat/completions', chat())).status).toBe(200);
  });
});
