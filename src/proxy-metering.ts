import type { ModelSwitchContext } from './authenticate.js';
import { ModelSwitchError, authenticationError } from './errors.js';
import { type ModelPrice, type TokenUsage, costOf } from './pricing.js';
import { rateLimitExceeded } from './rate-limit.js';
import type { StoreGuard } from './store-guard.js';
import type { KeyStore, ReservationResult } from './types.js';

/** Token-per-minute counters use one fixed one-minute window, like LiteLLM's `tpm_limit`. */
export const TOKEN_WINDOW_MS = 60_000;

/** Header that tells the OpenAI SDKs not to retry: retrying a spend refusal cannot succeed. */
const NO_RETRY = { 'x-should-retry': 'false' } as const;

function tokenCounterName(keyId: number): string {
  return `tokens:${keyId}:${TOKEN_WINDOW_MS}`;
}

/** Output tokens the request may produce: its own cap, else `fallback`, times `n` choices. */
export function maxOutputTokens(body: Record<string, unknown>, fallback: number): number {
  const cap = [body.max_completion_tokens, body.max_tokens, body.max_output_tokens].find(
    (value): value is number => typeof value === 'number' && Number.isInteger(value) && value >= 0,
  );
  const choices = typeof body.n === 'number' && Number.isInteger(body.n) && body.n > 1 ? body.n : 1;
  return (cap ?? fallback) * choices;
}

/** The most a request can cost: its prompt estimate plus its output cap, at the model's price. */
export function maxCost(price: ModelPrice | undefined, promptTokens: number, outputTokens: number): number {
  if (price === undefined) return 0;
  return costOf(price, { promptTokens, completionTokens: outputTokens, cachedPromptTokens: 0 });
}

/** Throws 429 when the key has used its tokens for the current minute (read only: amount 0). */
export async function checkTokenRate(store: KeyStore, guard: StoreGuard, context: ModelSwitchContext, now: number): Promise<void> {
  const tokens = context.rateLimit?.tokens;
  if (tokens === undefined) return;
  const counter = await guard.run('hitCounter', () => store.hitCounter(tokenCounterName(context.key.id), TOKEN_WINDOW_MS, now, 0));
  if (counter.count >= tokens) {
    throw rateLimitExceeded(
      `Rate limit exceeded: ${tokens} tokens per minute for this key. Retry after the window resets.`,
      counter.resetAt,
      now,
    );
  }
}

/** Adds metered tokens to the key's token-per-minute counter. */
export async function countTokens(
  store: KeyStore,
  guard: StoreGuard,
  context: ModelSwitchContext,
  usage: TokenUsage,
  now: number,
): Promise<void> {
  if (context.rateLimit?.tokens === undefined) return;
  const total = usage.promptTokens + usage.completionTokens;
  if (total <= 0) return;
  await guard.run('hitCounter', () => store.hitCounter(tokenCounterName(context.key.id), TOKEN_WINDOW_MS, now, total));
}

function usd(value: number): string {
  return `$${Number(value.toFixed(6))}`;
}

/** The contract's answer to a refused reservation (403/402 with `x-should-retry: false`, or 401 for a key deleted meanwhile). */
export function refusal(result: Exclude<ReservationResult, { ok: true }>, context: ModelSwitchContext, amount: number): ModelSwitchError {
  switch (result.reason) {
    case 'spend_limit_reached': {
      const limit = context.key.limit ?? 0;
      const left = limit - context.usage - context.key.reserved;
      const resets = context.key.limitReset === null ? '' : ` It resets ${context.key.limitReset} (UTC).`;
      const message =
        left > 0 && amount > 0
          ? `This request could cost up to ${usd(amount)}, more than the ${usd(left)} left of this key's spend limit of ${usd(limit)}. Lower max_tokens or raise the key's limit.${resets}`
          : `This key has reached its spend limit of ${usd(limit)}.${resets}`;
      return new ModelSwitchError('spend_limit_reached', message, { headers: NO_RETRY });
    }
    case 'insufficient_balance': {
      const available = context.account.balance - context.account.reserved;
      const message =
        available > 0 && amount > 0
          ? `This request could cost up to ${usd(amount)}, more than the account's available balance of ${usd(available)}. Lower max_tokens or add credits.`
          : 'Insufficient balance. Add credits to your account to continue.';
      return new ModelSwitchError('insufficient_balance', message, { headers: NO_RETRY });
    }
    default:
      return authenticationError('invalid_api_key', 'Invalid API key', true);
  }
}
