/**
 * prometheusMetrics on a gateway: scrape after traffic and assert the exact series; label values
 * stay bounded under hostile paths and model names; never a key in the output.
 */
import express from 'express';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigurationError, MemoryKeyStore, keysRouter, prometheusMetrics } from '../../src/index.js';
import { PROM_CLIENT_MISSING_MESSAGE, loadPromClient } from '../../src/metrics/prometheus.js';
import { fastHasher, seedAccount } from '../helpers.js';
import { type Gateway, MOCK_PRICE, chat, deferred, post, startGateway } from '../proxy/harness.js';

/** The series of the scrape whose name starts with `name` (labels and value), in the order prom-client writes them. */
function series(text: string, name: string): string[] {
  return text.split('\n').filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `));
}

async function scrape(metrics: ReturnType<typeof prometheusMetrics>): Promise<string> {
  const app = express().get('/metrics', metrics.handler());
  const res = await request(app).get('/metrics');
  expect(res.status).toBe(200);
  expect(res.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
  expect(res.headers['cache-control']).toBe('no-store');
  return res.text;
}

let gateway: Gateway | undefined;
afterEach(async () => {
  await gateway?.close();
  gateway = undefined;
});

describe('prometheusMetrics on a gateway', () => {
  it('counts requests by route template, status and code, the tokens and USD metered by model, and the latencies', async () => {
    const metrics = prometheusMetrics();
    gateway = await startGateway({ metrics });
    const ok = await post(gateway, '/chat/completions', chat());
    expect(ok.status).toBe(200);
    expect((await post(gateway, '/chat/completions', chat(), { authorization: 'Bearer ms-nope' })).status).toBe(401);
    expect((await fetch(`${gateway.url}/models`, { headers: { authorization: `Bearer ${gateway.proxyKey}` } })).status).toBe(200);
    gateway.upstream.behaviour.error = { status: 500, body: { error: { message: 'down' } } };
    expect((await post(gateway, '/chat/completions', chat())).status).toBe(500);
    await gateway.proxy.drain();

    const text = await scrape(metrics);
    expect(series(text, 'modelswitch_http_requests_total')).toEqual([
      'modelswitch_http_requests_total{route="/v1/chat/completions",method="POST",status="200",code="ok"} 1',
      'modelswitch_http_requests_total{route="/v1/*",method="POST",status="401",code="invalid_api_key"} 1',
      'modelswitch_http_requests_total{route="/v1/models",method="GET",status="200",code="ok"} 1',
      'modelswitch_http_requests_total{route="/v1/chat/completions",method="POST",status="500",code="ok"} 1',
    ]);
    expect(series(text, 'modelswitch_tokens_total')).toEqual([
      'modelswitch_tokens_total{model="mock-model",kind="prompt"} 12',
      'modelswitch_tokens_total{model="mock-model",kind="completion"} 8',
    ]);
    expect(series(text, 'modelswitch_spend_usd_total')).toEqual([
      `modelswitch_spend_usd_total{model="mock-model"} ${(12 * MOCK_PRICE.inputPerMillion + 8 * MOCK_PRICE.outputPerMillion) / 1e6}`,
    ]);
    expect(series(text, 'modelswitch_upstream_duration_seconds_count')).toEqual([
      'modelswitch_upstream_duration_seconds_count{upstream="mock",model="mock-model",outcome="2xx"} 1',
      'modelswitch_upstream_duration_seconds_count{upstream="mock",model="mock-model",outcome="5xx"} 1',
    ]);
    expect(series(text, 'modelswitch_authentication_duration_seconds_count')).toEqual([
      'modelswitch_authentication_duration_seconds_count{outcome="ok"} 3',
      'modelswitch_authentication_duration_seconds_count{outcome="invalid_api_key"} 1',
    ]);
    expect(series(text, 'modelswitch_reservations_held')).toEqual(['modelswitch_reservations_held 0']);
    expect(series(text, 'modelswitch_scrypt_queue_depth')).toEqual(['modelswitch_scrypt_queue_depth 0']);
    expect(series(text, 'modelswitch_store_failures_total')).toEqual([]);
    expect(text).not.toContain(gateway.proxyKey.slice(0, 12));
  });

  it('shows a reservation held while its stream runs, and none once it settled', async () => {
    const metrics = prometheusMetrics();
    gateway = await startGateway({ metrics });
    const hold = deferred();
    gateway.upstream.behaviour.holdAfterFirstChunk = hold.promise;
    const res = await fetch(`${gateway.url}/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(chat({ stream: true })),
    });
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    expect(series(await scrape(metrics), 'modelswitch_reservations_held')).toEqual(['modelswitch_reservations_held 1']);
    hold.resolve();
    while (!(await reader.read()).done) {}
    await gateway.proxy.drain();
    expect(series(await scrape(metrics), 'modelswitch_reservations_held')).toEqual(['modelswitch_reservations_held 0']);
  });

  it('counts store failures by operation', async () => {
    const metrics = prometheusMetrics();
    const store = new MemoryKeyStore();
    gateway = await startGateway({ metrics, store });
    store.getKeyByHandle = () => Promise.reject(new Error('connection reset'));
    // A replaced method is never bypassed by the memory store's sync path: the request reads the store, which fails.
    expect((await post(gateway, '/chat/completions', chat())).status).toBe(503);
    const text = await scrape(metrics);
    expect(series(text, 'modelswitch_store_failures_total')).toEqual(['modelswitch_store_failures_total{operation="getKeyByHandle"} 1']);
    expect(series(text, 'modelswitch_http_requests_total')).toEqual([
      'modelswitch_http_requests_total{route="/v1/*",method="POST",status="503",code="store_unavailable"} 1',
    ]);
  });

  it('keeps labels bounded under hostile paths: route templates, never a raw path, id or key', async () => {
    const metrics = prometheusMetrics();
    gateway = await startGateway({ metrics });
    const headers = { authorization: `Bearer ${gateway.proxyKey}` };
    for (let i = 0; i < 20; i++) {
      await fetch(`${gateway.url}/models/model-${i}-${Math.random()}`, { headers });
      await fetch(`${gateway.url}/random/${i}/${Math.random()}`, { headers, method: 'POST' });
      await fetch(`${gateway.url}/chat/completions/${gateway.proxyKey}`, { headers, method: 'POST' });
      await fetch(`${gateway.url}/generation?id=req_${i}${Math.random()}`, { headers });
    }
    const store = new MemoryKeyStore();
    const hasher = fastHasher();
    const seeded = await seedAccount(store, { hasher });
    const api = express().use('/api', keysRouter(store, { hasher, metrics }));
    for (let i = 0; i < 20; i++) {
      await request(api)
        .get(`/api/keys/${1000 + i}`)
        .set('Authorization', `Bearer ${seeded.billingKey}`);
      await request(api).delete(`/api/keys/${seeded.proxyKey}`).set('Authorization', `Bearer ${seeded.billingKey}`);
    }
    await request(api).get('/api/keys').set('Authorization', `Bearer ${seeded.billingKey}`);
    await request(api).get('/api/openapi.json');

    const text = await scrape(metrics);
    const routes = new Set(series(text, 'modelswitch_http_requests_total').map((line) => /route="([^"]*)"/.exec(line)?.[1]));
    expect([...routes].sort()).toEqual(['/api/keys', '/api/keys/:id', '/api/openapi.json', '/v1/*', '/v1/generation', '/v1/models/:id']);
    expect(series(text, 'modelswitch_http_requests_total').length).toBeLessThanOrEqual(12);
    expect(text).not.toMatch(/m[sk]-[0-9A-Za-z]{8}/);
    expect(text).not.toContain('random');
  });

  it('reports models outside its list as other, and at most 50 distinct names without a list', async () => {
    const listed = prometheusMetrics({ models: ['gpt-4o'] });
    listed.metered('gpt-4o', 1, 1, 0.5);
    listed.metered('evil-1', 1, 1, 0.5);
    listed.metered('evil-2', 1, 1, 0.5);
    expect(series(await scrape(listed), 'modelswitch_spend_usd_total')).toEqual([
      'modelswitch_spend_usd_total{model="gpt-4o"} 0.5',
      'modelswitch_spend_usd_total{model="other"} 1',
    ]);
    const open = prometheusMetrics({ prefix: 'gw_' });
    for (let i = 0; i < 200; i++) open.metered(`model-${i}`, 1, 0, 0);
    open.metered('a"quote\nnewline', 1, 0, 0);
    const models = series(await scrape(open), 'gw_tokens_total').map((line) => /model="([^"]*)"/.exec(line)?.[1]);
    expect(models).toHaveLength(51);
    expect(models.slice(0, 50)).toEqual(Array.from({ length: 50 }, (_, i) => `model-${i}`));
    expect(series(await scrape(open), 'gw_tokens_total').at(-1)).toBe('gw_tokens_total{model="other",kind="prompt"} 151');
  });

  it('says npm install prom-client (ConfigurationError ERR_MS_OPTION) when prom-client is missing, and passes other load failures on', () => {
    const missing = Object.assign(new Error("Cannot find module 'prom-client'"), { code: 'MODULE_NOT_FOUND' });
    expect(() =>
      loadPromClient(() => {
        throw missing;
      }),
    ).toThrow(expect.objectContaining({ name: 'ConfigurationError', code: 'ERR_MS_OPTION', message: PROM_CLIENT_MISSING_MESSAGE }));
    const broken = Object.assign(new Error("Cannot find module 'tdigest'"), { code: 'MODULE_NOT_FOUND' });
    expect(() =>
      loadPromClient(() => {
        throw broken;
      }),
    ).toThrow(broken);
  });

  it('refuses a bad prefix or models with a ConfigurationError', () => {
    expect(() => prometheusMetrics({ prefix: 'bad-prefix' })).toThrow(ConfigurationError);
    expect(() => prometheusMetrics({ models: 'gpt-4o' as unknown as string[] })).toThrow(ConfigurationError);
    expect(() => keysRouter(new MemoryKeyStore(), { metrics: {} as never })).toThrow(
      'keysRouter: options.metrics must be what prometheusMetrics() answers (a GatewayMetrics)',
    );
  });
});
