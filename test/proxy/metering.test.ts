import { describe, expect, it } from 'vitest';
import { MAX_CHOICES, MAX_OUTPUT_TOKENS, checkTokenRate, countTokens, outputCap, refusal } from '../../src/proxy/metering.js';
import { type ModelSwitchError, invalidApiKey } from '../../src/errors/errors.js';
import { sampleContext } from './exchange-fixtures.js';

const NOW = Date.parse('2026-11-22T12:00:30Z');

/** A token counter standing at `count` until `resetAt`, and a guard that records each operation it runs. */
function counterStore(count: number, resetAt = NOW + 30_000) {
  const hits: { name: string; windowMs: number; now: number; amount: number }[] = [];
  const operations: string[] = [];
  const store = {
    hitCounter: async (name: string, windowMs: number, now: number, amount: number) => {
      hits.push({ name, windowMs, now, amount });
      return { count: count + amount, resetAt };
    },
  };
  const guard = {
    run: <T>(operation: string, run: () => Promise<T>) => {
      operations.push(operation);
      return run();
    },
  };
  return { store, guard, hits, operations };
}

function answer(error: ModelSwitchError) {
  return { status: error.status, body: error.toJSON(), headers: error.headers };
}

describe('outputCap', () => {
  it('accepts the largest cap and number of choices there are', () => {
    expect(outputCap({ max_tokens: MAX_OUTPUT_TOKENS, n: MAX_CHOICES, best_of: MAX_CHOICES })).toEqual({
      requested: MAX_OUTPUT_TOKENS,
      choices: MAX_CHOICES,
    });
  });
});

describe('the token rate', () => {
  it('reads the counter (amount 0) and refuses at the limit with Retry-After, admits below it, and asks nothing of a key without a token limit', async () => {
    const full = counterStore(10);
    await expect(checkTokenRate(full.store, full.guard, sampleContext({}, 10), NOW).catch(answer)).resolves.toEqual({
      status: 429,
      body: {
        error: {
          message: 'Rate limit exceeded: 10 tokens per minute for this key. Retry after the window resets.',
          type: 'rate_limit_error',
          code: 'rate_limit_exceeded',
        },
      },
      headers: { 'Retry-After': '30' },
    });
    expect({ hits: full.hits, operations: full.operations }).toEqual({
      hits: [{ name: 'tokens:7:60000', windowMs: 60_000, now: NOW, amount: 0 }],
      operations: ['hitCounter'],
    });

    const below = counterStore(9);
    await expect(checkTokenRate(below.store, below.guard, sampleContext({}, 10), NOW)).resolves.toBeUndefined();

    for (const context of [sampleContext(), { ...sampleContext(), rateLimit: { requests: 5, interval: '1m' } }]) {
      const none = counterStore(0);
      await expect(checkTokenRate(none.store, none.guard, context, NOW)).resolves.toBeUndefined();
      expect(none.operations).toEqual([]);
    }
  });

  it('counts whole tokens, a fraction rounded up, and nothing for no tokens or a key without a token limit', async () => {
    const counted = counterStore(0);
    await countTokens(
      counted.store,
      counted.guard,
      sampleContext({}, 10),
      { promptTokens: 0.4, completionTokens: 0.3, cachedPromptTokens: 0 },
      NOW,
    );
    await countTokens(
      counted.store,
      counted.guard,
      sampleContext({}, 10),
      { promptTokens: 0, completionTokens: 0, cachedPromptTokens: 0 },
      NOW,
    );
    await countTokens(counted.store, counted.guard, sampleContext(), { promptTokens: 5, completionTokens: 5, cachedPromptTokens: 0 }, NOW);
    expect({ hits: counted.hits, operations: counted.operations }).toEqual({
      hits: [{ name: 'tokens:7:60000', windowMs: 60_000, now: NOW, amount: 1 }],
      operations: ['hitCounter'],
    });
  });
});

describe('refusal', () => {
  it('says the key reached its limit, not what a free request could cost, when the request reserves nothing', () => {
    const context = sampleContext({ limit: 5, usage: 1 });
    expect(answer(refusal({ ok: false, reason: 'spend_limit_reached' }, { ...context, usage: 1 }, 0))).toEqual({
      status: 403,
      body: {
        error: {
          message: 'This key has reached its spend limit of $5. It resets daily (UTC).',
          type: 'permission_error',
          code: 'spend_limit_reached',
        },
      },
      headers: { 'x-should-retry': 'false' },
    });
  });

  it("counts the account's holds out of its available balance, and says only 'insufficient' for a free request", () => {
    const context = { ...sampleContext(), account: { id: 'acct_test', balance: 1, reserved: 0.25, isFreeTier: false, createdAt: 0 } };
    expect(answer(refusal({ ok: false, reason: 'insufficient_balance' }, context, 2))).toEqual({
      status: 402,
      body: {
        error: {
          message: "This request could cost up to $2, more than the account's available balance of $0.75. Lower max_tokens or add credits.",
          type: 'billing_error',
          code: 'insufficient_balance',
        },
      },
      headers: { 'x-should-retry': 'false' },
    });
    expect(answer(refusal({ ok: false, reason: 'insufficient_balance' }, context, 0)).body.error.message).toBe(
      'Insufficient balance. Add credits to your account to continue.',
    );
  });

  it('answers a key or account deleted meanwhile as an invalid key', () => {
    for (const reason of ['key_not_found', 'account_not_found'] as const) {
      expect(answer(refusal({ ok: false, reason }, sampleContext(), 1))).toEqual(answer(invalidApiKey()));
    }
  });
});
