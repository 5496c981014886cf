import { getRetryable } from '@langchain/core/errors';
import type { AIMessageChunk, UsageMetadata } from '@langchain/core/messages';
import { ChatOpenAI, OpenAIEmbeddings } from '@langchain/openai';
import { APIError, AuthenticationError, NotFoundError, PermissionDeniedError, RateLimitError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MOCK_ANSWER } from '../../examples/mock-upstream.js';
import { type ClientGateway, priceOf, startClientGateway } from './example-gateway.js';

let g: ClientGateway;
beforeAll(async () => {
  g = await startClientGateway();
});
afterAll(() => g.close());

function chat(options: { apiKey?: string; model?: string; useResponsesApi?: boolean; maxRetries?: number } = {}): ChatOpenAI {
  const { apiKey = g.apiKey, model = 'gpt-4o-mini', maxRetries = 0, useResponsesApi = false } = options;
  return new ChatOpenAI({ model, apiKey, configuration: { baseURL: g.baseURL }, maxRetries, useResponsesApi, streamUsage: true });
}

/** A message's `usage_metadata` (LangChain's generic message types infer it as `never` under this repository's strict options). */
function usageOf(message: AIMessageChunk | undefined): UsageMetadata {
  const usage = (message as { usage_metadata?: UsageMetadata } | undefined)?.usage_metadata;
  if (usage === undefined) throw new Error('the message has no usage_metadata');
  return usage;
}

/** The JSON bodies the embeddings clients sent (read through the fetch they are given). */
const sentBodies: Record<string, unknown>[] = [];
const recordingFetch: typeof fetch = (input, init) => {
  if (typeof init?.body === 'string') sentBodies.push(JSON.parse(init.body) as Record<string, unknown>);
  return fetch(input, init);
};

function embeddings(dimensions?: number): OpenAIEmbeddings {
  return new OpenAIEmbeddings({
    model: 'text-embedding-3-small',
    apiKey: g.apiKey,
    configuration: { baseURL: g.baseURL, fetch: recordingFetch },
    maxRetries: 0,
    ...(dimensions === undefined ? {} : { dimensions }),
  });
}

async function rejection(promise: Promise<unknown>): Promise<APIError & { lc_error_code?: string }> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  if (!(error instanceof APIError)) throw new Error(`expected the openai APIError LangChain passes on, got ${String(error)}`);
  return error;
}

