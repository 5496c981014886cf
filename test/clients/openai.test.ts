import OpenAI, { APIError, AuthenticationError, NotFoundError, PermissionDeniedError, RateLimitError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EMBEDDING_DIMENSIONS, MOCK_ANSWER } from '../../examples/mock-upstream.js';
import { type ClientGateway, priceOf, startClientGateway } from './example-gateway.js';

let g: ClientGateway;
beforeAll(async () => {
  g = await startClientGateway();
});
afterAll(() => g.close());

/** The JSON bodies the clients sent (read through the fetch they are given). */
const sentBodies: Record<string, unknown>[] = [];
const recordingFetch: typeof fetch = (input, init) => {
  if (typeof init?.body === 'string') sentBodies.push(JSON.parse(init.body) as Record<string, unknown>);
  return fetch(input, init);
};

function client(apiKey = g.apiKey, maxRetries = 0): OpenAI {
  return new OpenAI({ baseURL: g.baseURL, apiKey, maxRetries, fetch: recordingFetch });
}

const messages = [{ role: 'user' as const, content: 'Say hello' }];
/** The first `n` words (tokens) of the mock's answer. */
const firstTokens = (n: number) => MOCK_ANSWER.split(/(?= )/).slice(0, n).join('');

async function rejection(promise: Promise<unknown>): Promise<APIError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  if (!(error instanceof APIError)) throw new Error(`expected an APIError, got ${String(error)}`);
  return error;
}

function norm(vector: readonly number[]): number {
  return Math.hypot(...vector);
}

