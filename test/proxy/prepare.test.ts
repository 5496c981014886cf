import { describe, expect, it } from 'vitest';
import { generateApiKey } from '../../src/keys/api-key.js';
import { resolveProxyOptions } from '../../src/proxy/options.js';
import { type Preparation, type RefusedRequest, prepare } from '../../src/proxy/prepare.js';
import { testClock } from '../helpers.js';
import { resolvedOptions, sampleContext } from './exchange-fixtures.js';
import { MOCK_PRICE } from './harness.js';

const START = Date.parse('2026-11-22T12:00:00Z');

/** Prepares `value` (sent as its own JSON unless `raw` says otherwise) as the router would, with the mock options. */
function prepareBody(value: unknown, path = '/chat/completions', options = resolvedOptions, raw?: string): Preparation {
  const bytes = Buffer.from(raw ?? JSON.stringify(value) ?? '');
  return prepare({ raw: bytes, value }, path, options, sampleContext(), testClock().now);
}

function chat(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { model: 'mock-model', messages: [{ role: 'user', content: 'Say hello' }], ...extra };
}

/** The refusal as the client would get it: status, JSON body, and the host-bug line if any. */
function refusal(preparation: Preparation): { status: number; body: unknown; hostBug: string | undefined } {
  expect(preparation.ok).toBe(false);
  const { error, hostBug } = preparation as RefusedRequest;
  return { status: error.status, body: error.toJSON(), hostBug };
}

