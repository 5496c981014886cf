import { afterEach, describe, expect, it } from 'vitest';
import { type Gateway, KEY_IN_BODY, KEY_IN_URL, chat, post, startGateway } from './harness.js';

let gateway: Gateway;
afterEach(async () => {
  await gateway?.close();
});

const ANY_KEY = /m[sk]-[0-9A-Za-z]{38}/;

async function get(path: string): Promise<{ status: number; headers: Headers; body: unknown }> {
  const res = await fetch(gateway.url + path, { headers: { authorization: `Bearer ${gateway.proxyKey}` } });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

describe('proxyRouter routing', () => {
  it('forwards a chat completion to the upstream serving the model and answers its JSON', async () => {
    gateway = await startGateway();
    const res = await post(gateway, '/chat/completions', chat());
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(JSON.parse(res.text)).toEqual({
      id: 'chatcmpl-mock',
      object: 'chat.completion',
      created: 1_700_000_000,
      model: 'mock-model',
      choices: [{ index: 0, message: { role: 'assistant', content: 'Hello world', refusal: null }, logprobs: null, finish_reason: 'stop' }],
      usage: { prompt_tokens: 12, completion_tokens: 8, total_tokens: 20 },
    });
    expect(gateway.upstream.requests).toHaveLength(1);
    expect(gateway.upstream.requests[0]).toMatchObject({ method: 'POST', url: '/v1/chat/completions' });
    // With the output cap that was reserved (defaultMaxTokens: 100), as the client set none.
    expect(JSON.parse(gateway.upstream.requests[0]?.body ?? '')).toEqual(chat({ max_tokens: 100 }));
  });

  it('routes a model matched by a RegExp pattern', async () => {
    gateway = await startGateway();
    const res = await post(gateway, '/chat/completions', chat({ model: 'mock-family-a' }));
    expect(res.status).toBe(200);
    expect(JSON.parse(gateway.upstream.requests[0]?.body ?? '').model).toBe('mock-family-a');
  });

  it('answers 404 model_not_found for an unknown model without calling any upstream', async () => {
    gateway = await startGateway();
    const res = await post(gateway, '/chat/completions', chat({ model: 'gpt-nonexistent' }));
    expect(res.status).toBe(404);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(JSON.parse(res.text)).toEqual({
      error: {
        message: "The model 'gpt-nonexistent' does not exist or is not served by this gateway.",
        type: 'not_found_error',
        code: 'model_not_found',
        param: 'model',
      },
    });
    expect(gateway.upstream.requests).toEqual([]);
  });

  it('refuses a served model without a price (404) before any upstream call', async () => {
    gateway = await startGateway();
    const res = await post(gateway, '/chat/completions', chat({ model: 'mock-unpriced' }));
    expect(res.status).toBe(404);
    expect(JSON.parse(res.text)).toEqual({
      error: {
        message: "The model 'mock-unpriced' has no price configured on this gateway, so it cannot be metered.",
        type: 'not_found_error',
        code: 'model_not_found',
        param: 'model',
      },
    });
    expect(gateway.upstream.requests).toEqual([]);
  });

  it('serves an unpriced model free of charge when the host opts in', async () => {
    gateway = await startGateway({ proxy: { allowUnpricedModels: true } });
    const res = await post(gateway, '/chat/completions', chat({ model: 'mock-unpriced' }));
    expect(res.status).toBe(200);
    expect(await gateway.store.getAccount(gateway.account.id)).toMatchObject({ balance: 10, reserved: 0 });
  });

  it('lists the priced exact model names in OpenAI format at GET /v1/models', async () => {
    gateway = await startGateway();
    const res = await get('/models');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/json');
    expect(res.body).toEqual({ object: 'list', data: [{ id: 'mock-model', object: 'model', created: 0, owned_by: 'mock' }] });
    expect(await get('/models/mock-model')).toMatchObject({
      status: 200,
      body: { id: 'mock-model', object: 'model', created: 0, owned_by: 'mock' },
    });
    expect(await get('/models/nope')).toMatchObject({ status: 404, body: { error: { code: 'model_not_found' } } });
    expect(gateway.upstream.requests).toEqual([]);
  });

  it('lists unpriced models too when the host opts in', async () => {
    gateway = await startGateway({ proxy: { allowUnpricedModels: true } });
    const res = await get('/models');
    expect(res.body).toEqual({
      object: 'list',
      data: [
        { id: 'mock-model', object: 'model', created: 0, owned_by: 'mock' },
        { id: 'mock-unpriced', object: 'model', created: 0, owned_by: 'mock' },
      ],
    });
  });

  it('answers GET /v1/auth/key with the key info', async () => {
    gateway = await startGateway();
    expect(await get('/auth/key')).toMatchObject({
      status: 200,
      body: {
        data: {
          label: 'My Production Key',
          usage: 0,
          limit: 10,
          is_free_tier: false,
          rate_limit: { requests: 1000, interval: '10s' },
          key_limit: null,
          key_limit_remaining: null,
          limit_reset: null,
          expires_at: null,
          models: null,
        },
      },
    });
  });

  it('answers 400 invalid_request for a body without a model', async () => {
    gateway = await startGateway();
    const res = await post(gateway, '/chat/completions', { messages: [] });
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toEqual({
      error: { message: 'model is required and must be a string', type: 'invalid_request_error', code: 'invalid_request', param: 'model' },
    });
    expect(gateway.upstream.requests).toEqual([]);
  });
});

describe('proxyRouter credentials', () => {
  it('never sends an ms- or mk- value upstream in any header, the URL or the body', async () => {
    gateway = await startGateway();
    const res = await post(gateway, '/chat/completions?trace=1', chat(), {
      'x-api-key': gateway.proxyKey,
      'x-billing': `Bearer ${gateway.billingKey}`,
      cookie: `session=${gateway.proxyKey}`,
      'openai-organization': 'org-client',
    });
    expect(res.status).toBe(200);
    const seen = gateway.upstream.requests[0];
    expect(seen).toBeDefined();
    expect(seen?.url).toBe('/v1/chat/completions?trace=1');
    expect(seen?.rawHeaders.join('\n')).not.toMatch(ANY_KEY);
    expect(seen?.rawHeaders.join('\n')).not.toMatch(/m[sk]-/);
    expect(seen?.body).not.toMatch(/m[sk]-/);
    expect(seen?.headers.authorization).toBe('Bearer sk-upstream-secret');
    expect(seen?.headers.cookie).toBeUndefined();
    expect(seen?.headers['openai-organization']).toBeUndefined();
  });

  it('drops a header holding a percent-encoded key (once or twice), and keeps the others', async () => {
    gateway = await startGateway();
    const once = gateway.billingKey.replace('-', '%2D');
    const res = await post(gateway, '/chat/completions', chat(), {
      'x-correlation-id': once,
      'x-trace': `t=${once.replace('%', '%25')}`,
      'x-client': 'my-app 100%',
    });
    expect(res.status).toBe(200);
    const seen = gateway.upstream.requests[0];
    expect({ correlation: seen?.headers['x-correlation-id'], trace: seen?.headers['x-trace'], client: seen?.headers['x-client'] }).toEqual({
      correlation: undefined,
      trace: undefined,
      client: 'my-app 100%',
    });
  });

  it('never sends a key upstream in the URL path or a query parameter name: 400 before any upstream call', async () => {
    gateway = await startGateway();
    for (const path of [
      `/chat/completions/${gateway.proxyKey}`,
      `/chat/completions?${gateway.billingKey}=1`,
      `/chat/completions?trace=1&${gateway.proxyKey}`,
    ]) {
      const res = await post(gateway, path, chat());
      expect(res.status).toBe(400);
      expect(JSON.parse(res.text)).toEqual(KEY_IN_URL);
    }
    expect(gateway.upstream.requests).toEqual([]);
  });

  it('refuses (400) a body that contains a ModelSwitch key, so it never reaches a provider', async () => {
    gateway = await startGateway();
    const res = await post(gateway, '/chat/completions', chat({ messages: [{ role: 'user', content: `my key is ${gateway.proxyKey}` }] }));
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toEqual(KEY_IN_BODY);
    expect(gateway.upstream.requests).toEqual([]);
  });
});