describe('openai (the official SDK) against the example gateway', () => {
  it('chat.completions.create: the mock answer, with the mock header, charged the price of its usage', async () => {
    const { result, cost } = await g.charged(() => client().chat.completions.create({ model: 'gpt-4o-mini', messages }).withResponse());
    const { data: completion, response } = result;
    expect(response.headers.get('x-modelswitch-mock')).toBe('true');
    expect(completion.choices).toEqual([
      { index: 0, message: { role: 'assistant', content: MOCK_ANSWER, refusal: null }, logprobs: null, finish_reason: 'stop' },
    ]);
    const usage = completion.usage;
    expect(usage).toMatchObject({ completion_tokens: 12 });
    expect(cost).toBeGreaterThan(0);
    expect(cost).toBeCloseTo(priceOf('gpt-4o-mini', usage?.prompt_tokens ?? 0, 12), 12);
  });

  it('chat.completions.create with stream and include_usage: the same text, its usage chunk, the same charge', async () => {
    const { result, cost } = await g.charged(async () => {
      const stream = await client().chat.completions.create({
        model: 'gpt-4o-mini',
        messages,
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = '';
      let usage: OpenAI.CompletionUsage | undefined;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? '';
        if (chunk.usage) usage = chunk.usage;
      }
      return { text, usage };
    });
    expect(result.text).toBe(MOCK_ANSWER);
    expect(result.usage?.completion_tokens).toBe(12);
    expect(cost).toBeGreaterThan(0);
    expect(cost).toBeCloseTo(priceOf('gpt-4o-mini', result.usage?.prompt_tokens ?? 0, 12), 12);
  });

  it('honours max_completion_tokens: the answer is cut, finish_reason "length", and only those tokens are charged', async () => {
    const { result: completion, cost } = await g.charged(() =>
      client().chat.completions.create({ model: 'gpt-4o', messages, max_completion_tokens: 3 }),
    );
    expect(completion.choices[0]).toMatchObject({ message: { content: firstTokens(3) }, finish_reason: 'length' });
    expect(completion.usage?.completion_tokens).toBe(3);
    expect(cost).toBeCloseTo(priceOf('gpt-4o', completion.usage?.prompt_tokens ?? 0, 3), 12);
  });

  it('completions.create (the legacy API), JSON and streamed, cut by max_tokens', async () => {
    const { result: completion, cost } = await g.charged(() =>
      client().completions.create({ model: 'gpt-4o-mini', prompt: 'Say hello', max_tokens: 5 }),
    );
    expect(completion.object).toBe('text_completion');
    expect(completion.choices).toEqual([{ index: 0, text: firstTokens(5), logprobs: null, finish_reason: 'length' }]);
    expect(completion.usage?.completion_tokens).toBe(5);
    expect(cost).toBeGreaterThan(0);
    expect(cost).toBeCloseTo(priceOf('gpt-4o-mini', completion.usage?.prompt_tokens ?? 0, 5), 12);

    const streamed = await g.charged(async () => {
      let text = '';
      let finish: string | null = null;
      for await (const chunk of await client().completions.create({ model: 'gpt-4o-mini', prompt: 'Say hello', stream: true })) {
        text += chunk.choices[0]?.text ?? '';
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      return { text, finish };
    });
    expect(streamed.result).toEqual({ text: MOCK_ANSWER, finish: 'stop' });
    expect(streamed.cost).toBeCloseTo(priceOf('gpt-4o-mini', completion.usage?.prompt_tokens ?? 0, 12), 12);
  });

  it('responses.create: output_text, status completed, charged the price of its input and output tokens', async () => {
    const { result: response, cost } = await g.charged(() => client().responses.create({ model: 'gpt-4o-mini', input: 'Say hello' }));
    expect(response.output_text).toBe(MOCK_ANSWER);
    expect(response).toMatchObject({ object: 'response', status: 'completed', incomplete_details: null });
    expect(response.usage).toMatchObject({ output_tokens: 12 });
    expect(cost).toBeGreaterThan(0);
    expect(cost).toBeCloseTo(priceOf('gpt-4o-mini', response.usage?.input_tokens ?? 0, 12), 12);
  });

  it('responses.create with max_output_tokens: status incomplete for that reason, the cut answer charged', async () => {
    const { result: response, cost } = await g.charged(() =>
      client().responses.create({ model: 'gpt-4o-mini', input: 'Say hello', max_output_tokens: 2 }),
    );
    expect(response.output_text).toBe(firstTokens(2));
    expect(response).toMatchObject({ status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' } });
    expect(cost).toBeCloseTo(priceOf('gpt-4o-mini', response.usage?.input_tokens ?? 0, 2), 12);
  });

  it('responses.stream: typed events the SDK assembles into the final response, usage in response.completed', async () => {
    const { result, cost } = await g.charged(async () => {
      const stream = client().responses.stream({ model: 'gpt-4o-mini', input: 'Say hello' });
      const types: string[] = [];
      let text = '';
      for await (const event of stream) {
        types.push(event.type);
        if (event.type === 'response.output_text.delta') text += event.delta;
      }
      return { types, text, final: await stream.finalResponse() };
    });
    expect([...new Set(result.types)]).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.delta',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(result.text).toBe(MOCK_ANSWER);
    expect(result.final.output_text).toBe(MOCK_ANSWER);
    expect(result.final.usage?.output_tokens).toBe(12);
    expect(cost).toBeGreaterThan(0);
    expect(cost).toBeCloseTo(priceOf('gpt-4o-mini', result.final.usage?.input_tokens ?? 0, 12), 12);
  });

  it('responses.create streamed with max_output_tokens ends in response.incomplete with the usage charged', async () => {
    const { result: events, cost } = await g.charged(async () => {
      const seen: OpenAI.Responses.ResponseStreamEvent[] = [];
      const stream = await client().responses.create({ model: 'gpt-4o-mini', input: 'Say hello', max_output_tokens: 1, stream: true });
      for await (const event of stream) seen.push(event);
      return seen;
    });
    const last = events.at(-1);
    if (last?.type !== 'response.incomplete') throw new Error(`the stream ended with ${last?.type}`);
    expect(last.response).toMatchObject({ status: 'incomplete', incomplete_details: { reason: 'max_output_tokens' } });
    expect(last.response.usage?.output_tokens).toBe(1);
    expect(events.map((e) => e.sequence_number)).toEqual(events.map((_, i) => i));
    expect(cost).toBeCloseTo(priceOf('gpt-4o-mini', last.response.usage?.input_tokens ?? 0, 1), 12);
  });

  it('embeddings.create: the SDK default (base64) and float give the same unit vectors of the model dimension, charged', async () => {
    const input = ['first text', 'second text'];
    sentBodies.length = 0;
    const { result: base64, cost } = await g.charged(() => client().embeddings.create({ model: 'text-embedding-3-small', input }));
    expect(sentBodies).toEqual([{ model: 'text-embedding-3-small', input, encoding_format: 'base64' }]);
    expect(base64.data.map((d) => [d.index, d.embedding.length])).toEqual([
      [0, EMBEDDING_DIMENSIONS['text-embedding-3-small']],
      [1, 1536],
    ]);
    for (const { embedding } of base64.data) expect(norm(embedding)).toBeCloseTo(1, 5);
    expect(cost).toBeGreaterThan(0);
    expect(cost).toBeCloseTo(priceOf('text-embedding-3-small', base64.usage.prompt_tokens, 0), 12);

    const float = await client().embeddings.create({ model: 'text-embedding-3-small', input, encoding_format: 'float' });
    // float32 in both: the base64 bytes are the float values exactly.
    expect(float.data.map((d) => d.embedding)).toEqual(base64.data.map((d) => d.embedding));
    expect(base64.data[0]?.embedding).not.toEqual(base64.data[1]?.embedding);
  });

  it('embeddings.create honours dimensions, and takes token arrays (one embedding per input)', async () => {
    const short = await client().embeddings.create({ model: 'text-embedding-3-small', input: 'first text', dimensions: 256 });
    expect(short.data[0]?.embedding).toHaveLength(256);
    expect(norm(short.data[0]?.embedding ?? [])).toBeCloseTo(1, 5);
    const tokens = await client().embeddings.create({
      model: 'text-embedding-3-small',
      input: [
        [1, 2, 3],
        [4, 5],
      ],
    });
    expect(tokens.data.map((d) => d.embedding.length)).toEqual([1536, 1536]);
    expect(tokens.usage).toEqual({ prompt_tokens: 5, total_tokens: 5 });
  });

  it('raises AuthenticationError for an unknown key', async () => {
    const error = await rejection(client(g.refusals.unknownKey).chat.completions.create({ model: 'gpt-4o-mini', messages }));
    expect(error).toBeInstanceOf(AuthenticationError);
    expect(error).toMatchObject({ status: 401, code: 'invalid_api_key', type: 'authentication_error' });
    expect(error.headers?.get('www-authenticate')).toBe('Bearer realm="modelswitch", error="invalid_token"');
  });

  it('raises APIError 402 for an account without balance, and does not retry it (x-should-retry: false)', async () => {
    const before = g.requests();
    const error = await rejection(client(g.refusals.noBalanceKey, 2).chat.completions.create({ model: 'gpt-4o-mini', messages }));
    expect(error.constructor).toBe(APIError);
    expect(error).toMatchObject({ status: 402, code: 'insufficient_balance', type: 'billing_error' });
    expect(error.headers?.get('x-should-retry')).toBe('false');
    expect(g.requests() - before).toBe(1);
  });

  it('raises PermissionDeniedError at the spend limit, and does not retry it (x-should-retry: false)', async () => {
    const before = g.requests();
    const error = await rejection(client(g.refusals.spendLimitKey, 2).responses.create({ model: 'gpt-4o-mini', input: 'Hi' }));
    expect(error).toBeInstanceOf(PermissionDeniedError);
    expect(error).toMatchObject({ status: 403, code: 'spend_limit_reached', type: 'permission_error' });
    expect(error.headers?.get('x-should-retry')).toBe('false');
    expect(g.requests() - before).toBe(1);
  });

  it('raises NotFoundError for a model no upstream serves', async () => {
    const error = await rejection(client().embeddings.create({ model: g.refusals.unknownModel, input: 'Hi' }));
    expect(error).toBeInstanceOf(NotFoundError);
    expect(error).toMatchObject({ status: 404, code: 'model_not_found', type: 'not_found_error', param: 'model' });
  });

  it('raises RateLimitError over the key rate limit, with the Retry-After its retry logic waits for', async () => {
    const error = await rejection(g.rateLimited((key) => client(key).chat.completions.create({ model: 'gpt-4o-mini', messages })));
    expect(error).toBeInstanceOf(RateLimitError);
    expect(error).toMatchObject({ status: 429, code: 'rate_limit_exceeded', type: 'rate_limit_error' });
    const retryAfter = Number(error.headers?.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(error.headers?.get('x-should-retry')).toBeNull();
  });
});
