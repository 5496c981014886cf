import OpenAI, { APIError, AuthenticationError, NotFoundError, PermissionDeniedError, RateLimitError } from 'openai';
import { afterEach, describe, expect, it } from 'vitest';
import { type Gateway, startGateway } from './harness.js';

let gateway: Gateway;
afterEach(async () => {
  await gateway?.close();
});

function client(apiKey = gateway.proxyKey, maxRetries = 2): OpenAI {
  return new OpenAI({ apiKey, baseURL: gateway.url, maxRetries });
}

const messages = [{ role: 'user' as const, content: 'Say hello' }];

/** How many /v1 requests the key made in this 10 s window (the auth rate-limit counter; the clock stands still). */
async function requestsMade(): Promise<number> {
  return (await gateway.store.hitCounter(`requests:${gateway.proxyKeyId}:10000`, 10_000, gateway.clock.now(), 0)).count;
}

async function rejection(promise: Promise<unknown>): Promise<APIError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof APIError) return error;
    throw error;
  }
  throw new Error('expected the SDK call to fail');
}

describe('the official openai SDK against the gateway', () => {
  it('gets a normal completion with usage', async () => {
    gateway = await startGateway();
    const completion = await client().chat.completions.create({ model: 'mock-model', messages });
    expect(completion.choices[0]?.message.content).toBe('Hello world');
    expect(completion.usage).toEqual({ prompt_tokens: 12, completion_tokens: 8, total_tokens: 20 });
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.028, reserved: 0 });
  });

  it('streams a completion without the usage chunk it did not ask for, and the stream is metered', async () => {
    gateway = await startGateway();
    const stream = await client().chat.completions.create({ model: 'mock-model', messages, stream: true });
    let text = '';
    const choiceCounts: number[] = [];
    for await (const chunk of stream) {
      choiceCounts.push(chunk.choices.length);
      text += chunk.choices[0]?.delta.content ?? '';
    }
    expect(text).toBe('Hello world');
    expect(choiceCounts).toEqual([1, 1, 1, 1]);
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.028, reserved: 0 });
  });

  it('streams the usage chunk when asked for it', async () => {
    gateway = await startGateway();
    const stream = await client().chat.completions.create({
      model: 'mock-model',
      messages,
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: unknown;
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
    expect(usage).toEqual({ prompt_tokens: 12, completion_tokens: 8, total_tokens: 20 });
  });

  it('raises AuthenticationError with our message for an unknown key', async () => {
    gateway = await startGateway();
    const unknownKey = `ms-${'A'.repeat(38)}`;
    const error = await rejection(client(unknownKey).chat.completions.create({ model: 'mock-model', messages }));
    expect(error).toBeInstanceOf(AuthenticationError);
    expect(error).toMatchObject({ status: 401, code: 'invalid_api_key', type: 'authentication_error', message: '401 Invalid API key' });
  });

  it('raises PermissionDeniedError at the spend limit, without retrying', async () => {
    gateway = await startGateway();
    await gateway.store.updateKey(gateway.proxyKeyId, { limit: 0, limitReset: null });
    const error = await rejection(client().chat.completions.create({ model: 'mock-model', messages }));
    expect(error).toBeInstanceOf(PermissionDeniedError);
    expect(error).toMatchObject({
      status: 403,
      code: 'spend_limit_reached',
      type: 'permission_error',
      message: '403 This key has reached its spend limit of $0.',
    });
    expect(await requestsMade()).toBe(1);
  });

  it('raises a plain APIError with status 402 for an empty balance, without retrying', async () => {
    gateway = await startGateway({ balance: 0 });
    const error = await rejection(client().chat.completions.create({ model: 'mock-model', messages }));
    expect(error.constructor).toBe(APIError);
    expect(error).toMatchObject({
      status: 402,
      code: 'insufficient_balance',
      type: 'billing_error',
      message: '402 Insufficient balance. Add credits to your account to continue.',
    });
    expect(await requestsMade()).toBe(1);
  });

  it('raises RateLimitError over the request rate limit', async () => {
    gateway = await startGateway();
    await gateway.store.updateKey(gateway.proxyKeyId, { rateLimit: { requests: 1, interval: '1m' } });
    await client(gateway.proxyKey, 0).chat.completions.create({ model: 'mock-model', messages });
    const error = await rejection(client(gateway.proxyKey, 0).chat.completions.create({ model: 'mock-model', messages }));
    expect(error).toBeInstanceOf(RateLimitError);
    expect(error).toMatchObject({ status: 429, code: 'rate_limit_exceeded', type: 'rate_limit_error' });
    expect(error.message).toMatch(/^429 Rate limit exceeded: 1 requests per 1m for this key/);
  });

  it('raises NotFoundError for a model no upstream serves', async () => {
    gateway = await startGateway();
    const error = await rejection(client().chat.completions.create({ model: 'gpt-unknown', messages }));
    expect(error).toBeInstanceOf(NotFoundError);
    expect(error).toMatchObject({
      status: 404,
      code: 'model_not_found',
      message: "404 The model 'gpt-unknown' does not exist or is not served by this gateway.",
    });
  });

  it('lists the models', async () => {
    gateway = await startGateway();
    const ids: string[] = [];
    for await (const model of client().models.list()) ids.push(model.id);
    expect(ids).toEqual(['mock-model']);
  });
});
