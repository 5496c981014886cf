import { ConfigurationError } from '../errors/configuration-error.js';
import { roundUsd } from '../store/spend-rules.js';

/** Largest output cap a request may set, and a price's `maxOutputTokens`: far above any model's output window, small enough that costs stay finite. */
export const MAX_OUTPUT_TOKENS = 1_000_000;

/** A model's price in USD per million tokens (the unit providers publish). */
export interface ModelPrice {
  /** USD per 1M prompt (input) tokens. */
  inputPerMillion: number;
  /** USD per 1M completion (output) tokens. */
  outputPerMillion: number;
  /** USD per 1M cached prompt tokens (`prompt_tokens_details.cached_tokens`). Default: `inputPerMillion`. */
  cachedInputPerMillion?: number;
  /**
   * The most output tokens the model produces for one choice (its output window, e.g. 16384 for
   * `gpt-4o-mini`): what a request without an output cap is reserved when it is not capped upstream
   * (`enforceMaxTokens: false`), and the ceiling of the cap it is sent when it is. An integer from 1
   * to 1,000,000; without it, `defaultMaxTokens` stands in.
   */
  maxOutputTokens?: number;
}

/**
 * Prices by exact model name, or a function answering a model's price (`undefined` when it has none).
 *
 * @example
 * ```ts
 * const pricing: Pricing = { 'gpt-4o-mini': { inputPerMillion: 0.15, outputPerMillion: 0.6 } };
 * const byFamily: Pricing = (model) => (model.startsWith('gpt-4o-mini') ? pricing['gpt-4o-mini'] : undefined);
 * ```
 */
export type Pricing = Readonly<Record<string, ModelPrice>> | ((model: string) => ModelPrice | undefined);

/** Token counts as an upstream reported them. */
export interface TokenUsage {
  promptTokens: number;
  completionTokens: number;
  /** Part of `promptTokens` served from the provider's prompt cache. */
  cachedPromptTokens: number;
}

/** Looks a model's price up; validates what a pricing function returned. */
export function priceOf(pricing: Pricing, model: string): ModelPrice | undefined {
  const price = typeof pricing === 'function' ? pricing(model) : Object.hasOwn(pricing, model) ? pricing[model] : undefined;
  if (price === undefined || price === null) return undefined;
  if (!isValidPrice(price)) {
    throw new ConfigurationError(
      'ERR_MS_PRICING',
      `proxyRouter: the price of model "${model}" needs finite inputPerMillion and outputPerMillion ≥ 0 (and maxOutputTokens, if set, an integer from 1 to ${MAX_OUTPUT_TOKENS})`,
    );
  }
  return price;
}

/** Checks a pricing table at creation so a typo fails at start-up, not on the first request. */
export function validatePricing(pricing: Pricing | undefined): Pricing {
  if (typeof pricing === 'function') return pricing;
  if (typeof pricing !== 'object' || pricing === null) {
    throw new ConfigurationError(
      'ERR_MS_PRICING',
      "proxyRouter: options.pricing must be a table like { 'gpt-4o-mini': { inputPerMillion: 0.15, outputPerMillion: 0.6 } } or a function (model) => price",
    );
  }
  for (const [model, price] of Object.entries(pricing)) {
    if (!isValidPrice(price)) {
      throw new ConfigurationError(
        'ERR_MS_PRICING',
        `proxyRouter: options.pricing["${model}"] needs finite inputPerMillion and outputPerMillion ≥ 0 (and maxOutputTokens, if set, an integer from 1 to ${MAX_OUTPUT_TOKENS})`,
      );
    }
  }
  return { ...pricing };
}

function isValidPrice(price: ModelPrice): boolean {
  const ok = (n: unknown) => typeof n === 'number' && Number.isFinite(n) && n >= 0;
  const max = price?.maxOutputTokens;
  return (
    typeof price === 'object' &&
    price !== null &&
    ok(price.inputPerMillion) &&
    ok(price.outputPerMillion) &&
    (price.cachedInputPerMillion === undefined || ok(price.cachedInputPerMillion)) &&
    (max === undefined || (Number.isSafeInteger(max) && max >= 1 && max <= MAX_OUTPUT_TOKENS))
  );
}

/**
 * USD cost of `usage` at `price`.
 *
 * @example
 * ```ts
 * costOf({ inputPerMillion: 0.15, outputPerMillion: 0.6 }, { promptTokens: 1000, completionTokens: 500, cachedPromptTokens: 0 }); // 0.00045
 * ```
 */
export function costOf(price: ModelPrice, usage: TokenUsage): number {
  const cached = Math.min(usage.cachedPromptTokens, usage.promptTokens);
  const uncached = usage.promptTokens - cached;
  const micro =
    uncached * price.inputPerMillion +
    cached * (price.cachedInputPerMillion ?? price.inputPerMillion) +
    usage.completionTokens * price.outputPerMillion;
  return roundUsd(micro / 1_000_000);
}

/** Reads OpenAI's `usage` object (Chat Completions, Completions, Embeddings, or Responses API) into token counts. */
export function readUsage(usage: unknown): TokenUsage | undefined {
  if (typeof usage !== 'object' || usage === null) return undefined;
  const u = usage as Record<string, unknown>;
  const count = (value: unknown) => (typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : undefined);
  const prompt = count(u.prompt_tokens) ?? count(u.input_tokens);
  const completion = count(u.completion_tokens) ?? count(u.output_tokens);
  if (prompt === undefined && completion === undefined) return undefined;
  const details = (u.prompt_tokens_details ?? u.input_tokens_details) as Record<string, unknown> | null | undefined;
  const cached = typeof details === 'object' && details !== null ? count(details.cached_tokens) : undefined;
  return { promptTokens: prompt ?? 0, completionTokens: completion ?? 0, cachedPromptTokens: cached ?? 0 };
}
