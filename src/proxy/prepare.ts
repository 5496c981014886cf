import type { ModelSwitchContext } from '../auth/authenticator.js';
import { ModelSwitchError, invalidRequest } from '../errors/errors.js';
import { type JsonBody, isJsonObject } from '../http/body.js';
import { INTERNAL_ERROR_MESSAGE } from '../http/respond.js';
import { isModelAllowed } from '../keys/models.js';
import { limitPeriod } from '../store/spend-rules.js';
import { containsKey } from './key-scan.js';
import { type OutputCap, maxCost, outputCap } from './metering.js';
import type { ResolvedProxyOptions } from './options.js';
import { type ModelPrice, priceOf } from './pricing.js';
import { encodingOf } from './prompt-tokens.js';
import { type ResolvedUpstream, findUpstream } from './upstreams.js';

/** A proxied request ready to reserve and send: what {@link prepare} answers for a body it accepts. */
export interface PreparedRequest {
  readonly ok: true;
  /** The body's `model`: chooses the upstream and the price. */
  readonly model: string;
  readonly upstream: ResolvedUpstream;
  /** `undefined` for an unpriced model the host serves free (`allowUnpricedModels`). */
  readonly price: ModelPrice | undefined;
  /** The body as sent upstream: the parsed value that was priced, serialized again. */
  readonly body: Buffer;
  /** The proxy asked for `stream_options.include_usage` on the client's behalf, so the usage-only chunk is not the client's to see. */
  readonly stripUsageChunk: boolean;
  /** USD to reserve: the most the request can cost. */
  readonly reserved: number;
  /** The output tokens reserved (all choices), and the cap field the proxy set in the body sent upstream (`undefined`: none, the client's own cap or no cap stands). */
  readonly output: { readonly tokens: number; readonly enforcedField: OutputCapField | undefined };
  /** The key's limit period at `at`, which the reservation and its settlement are charged to. */
  readonly period: string | null;
  /** When the request was priced (epoch ms): its token-rate window and its period. */
  readonly at: number;
}

/** A request {@link prepare} refuses, before any store call or upstream request. */
export interface RefusedRequest {
  readonly ok: false;
  /** The answer to send. */
  readonly error: ModelSwitchError;
  /** For a refusal caused by the host's configuration (a price or estimate that cannot be used): the line to log as an error. */
  readonly hostBug: string | undefined;
}

/** What {@link prepare} answers. */
export type Preparation = PreparedRequest | RefusedRequest;

/** The 404 of a model no upstream serves (`unknown`) or that has no price while unpriced models are refused (`unpriced`). */
export function modelNotFound(model: string, reason: 'unknown' | 'unpriced'): ModelSwitchError {
  const message =
    reason === 'unknown'
      ? `The model '${model}' does not exist or is not served by this gateway.`
      : `The model '${model}' has no price configured on this gateway, so it cannot be metered.`;
  return new ModelSwitchError('model_not_found', message, { param: 'model' });
}

/** The 403 of a model the key's `models` allow-list does not name. */
export function modelNotAllowed(model: string): ModelSwitchError {
  return new ModelSwitchError('model_not_allowed', `This API key is not allowed to use the model '${model}'.`, { param: 'model' });
}

function refused(error: ModelSwitchError, hostBug?: string): RefusedRequest {
  return { ok: false, error, hostBug };
}

/** A host bug (a bad estimate or price): the request is refused without going upstream, with a 500, not a store outage. */
function hostBug(line: string): RefusedRequest {
  return refused(new ModelSwitchError('internal_error', INTERNAL_ERROR_MESSAGE), line);
}

/** The body field that caps a request's output, by API. */
export type OutputCapField = 'max_completion_tokens' | 'max_tokens' | 'max_output_tokens';

/**
 * The field `enforceMaxTokens` sets on a request to `path` that has no cap, or `undefined` for a
 * path whose API has none the proxy knows (embeddings produce no output; paths a host added).
 * Chat Completions: `max_completion_tokens` for OpenAI's models (its reasoning models accept no
 * other), `max_tokens` for other models (the name every OpenAI-compatible server knows).
 */
export function outputCapField(path: string, model: string): OutputCapField | undefined {
  if (path.endsWith('/chat/completions')) return encodingOf(model) === undefined ? 'max_tokens' : 'max_completion_tokens';
  if (path.endsWith('/completions')) return 'max_tokens';
  if (path.endsWith('/responses')) return 'max_output_tokens';
  return undefined;
}

/**
 * Output tokens per choice to reserve, and whether to send that cap upstream: the client's own cap
 * when it set one (sent as it is); else, when the cap can be enforced, `min(model maxOutputTokens,
 * defaultMaxTokens)`, sent; else the model's `maxOutputTokens` (what it can produce), or
 * `defaultMaxTokens` when the price does not say.
 */
function perChoiceCap(
  cap: OutputCap,
  field: OutputCapField | undefined,
  price: ModelPrice | undefined,
  options: Pick<ResolvedProxyOptions, 'defaultMaxTokens' | 'enforceMaxTokens'>,
): { tokens: number; enforce: boolean } {
  if (cap.requested !== undefined) return { tokens: cap.requested, enforce: false };
  const modelMax = price?.maxOutputTokens;
  if (options.enforceMaxTokens && field !== undefined) {
    const tokens = Math.min(modelMax ?? options.defaultMaxTokens, options.defaultMaxTokens);
    // A cap of 0 cannot be sent (the APIs take 1 and up): such a request goes uncapped.
    return { tokens, enforce: tokens >= 1 };
  }
  return { tokens: modelMax ?? options.defaultMaxTokens, enforce: false };
}

