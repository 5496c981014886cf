import { afterEach, describe, expect, it } from 'vitest';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';
import type { SpendReservation } from '../../src/store/types.js';
import { type Gateway, type GatewayOptions, chat, post, startGateway } from './harness.js';

let gateway: Gateway;
afterEach(async () => {
  await gateway?.close();
});

/** A gateway whose proxy key may call only `models`, counting the store's spend reservations. */
async function gatewayAllowing(models: string[] | null, options: GatewayOptions = {}) {
  const store = new MemoryKeyStore();
  const reservations: SpendReservation[] = [];
  const reserve = store.reserveSpend.bind(store);
  store.reserveSpend = (reservation) => {
    reservations.push(reservation);
    return reserve(reservation);
  };
  gateway = await startGateway({ ...options, store });
  await store.updateKey(gateway.proxyKeyId, { models });
  return { store, reservations };
}

function notAllowed(model: string) {
  return {
    error: {
      message: `This API key is not allowed to use the model '${model}'.`,
      type: 'permission_error',
      code: 'model_not_allowed',
      param: 'model',
    },
  };
}

async function get(path: string): Promise<{ status: number; body: unknown }> {
  const res = await fetch(gateway.url + path, { headers: { authorization: `Bearer ${gateway.proxyKey}` } });
  return { status: res.status, body: await res.json() };
}

describe("a key's allowed models", () => {
  it('lets an exactly named model through and refuses another with 403 model_not_allowed before any reservation or upstream call', async () => {
    const { store, reservations } = await gatewayAllowing(['mock-model']);
    const allowed = await post(gateway, '/chat/completions', chat());
    expect(allowed.status).toBe(200);
    expect(reservations).toHaveLength(1);
    const refused = await post(gateway, '/chat/completions', chat({ model: 'mock-family-a' }));
    expect({ status: refused.status, type: refused.headers.get('content-type'), body: JSON.parse(refused.text) }).toEqual({
      status: 403,
      type: 'application/json',
      body: notAllowed('mock-family-a'),
    });
    expect(reservations).toHaveLength(1);
    expect(gateway.upstream.requests).toHaveLength(1);
    // An exact name is not a prefix: a longer name that starts with it is refused too.
    expect((await post(gateway, '/chat/completions', chat({ model: 'mock-model-2' }))).status).toBe(403);
    expect((await store.getKey(gateway.proxyKeyId))?.reserved).toBe(0);
  });

  it('lets every model starting with a prefix entry through, and no other', async () => {
    const { reservations } = await gatewayAllowing(['mock-family-*']);
    const allowed = await post(gateway, '/chat/completions', chat({ model: 'mock-family-a' }));
    expect(allowed.status).toBe(200);
    const refused = await post(gateway, '/chat/completions', chat({ model: 'mock-model' }));
    expect({ status: refused.status, body: JSON.parse(refused.text) }).toEqual({ status: 403, body: notAllowed('mock-model') });
    expect(reservations).toHaveLength(1);
    expect(gateway.upstream.requests.map((r) => JSON.parse(r.body).model)).toEqual(['mock-family-a']);
  });

  it('answers 403 for an unknown model outside the list (the key learns nothing of what is served) and 404 for one inside it', async () => {
    await gatewayAllowing(['mock-model', 'gpt-*']);
    const outside = await post(gateway, '/chat/completions', chat({ model: 'claude-nonexistent' }));
    expect({ status: outside.status, body: JSON.parse(outside.text) }).toEqual({ status: 403, body: notAllowed('claude-nonexistent') });
    const inside = await post(gateway, '/chat/completions', chat({ model: 'gpt-nonexistent' }));
    expect({ status: inside.status, body: JSON.parse(inside.text) }).toEqual({
      status: 404,
      body: {
        error: {
          message: "The model 'gpt-nonexistent' does not exist or is not served by this gateway.",
          type: 'not_found_error',
          code: 'model_not_found',
          param: 'model',
        },
      },
    });
    expect(gateway.upstream.requests).toEqual([]);
  });

  it('refuses a streaming request for a model outside the list with the JSON 403, never opening a stream', async () => {
    const { reservations } = await gatewayAllowing(['mock-model']);
    const refused = await post(gateway, '/chat/completions', chat({ model: 'mock-family-a', stream: true }));
    expect({ status: refused.status, type: refused.headers.get('content-type'), body: JSON.parse(refused.text) }).toEqual({
      status: 403,
      type: 'application/json',
      body: notAllowed('mock-family-a'),
    });
    expect(reservations).toEqual([]);
    expect(gateway.upstream.requests).toEqual([]);
    const streamed = await post(gateway, '/chat/completions', chat({ stream: true }));
    expect(streamed.status).toBe(200);
    expect(streamed.headers.get('content-type')).toBe('text/event-stream');
    expect(streamed.text).toContain('data: [DONE]');
  });

  it('applies to every proxied path (embeddings too)', async () => {
    await gatewayAllowing(['mock-model']);
    const refused = await post(gateway, '/embeddings', { model: 'mock-family-a', input: 'hello' });
    expect({ status: refused.status, body: JSON.parse(refused.text) }).toEqual({ status: 403, body: notAllowed('mock-family-a') });
    expect(gateway.upstream.requests).toEqual([]);
  });

  it('lists only the allowed models on GET /v1/models, and answers 404 for another one by id', async () => {
    await gatewayAllowing(['mock-unpriced'], { proxy: { allowUnpricedModels: true } });
    expect(await get('/models')).toEqual({
      status: 200,
      body: { object: 'list', data: [{ id: 'mock-unpriced', object: 'model', created: 0, owned_by: 'mock' }] },
    });
    expect(await get('/models/mock-unpriced')).toEqual({
      status: 200,
      body: { id: 'mock-unpriced', object: 'model', created: 0, owned_by: 'mock' },
    });
    expect(await get('/models/mock-model')).toEqual({
      status: 404,
      body: {
        error: {
          message: "The model 'mock-model' does not exist or is not served by this gateway.",
          type: 'not_found_error',
          code: 'model_not_found',
          param: 'model',
        },
      },
    });
  });

  it('lists every served model for a key without a list (null), and a prefix entry lists what it matches', async () => {
    const { store } = await gatewayAllowing(null, { proxy: { allowUnpricedModels: true } });
    expect(await get('/models')).toEqual({
      status: 200,
      body: {
        object: 'list',
        data: [
          { id: 'mock-model', object: 'model', created: 0, owned_by: 'mock' },
          { id: 'mock-unpriced', object: 'model', created: 0, owned_by: 'mock' },
        ],
      },
    });
    await store.updateKey(gateway.proxyKeyId, { models: ['mock-m*', 'other'] });
    expect(await get('/models')).toEqual({
      status: 200,
      body: { object: 'list', data: [{ id: 'mock-model', object: 'model', created: 0, owned_by: 'mock' }] },
    });
  });

  it('takes a change of the list into account on the very next request', async () => {
    const { store } = await gatewayAllowing(['mock-model']);
    expect((await post(gateway, '/chat/completions', chat({ model: 'mock-family-a' }))).status).toBe(403);
    await store.updateKey(gateway.proxyKeyId, { models: ['mock-model', 'mock-family-a'] });
    expect((await post(gateway, '/chat/completions', chat({ model: 'mock-family-a' }))).status).toBe(200);
    await store.updateKey(gateway.proxyKeyId, { models: null });
    expect((await post(gateway, '/chat/completions', chat({ model: 'mock-family-a' }))).status).toBe(200);
  });
});