/** The usage the gateway reports for embedding `text` (asked directly, so the client under test is not involved). */
async function embeddingTokens(text: string): Promise<number> {
  const response = await fetch(`${g.baseURL}/embeddings`, {
    method: 'POST',
    headers: { authorization: `Bearer ${g.apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'text-embedding-3-small', input: [text] }),
  });
  return ((await response.json()) as { usage: { prompt_tokens: number } }).usage.prompt_tokens;
}

describe('LangChain (@langchain/openai) against the example gateway', () => {
  it('ChatOpenAI.invoke: the answer and its usage_metadata, charged its price', async () => {
    const { result: message, cost } = await g.charged(() => chat().invoke('Say hello'));
    expect(message.content).toBe(MOCK_ANSWER);
    expect(message.response_metadata).toMatchObject({ finish_reason: 'stop' });
    expect(usageOf(message).output_tokens).toBe(12);
    expect(cost).toBeGreaterThan(0);
    expect(cost).toBeCloseTo(priceOf('gpt-4o-mini', usageOf(message).input_tokens, 12), 12);
  });

  it('ChatOpenAI.stream with streamUsage: the chunks add up to the answer and its usage, charged its price', async () => {
    const { result: message, cost } = await g.charged(async () => {
      let total: AIMessageChunk | undefined;
      for await (const chunk of await chat().stream('Say hello')) total = total === undefined ? chunk : total.concat(chunk);
      return total;
    });
    expect(message?.content).toBe(MOCK_ANSWER);
    expect(usageOf(message).output_tokens).toBe(12);
    expect(cost).toBeGreaterThan(0);
    expect(cost).toBeCloseTo(priceOf('gpt-4o-mini', usageOf(message).input_tokens, 12), 12);
  });

  it('ChatOpenAI with useResponsesApi: invoke and stream over the Responses API, each charged its price', async () => {
    const invoked = await g.charged(() => chat({ model: 'gpt-4o', useResponsesApi: true }).invoke('Say hello'));
    expect(invoked.result.text).toBe(MOCK_ANSWER);
    expect(usageOf(invoked.result).output_tokens).toBe(12);
    expect(invoked.cost).toBeGreaterThan(0);
    expect(invoked.cost).toBeCloseTo(priceOf('gpt-4o', usageOf(invoked.result).input_tokens, 12), 12);

    const streamed = await g.charged(async () => {
      let total: AIMessageChunk | undefined;
      for await (const chunk of await chat({ model: 'gpt-4o', useResponsesApi: true }).stream('Say hello'))
        total = total === undefined ? chunk : total.concat(chunk);
      return total;
    });
    expect(streamed.result?.text).toBe(MOCK_ANSWER);
    expect(usageOf(streamed.result).output_tokens).toBe(12);
    expect(streamed.cost).toBeCloseTo(invoked.cost, 12);
  });

  it('OpenAIEmbeddings.embedQuery (base64 on the wire, the SDK default): a unit vector of 1536, charged the price of its tokens', async () => {
    const text = 'sunny day at the beach';
    sentBodies.length = 0;
    const { result: vector, cost } = await g.charged(() => embeddings().embedQuery(text));
    expect(sentBodies).toEqual([{ model: 'text-embedding-3-small', input: text, encoding_format: 'base64' }]);
    expect(vector).toHaveLength(1536);
    expect(Math.hypot(...vector)).toBeCloseTo(1, 5);
    expect(cost).toBeGreaterThan(0);
    expect(cost).toBeCloseTo(priceOf('text-embedding-3-small', await embeddingTokens(text), 0), 12);
    expect(await embeddings().embedQuery(text)).toEqual(vector);
  });

  it('OpenAIEmbeddings.embedDocuments: one vector per document, of the dimensions asked for', async () => {
    const vectors = await embeddings(256).embedDocuments(['first', 'second', 'third']);
    expect(vectors.map((v) => v.length)).toEqual([256, 256, 256]);
    expect(new Set(vectors.map((v) => v.join())).size).toBe(3);
  });

  it('passes on the openai error classes, marked for LangChain retry logic: none retryable but the 429', async () => {
    const { unknownKey, noBalanceKey, spendLimitKey, unknownModel } = g.refusals;
    const unauthorized = await rejection(chat({ apiKey: unknownKey }).invoke('Say hello'));
    expect(unauthorized).toBeInstanceOf(AuthenticationError);
    expect(unauthorized).toMatchObject({ status: 401, code: 'invalid_api_key', lc_error_code: 'MODEL_AUTHENTICATION' });
    expect(getRetryable(unauthorized)).toBe(false);

    const noBalance = await rejection(chat({ apiKey: noBalanceKey }).invoke('Say hello'));
    expect(noBalance).toMatchObject({ status: 402, code: 'insufficient_balance' });
    expect(noBalance.headers?.get('x-should-retry')).toBe('false');
    expect(getRetryable(noBalance)).toBe(false);

    const spent = await rejection(chat({ apiKey: spendLimitKey }).invoke('Say hello'));
    expect(spent).toBeInstanceOf(PermissionDeniedError);
    expect(spent).toMatchObject({ status: 403, code: 'spend_limit_reached' });
    expect(spent.headers?.get('x-should-retry')).toBe('false');
    expect(getRetryable(spent)).toBe(false);

    const unknown = await rejection(chat({ model: unknownModel }).invoke('Say hello'));
    expect(unknown).toBeInstanceOf(NotFoundError);
    expect(unknown).toMatchObject({ status: 404, code: 'model_not_found', lc_error_code: 'MODEL_NOT_FOUND' });
    expect(getRetryable(unknown)).toBe(false);

    const limited = await rejection(g.rateLimited((apiKey) => chat({ apiKey }).invoke('Say hello')));
    expect(limited).toBeInstanceOf(RateLimitError);
    expect(limited).toMatchObject({ status: 429, code: 'rate_limit_exceeded', lc_error_code: 'MODEL_RATE_LIMIT' });
    expect(getRetryable(limited)).toBe(true);
    const retryAfter = Number(limited.headers?.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
  });

  it('does not retry a refusal that cannot succeed, even with retries allowed', async () => {
    const before = g.requests();
    const error = await rejection(chat({ apiKey: g.refusals.spendLimitKey, maxRetries: 3 }).invoke('Say hello'));
    expect(error.status).toBe(403);
    expect(g.requests() - before).toBe(1);
  });
});
