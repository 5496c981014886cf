import type { ModelSwitchContext } from '../auth/authenticator.js';
import { ModelSwitchError, invalidApiKey, invalidRequest } from '../errors/errors.js';
import { MAX_OUTPUT_TOKENS, type ModelPrice, type TokenUsage, costOf } from './pricing.js';
import { rateLimitExceeded } from '../auth/rate-limit.js';
import type { StoreGuard } from '../store/guard.js';
import type { KeyStore, ReservationResult } from '../store/types.js';

/** Token-per-minute counters use one fixed one-minute window, like LiteLLM's `tpm_limit`. */
export const TOKEN_WINDOW_MS = 60_000;

/** Header that tells the OpenAI SDKs not to retry: retrying a spend refusal cannot succeed. */
const NO_RETRY = { 'x-should-retry': 'false' } as const;

function tokenCounterName(keyId: number): string {
  return `tokens:${keyId}:${TOKEN_WINDOW_MS}`;
}

export { MAX_OUTPUT_TOKENS };
/** Largest `n` (choices) or `best_of` a request may ask for: OpenAI's own maximum of `n`. */
export const MAX_CHOICES = 128;
const OUTPUT_CAP_FIELDS = ['max_completion_tokens', 'max_tokens', 'max_output_tokens'] as const;

function readCount(body: Record<string, unknown>, field: string, max: number): number | undefined {
  const value = body[field];
  // null is the APIs' own "not set".
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > max) {
    throw invalidRequest(`${field} must be an integer from 1 to ${max}`, field);
  }
  return value;
}

/** The output a request may produce, as {@link outputCap} reads it from the body. */
export interface OutputCap {
  /** The request's largest cap (the upstream may honour any of the three names), or `undefined` when it sets none. */
  readonly requested: number | undefined;
  /**
   * Choices the upstream generates and bills: `n`, or `best_of` when larger (the Completions API
   * generates `best_of` completions server-side and bills them all).
   */
  readonly choices: number;
}

/**
 * Reads a request's output cap and choices. Throws 400 `invalid_request` (with `param`) for a cap,
 * `n` or `best_of` that is not an integer in range, so no client value can make the reservation
 * Infinity or NaN.
 */
export function outputCap(body: Record<string, unknown>): OutputCap {
  let requested: number | undefined;
  for (const field of OUTPUT_CAP_FIELDS) {
    const value = readCount(body, field, MAX_OUTPUT_TOKENS);
    if (value !== undefined) requested = Math.max(requested ?? 0, value);
  }
  const n = readCount(body, 'n', MAX_CHOICES) ?? 1;
  const bestOf = readCount(body, 'best_of', MAX_CHOICES) ?? 1;
  return { requested, choices: Math.max(n, bestOf) };
}

/** The most a request can cost: its prompt estimate plus its output cap, at the model's price. */
export function maxCost(price: ModelPrice | undefined, promptTokens: number, outputTokens: number): number {
  if (price === undefined) return 0;
  return costOf(price, { promptTokens, completionTokens: outputTokens, cachedPromptTokens: 0 });
}

/** Throws 429 when the key has used its tokens for the current minute (read only: amount 0). */
export async function checkTokenRate(
  store: Pick<KeyStore, 'hitCounter'>,
  guard: Pick<StoreGuard, 'run'>,
  context: ModelSwitchContext,
  now: number,
): Promise<void> {
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
  store: Pick<KeyStore, 'hitCounter'>,
  guard: Pick<StoreGuard, 'run'>,
  context: ModelSwitchContext,
  usage: TokenUsage,
  now: number,
): Promise<void> {
  if (context.rateLimit?.tokens === undefined) return;
  // Counters hold whole tokens (Redis INCRBY); a provider reporting fractions is rounded up.
  const total = Math.ceil(usage.promptTokens + usage.completionTokens);
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
      return invalidApiKey();
  }
}