/**
 * Decides, from the parsed body alone, where a proxied request goes and what it may cost: the
 * model, its upstream and price, the body to send (with `stream_options.include_usage` asked for a
 * metered stream, and the reserved output cap set when the client set none and `enforceMaxTokens`
 * is on), and the reservation (amount and period). No I/O: it reads the resolved options, the
 * authenticated context and the clock, and calls only the host's `pricing` and, unless
 * `promptTokens` is given (the router counts OpenAI prompts with their tokenizer beforehand), its
 * `estimatePromptTokens` (what they throw is thrown).
 *
 * Refuses with 400 (a body that is not a JSON object, no `model`, a ModelSwitch key in the body,
 * an output cap, `n` or `best_of` out of range), 403 (a model the key's `models` do not allow), 404 (a model no upstream serves, or without a
 * price) or 500 with a `hostBug` line (an estimate or reservation that is not a finite number ≥ 0).
 *
 * @example
 * ```ts
 * const body = await readJsonBody(req, res, options.maxBodyBytes);
 * const prepared = prepare(body, '/chat/completions', options, req.modelSwitch, Date.now, await countPromptTokens(body.value));
 * if (!prepared.ok) throw prepared.error;
 * await store.reserveSpend({ keyId, accountId, amount: prepared.reserved, period: prepared.period });
 * ```
 */
export function prepare(
  { raw, value }: JsonBody,
  path: string,
  options: Pick<
    ResolvedProxyOptions,
    'upstreams' | 'pricing' | 'allowUnpricedModels' | 'defaultMaxTokens' | 'enforceMaxTokens' | 'estimatePromptTokens'
  >,
  context: Pick<ModelSwitchContext, 'key'>,
  now: () => number,
  promptTokens?: number,
): Preparation {
  if (!isJsonObject(value)) return refused(invalidRequest('Request body must be a JSON object', 'body'));
  const model = value.model;
  if (typeof model !== 'string' || model === '') return refused(invalidRequest('model is required and must be a string', 'model'));
  // Before the upstream lookup: a key limited to some models learns nothing about the others.
  if (!isModelAllowed(context.key.models, model)) return refused(modelNotAllowed(model));
  const upstream = findUpstream(options.upstreams, model);
  if (upstream === undefined) return refused(modelNotFound(model, 'unknown'));
  const price = priceOf(options.pricing, model);
  if (price === undefined && !options.allowUnpricedModels) return refused(modelNotFound(model, 'unpriced'));
  let cap: OutputCap;
  try {
    cap = outputCap(value);
  } catch (error) {
    if (error instanceof ModelSwitchError) return refused(error);
    throw error;
  }
  const embeddings = path.endsWith('/embeddings');
  const field = embeddings ? undefined : outputCapField(path, model);
  const perChoice = perChoiceCap(cap, field, price, options);
  let sent: Record<string, unknown> = value;
  let stripUsageChunk = false;
  // Only the (chat) completions APIs know stream_options; the Responses API reports usage in response.completed.
  if (value.stream === true && path.endsWith('/completions')) {
    const streamOptions = isJsonObject(value.stream_options) ? value.stream_options : {};
    if (streamOptions.include_usage !== true) {
      stripUsageChunk = true;
      sent = { ...sent, stream_options: { ...streamOptions, include_usage: true } };
    }
  }
  // The cap that was reserved goes upstream, so an upstream that obeys it cannot produce more.
  if (perChoice.enforce && field !== undefined) sent = { ...sent, [field]: perChoice.tokens };
  // What was priced is what is sent: the raw bytes could say otherwise (a duplicate "model" key
  // that the upstream's parser resolves differently, say).
  const body = Buffer.from(JSON.stringify(sent));
  // Checked on the bytes as received and as sent (JSON escapes such as \u006d decoded), so no
  // ms-/mk- value can reach a provider inside a prompt either.
  if (containsKey(raw.toString('latin1')) || containsKey(body.toString('latin1'))) {
    return refused(invalidRequest('The request body contains a ModelSwitch API key; remove it (keys are never sent to providers)'));
  }
  const at = now();
  const estimate: unknown = promptTokens ?? options.estimatePromptTokens(value, body.length);
  if (typeof estimate !== 'number' || !Number.isFinite(estimate) || estimate < 0) {
    return hostBug(
      `modelswitch-keys: options.estimatePromptTokens returned ${String(estimate)} for model ${model}; it must return a finite number ≥ 0 (request refused)`,
    );
  }
  const outputTokens = embeddings ? 0 : perChoice.tokens * cap.choices;
  const reserved = maxCost(price, Math.ceil(estimate), outputTokens);
  // A NaN or Infinity reservation would pass every check and poison the stored totals: fail closed.
  if (!Number.isFinite(reserved) || reserved < 0) {
    return hostBug(`modelswitch-keys: the reservation for model ${model} came to ${reserved} USD; check its price (request refused)`);
  }
  return {
    ok: true,
    model,
    upstream,
    price,
    body,
    stripUsageChunk,
    reserved,
    output: { tokens: outputTokens, enforcedField: perChoice.enforce ? field : undefined },
    period: limitPeriod(context.key.limitReset, at),
    at,
  };
}
