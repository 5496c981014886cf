import { afterEach, describe, expect, it } from 'vitest';
import { type Gateway, chat, post, startGateway } from './harness.js';

let gateway: Gateway;
afterEach(async () => {
  await gateway?.close();
});

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
    expect(JSON.parse(gateway.upstream.requests[0]?.body ?? '')).toEqual(chat());
  });
});