describe('prepare', () => {
  it('answers the model, upstream, price, body to send and the reservation of a chat completion', () => {
    const prepared = prepareBody(chat());
    expect(prepared).toEqual({
      ok: true,
      model: 'mock-model',
      upstream: resolvedOptions.upstreams[0],
      price: MOCK_PRICE,
      // The client set no output cap: the 100 reserved are sent as its cap (max_tokens, as mock-model is not OpenAI's).
      body: Buffer.from(JSON.stringify(chat({ max_tokens: 100 }))),
      stripUsageChunk: false,
      // 12 estimated prompt tokens and the default 100 output tokens, at $1000 and $2000 per million.
      reserved: 0.212,
      output: { tokens: 100, enforcedField: 'max_tokens' },
      period: '2026-11-22',
      at: START,
    });
  });

  it('reserves the largest output cap times n choices', () => {
    const prepared = prepareBody(chat({ max_tokens: 10, max_completion_tokens: 20, n: 3 }));
    expect(prepared).toMatchObject({ ok: true, reserved: (12 * 1000 + 60 * 2000) / 1e6 });
  });

  it('reserves no output tokens for embeddings', () => {
    expect(prepareBody({ model: 'mock-model', input: 'Hi' }, '/embeddings')).toMatchObject({ ok: true, reserved: 0.012 });
  });

  it('charges an unpriced model nothing when the host serves them', () => {
    expect(prepareBody(chat({ model: 'mock-unpriced' }))).toMatchObject({ ok: true, price: undefined, reserved: 0 });
  });

  it('takes the period from the key: none for a key without a reset', () => {
    const prepared = prepare(
      { raw: Buffer.from(JSON.stringify(chat())), value: chat() },
      '/chat/completions',
      resolvedOptions,
      sampleContext({ limitReset: null }),
      testClock().now,
    );
    expect(prepared).toMatchObject({ ok: true, period: null });
  });

  it('asks for stream usage on the client behalf on /chat/completions, and notes the chunk is not theirs', () => {
    const prepared = prepareBody(chat({ stream: true, stream_options: { other: 1 } }));
    expect(prepared).toMatchObject({ ok: true, stripUsageChunk: true });
    expect(JSON.parse((prepared as { body: Buffer }).body.toString('utf8'))).toEqual(
      chat({ stream: true, stream_options: { other: 1, include_usage: true }, max_tokens: 100 }),
    );
  });

  it('leaves the body alone when the client asked for stream usage itself, or on /responses', () => {
    const asked = chat({ stream: true, stream_options: { include_usage: true }, max_tokens: 5 });
    expect(prepareBody(asked)).toMatchObject({ ok: true, stripUsageChunk: false, body: Buffer.from(JSON.stringify(asked)) });
    const responses = { model: 'mock-model', input: 'Hi', stream: true, max_output_tokens: 5 };
    expect(prepareBody(responses, '/responses')).toMatchObject({
      ok: true,
      stripUsageChunk: false,
      body: Buffer.from(JSON.stringify(responses)),
    });
  });

  it('sends the parsed body it priced, not raw bytes with a second "model"', () => {
    const raw = '{"model":"mock-family-b","messages":[],"model":"mock-model"}';
    expect(prepareBody(JSON.parse(raw), '/chat/completions', resolvedOptions, raw)).toMatchObject({
      ok: true,
      model: 'mock-model',
      body: Buffer.from('{"model":"mock-model","messages":[],"max_tokens":100}'),
    });
  });

  it.each([
    ['an array', [], 'Request body must be a JSON object', 'body'],
    ['an empty body', undefined, 'Request body must be a JSON object', 'body'],
    ['no model', { messages: [] }, 'model is required and must be a string', 'model'],
    ['an empty model', { model: '' }, 'model is required and must be a string', 'model'],
    ['max_tokens 0', chat({ max_tokens: 0 }), 'max_tokens must be an integer from 1 to 1000000', 'max_tokens'],
    ['n 129', chat({ n: 129 }), 'n must be an integer from 1 to 128', 'n'],
  ])('refuses %s with 400 invalid_request', (_case, value, message, param) => {
    expect(refusal(prepareBody(value))).toEqual({
      status: 400,
      body: { error: { message, type: 'invalid_request_error', code: 'invalid_request', param } },
      hostBug: undefined,
    });
  });

  it('refuses a body holding a ModelSwitch key, also behind JSON escapes', () => {
    const key = generateApiKey('proxy').value;
    const expected = {
      status: 400,
      body: {
        error: {
          message: 'The request body contains a ModelSwitch API key; remove it (keys are never sent to providers)',
          type: 'invalid_request_error',
          code: 'invalid_request',
        },
      },
      hostBug: undefined,
    };
    expect(refusal(prepareBody(chat({ user: key })))).toEqual(expected);
    const escaped = `{"model":"mock-model","user":"\\u006D${key.slice(1)}"}`;
    expect(refusal(prepareBody(JSON.parse(escaped), '/chat/completions', resolvedOptions, escaped))).toEqual(expected);
  });

  it.each([
    ['no upstream serves', 'gpt-unknown', "The model 'gpt-unknown' does not exist or is not served by this gateway."],
    [
      'has no price while unpriced models are refused',
      'mock-unpriced',
      "The model 'mock-unpriced' has no price configured on this gateway, so it cannot be metered.",
    ],
  ])('refuses a model that %s with 404 model_not_found', (_case, model, message) => {
    const options = { ...resolvedOptions, allowUnpricedModels: false };
    expect(refusal(prepareBody(chat({ model }), '/chat/completions', options))).toEqual({
      status: 404,
      body: { error: { message, type: 'not_found_error', code: 'model_not_found', param: 'model' } },
      hostBug: undefined,
    });
  });

  // A host bug is a 500, not a store outage (it was a 503 store_unavailable, which clients wait out as a passing one).
  const internal = {
    error: {
      message: 'The server could not handle this request. Please retry; if it persists, contact the operator.',
      type: 'api_error',
      code: 'internal_error',
    },
  };

  it('refuses with 500 and a host-bug line when the estimate is not a finite number ≥ 0', () => {
    const options = { ...resolvedOptions, estimatePromptTokens: () => Number.NaN };
    expect(refusal(prepareBody(chat(), '/chat/completions', options))).toEqual({
      status: 500,
      body: internal,
      hostBug:
        'modelswitch-keys: options.estimatePromptTokens returned NaN for model mock-model; it must return a finite number ≥ 0 (request refused)',
    });
  });

  it('refuses with 500 and a host-bug line when the reservation is not finite', () => {
    const options = resolveProxyOptions({
      upstreams: [{ name: 'mock', target: 'http://127.0.0.1:9/v1', models: ['mock-model'] }],
      pricing: () => ({ inputPerMillion: 1e308, outputPerMillion: 1e308 }),
    });
    expect(refusal(prepareBody(chat(), '/chat/completions', options))).toEqual({
      status: 500,
      body: internal,
      hostBug: 'modelswitch-keys: the reservation for model mock-model came to Infinity USD; check its price (request refused)',
    });
  });
});
