import { afterEach, describe, expect, it } from 'vitest';
import { type Gateway, chat, deferred, post, startGateway } from './harness.js';

let gateway: Gateway;
afterEach(async () => {
  await gateway?.close();
});

/** The exact SSE body the mock sends for a stream without include_usage: what the client asked for. */
function expectedStream(): string {
  const base = { id: 'chatcmpl-mock', object: 'chat.completion.chunk', created: 1_700_000_000, model: 'mock-model' };
  const event = (delta: Record<string, unknown>, finish: string | null) =>
    `data: ${JSON.stringify({ ...base, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] })}\n\n`;
  return `${event({ role: 'assistant', content: '' }, null)}${event({ content: 'Hello' }, null)}${event({ content: ' world' }, null)}${event({}, 'stop')}data: [DONE]\n\n`;
}

async function firstEventWhileHeld(withCompression: boolean): Promise<void> {
  gateway = await startGateway({ compression: withCompression });
  const hold = deferred();
  gateway.upstream.behaviour = { holdAfterFirstChunk: hold.promise };
  const res = await fetch(`${gateway.url}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json', 'accept-encoding': 'gzip, deflate' },
    body: JSON.stringify(chat({ stream: true })),
  });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toBe('text/event-stream');
  expect(res.headers.get('cache-control')).toBe('no-cache, no-transform');
  expect(res.headers.get('content-encoding')).toBeNull();
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let received = '';
  while (!received.includes('\n\n')) {
    const { value, done } = await reader.read();
    if (done) break;
    received += decoder.decode(value, { stream: true });
  }
  // The upstream is still holding every later chunk: this arrived without buffering.
  expect(received).toBe(`${expectedStream().split('\n\n')[0]}\n\n`);
  hold.resolve();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    received += decoder.decode(value, { stream: true });
  }
  expect(received).toBe(expectedStream());
}

describe('proxyRouter streaming', () => {
  it('passes the first SSE chunk to the client while the upstream still holds the rest', async () => {
    await firstEventWhileHeld(false);
  });

  it('does not buffer SSE behind compression() mounted in the host app', async () => {
    await firstEventWhileHeld(true);
  });

  it('asks the upstream for usage, meters the final chunk and strips it from what the client sees', async () => {
    gateway = await startGateway();
    const res = await post(gateway, '/chat/completions', chat({ stream: true }));
    expect(res.status).toBe(200);
    expect(res.text).toBe(expectedStream());
    const sent = JSON.parse(gateway.upstream.requests[0]?.body ?? '');
    expect(sent).toEqual({ ...chat({ stream: true }), stream_options: { include_usage: true }, max_tokens: 100 });
    // 12 prompt tokens at $1000/M + 8 completion tokens at $2000/M.
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.028, reserved: 0 });
    expect(await gateway.store.getAccount(gateway.account.id)).toMatchObject({ balance: 9.972, reserved: 0 });
  });

  it('passes the usage chunk through when the client asked for it itself', async () => {
    gateway = await startGateway();
    const res = await post(gateway, '/chat/completions', chat({ stream: true, stream_options: { include_usage: true } }));
    expect(res.status).toBe(200);
    const events = res.text.split('\n\n').filter(Boolean);
    expect(events).toHaveLength(6);
    expect(JSON.parse(events[4]?.slice('data: '.length) ?? '')).toEqual({
      id: 'chatcmpl-mock',
      object: 'chat.completion.chunk',
      created: 1_700_000_000,
      model: 'mock-model',
      choices: [],
      usage: { prompt_tokens: 12, completion_tokens: 8, total_tokens: 20 },
    });
    expect(JSON.parse(events[0]?.slice('data: '.length) ?? '').usage).toBeNull();
    expect(events[5]).toBe('data: [DONE]');
    expect(await gateway.store.getKey(gateway.proxyKeyId)).toMatchObject({ usage: 0.028, reserved: 0 });
  });
});
