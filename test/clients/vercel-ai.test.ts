import { createOpenAI } from '@ai-sdk/openai';
import { APICallError, embed, generateText, streamText } from 'ai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MOCK_ANSWER } from '../../examples/mock-upstream.js';
import { type ClientGateway, priceOf, startClientGateway } from './example-gateway.js';

let g: ClientGateway;
beforeAll(async () => {
  g = await startClientGateway();
});
afterAll(() => g.close());

function provider(apiKey = g.apiKey) {
  return createOpenAI({ baseURL: g.baseURL, apiKey });
}

/** The first `n` words (tokens) of the mock's answer. */
const firstTokens = (n: number) => MOCK_ANSWER.split(/(?= )/).slice(0, n).join('');

async function callError(promise: Promise<unknown>): Promise<APICallError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  if (!APICallError.isInstance(error)) throw new Error(`expected an APICallError, got ${String(error)}`);
  return error;
}

describe('the Vercel AI SDK (ai + @ai-sdk/openai) against the example gateway', () => {
  type Api = 'chat' | 'responses' | 'completion';
  /** The model of each API: `openai(...)` is the Responses API, the SDK's default. */
  const models = {
    chat: (id: string) => provider().chat(id),
    responses: (id: string) => provider()(id),
    completion: (id: string) => provider().completion(id),
  };

  /** generateText, or streamText read to its end: the text, usage and finish reason the SDK parsed. */
  async function answer(api: Api, model: 'gpt-4o-mini' | 'gpt-4o', stream: boolean) {
    const settings = { model: models[api](model), prompt: 'Say hello', maxRetries: 0 };
    if (!stream) return generateText(settings);
    const streamed = streamText(settings);
    let text = '';
    for await (const delta of streamed.textStream) text += delta;
    return { text, usage: await streamed.usage, finishReason: await streamed.finishReason };
  }

  it.each([
    ['generateText', 'openai.chat (Chat Completions)', 'chat', 'gpt-4o-mini', false],
    ['streamText', 'openai.chat, which asks for the usage chunk', 'chat', 'gpt-4o-mini', true],
    ['generateText', 'openai(...) (its default, the Responses API)', 'responses', 'gpt-4o', false],
    ['streamText', "openai(...), parsing the Responses API's events", 'responses', 'gpt-4o-mini', true],
    ['generateText', 'openai.completion (the legacy Completions API)', 'completion', 'gpt-4o-mini', false],
  ] as const)('%s with %s: the text, its usage, charged its price', async (_call, _how, api, model, stream) => {
    const { result, cost } = await g.charged(() => answer(api, model, stream));
    expect(result.text).toBe(MOCK_ANSWER);
    expect(result.finishReason).toBe('stop');
    expect(result.usage.outputTokens).toBe(12);
    expect(cost).toBeGreaterThan(0);
    expect(cost).toBeCloseTo(priceOf(model, result.usage.inputTokens ?? 0, 12), 12);
  });

  it('maxOutputTokens cuts the answer (finish reason "length") on the Responses API, and only those tokens are charged', async () => {
    const { result, cost } = await g.charged(() =>
      generateText({ model: provider()('gpt-4o-mini'), prompt: 'Say hello', maxOutputTokens: 4, maxRetries: 0 }),
    );
    expect(result.text).toBe(firstTokens(4));
    expect(result.finishReason).toBe('length');
    expect(result.usage.outputTokens).toBe(4);
    expect(cost).toBeCloseTo(priceOf('gpt-4o-mini', result.usage.inputTokens ?? 0, 4), 12);
  });

  it('embed with openai.embedding: a vector of the model dimension, charged the price of its tokens', async () => {
    const { result, cost } = await g.charged(() =>
      embed({ model: provider().embedding('text-embedding-3-small'), value: 'sunny day at the beach', maxRetries: 0 }),
    );
    expect(result.embedding).toHaveLength(1536);
    expect(Math.hypot(...result.embedding)).toBeCloseTo(1, 5);
    expect(result.usage.tokens).toBeGreaterThan(0);
    expect(cost).toBeGreaterThan(0);
    expect(cost).toBeCloseTo(priceOf('text-embedding-3-small', result.usage.tokens, 0), 12);
  });

  it('raises APICallError with each refusal status; only the 429 is retryable, with its Retry-After', async () => {
    const generate = (apiKey: string, model = 'gpt-4o-mini') =>
      generateText({ model: provider(apiKey)(model), prompt: 'Say hello', maxRetries: 0 });
    const refused = (apiKey: string, model?: string) => callError(generate(apiKey, model));
    const { unknownKey, noBalanceKey, spendLimitKey, unknownModel } = g.refusals;
    const errors = {
      401: await refused(unknownKey),
      402: await refused(noBalanceKey),
      403: await refused(spendLimitKey),
      404: await refused(g.apiKey, unknownModel),
      429: await callError(g.rateLimited((key) => generate(key))),
    };
    for (const [status, error] of Object.entries(errors)) {
      expect(error.statusCode).toBe(Number(status));
      expect(error.isRetryable, status).toBe(status === '429');
      expect(error.url).toBe(`${g.baseURL}/responses`);
    }
    expect(errors[401].message).toBe('Invalid API key');
    expect(errors[402].responseHeaders?.['x-should-retry']).toBe('false');
    expect(errors[403].responseHeaders?.['x-should-retry']).toBe('false');
    expect(JSON.parse(errors[404].responseBody ?? '')).toMatchObject({ error: { code: 'model_not_found', param: 'model' } });
    expect(Number(errors[429].responseHeaders?.['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(Number(errors[429].responseHeaders?.['retry-after'])).toBeLessThanOrEqual(60);
  });

  it('does not retry a refusal that cannot succeed, even when allowed to', async () => {
    const before = g.requests();
    const error = await callError(
      generateText({ model: provider(g.refusals.noBalanceKey).chat('gpt-4o-mini'), prompt: 'Say hello', maxRetries: 2 }),
    );
    expect(error.statusCode).toBe(402);
    expect(g.requests() - before).toBe(1);
  });
});
