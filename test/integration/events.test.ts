import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  ConfigurationError,
  type EventHandler,
  MemoryKeyStore,
  type ModelSwitchEvent,
  adjustBalance,
  creditBalance,
  keysRouter,
  modelSwitchAuth,
  proxyRouter,
  redactKeys,
} from '../../src/index.js';
import { type SeededAccount, fastHasher, recordingLogger, seedAccount, testClock } from '../helpers.js';
import { MOCK_PRICE, chat, deferred } from '../proxy/harness.js';
import { startTestUpstream } from '../proxy/mock-upstream.js';

const hasher = fastHasher();

/** A host with keysRouter on /api and modelSwitchAuth + proxyRouter on /v1, all given `onEvent`; `log` gets a line when each answer finishes. */
async function startHost(onEvent: EventHandler | undefined, log: Array<string | ModelSwitchEvent> = []) {
  const store = new MemoryKeyStore();
  const clock = testClock();
  const logger = recordingLogger();
  const upstream = await startTestUpstream();
  const seeded = await seedAccount(store, { hasher, balance: 1.02, now: clock.now() });
  const options = { hasher, now: clock.now, logger, ...(onEvent === undefined ? {} : { onEvent }) };
  const proxy = proxyRouter(store, {
    upstreams: [{ name: 'mock', target: upstream.url, apiKey: 'sk-upstream-secret', models: ['mock-model'] }],
    pricing: { 'mock-model': MOCK_PRICE },
    // 12 prompt + 8 output tokens reserve exactly what the mock reports: $0.028.
    estimatePromptTokens: () => 12,
    defaultMaxTokens: 8,
    ...options,
  });
  const app = express();
  app.use((req, res, next) => {
    res.once('finish', () => log.push(`answered ${req.method} ${req.originalUrl} ${res.statusCode}`));
    next();
  });
  app.use('/api', keysRouter(store, options));
  app.use('/v1', modelSwitchAuth(store, options), proxy);
  const server: Server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const host = {
    store,
    clock,
    logger,
    upstream,
    seeded,
    base,
    async call(method: string, path: string, key: string, body?: unknown) {
      const res = await fetch(base + path, {
        method,
        headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    },
    async close() {
      await proxy.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await upstream.close();
    },
  };
  hosts.push(host);
  return host;
}

const hosts: Array<{ close(): Promise<void> }> = [];
afterEach(async () => {
  for (const host of hosts.splice(0)) await host.close();
});

/** Lets pending deliveries (each on a later turn of the event loop) run. */
async function delivered(): Promise<void> {
  for (let turn = 0; turn < 3; turn++) await new Promise((resolve) => setImmediate(resolve));
}

describe('onEvent', () => {
  it('receives every event once, after its answer, with the account, the key id, the right actor and the time; none carries a key', async () => {
    const log: Array<string | ModelSwitchEvent> = [];
    const host = await startHost((event) => {
      log.push(event);
    }, log);
    const { seeded, clock } = host;
    const at = clock.now();
    const billingKeyId = (await host.store.listKeys(seeded.account.id, { type: 'billing', limit: 10 })).keys[0]?.id as number;
    const billing = `billing key ${billingKeyId}` as const;

    const created = await host.call('POST', '/api/keys', seeded.billingKey, { name: 'Support bot' });
    expect(created.status).toBe(201);
    const keyId = created.body.id as number;
    let proxyKey = created.body.key as string;
    await vi.waitFor(() => expect(log).toHaveLength(2));
    expect((await host.call('PATCH', `/api/keys/${keyId}`, seeded.billingKey, { limit: 0.05, name: 'Support' })).status).toBe(200);
    const rotated = await host.call('POST', `/api/keys/${keyId}/rotate`, seeded.billingKey, { grace_period: '1h' });
    expect(rotated.status).toBe(200);
    const proxyKeyBefore = proxyKey;
    proxyKey = rotated.body.key as string;
    // $1.02 − $0.028: the balance goes below $1, once.
    expect((await host.call('POST', '/v1/chat/completions', proxyKey, chat())).status).toBe(200);
    await vi.waitFor(() => expect(log).toHaveLength(8));
    // $0.028 used of $0.05: the next request's $0.028 would pass the limit.
    expect((await host.call('POST', '/v1/chat/completions', proxyKey, chat())).body).toMatchObject({
      error: { code: 'spend_limit_reached' },
    });
    // Below the threshold already: another settlement is no second crossing.
    expect((await host.call('POST', '/v1/chat/completions', seeded.proxyKey, chat())).status).toBe(200);
    expect((await host.call('DELETE', `/api/keys/${keyId}`, seeded.billingKey)).status).toBe(200);
    await vi.waitFor(() => expect(log).toHaveLength(13));
    const credited = await creditBalance(host.store, seeded.account.id, 5, {
      reference: 'pay_1',
      now: at,
      onEvent: (event) => log.push(event),
    });
    expect(credited?.applied).toBe(true);
    expect(log).toHaveLength(13);
    await delivered();
    await creditBalance(host.store, seeded.account.id, 5, { reference: 'pay_1', now: at, onEvent: (event) => log.push(event) });
    await adjustBalance(host.store, seeded.account.id, -5.5, { reference: 'ticket-1', now: at, onEvent: (event) => log.push(event) });
    await adjustBalance(host.store, seeded.account.id, -0.1, { reference: 'ticket-2', now: at, onEvent: (event) => log.push(event) });
    await delivered();

    const proxyActor = `proxy key ${keyId}`;
    expect(log).toEqual([
      `answered POST /api/keys 201`,
      { type: 'key.created', accountId: seeded.account.id, keyId, actor: billing, time: at },
      `answered PATCH /api/keys/${keyId} 200`,
      { type: 'key.updated', accountId: seeded.account.id, keyId, actor: billing, time: at, changed: ['limit', 'name'] },
      `answered POST /api/keys/${keyId}/rotate 200`,
      { type: 'key.rotated', accountId: seeded.account.id, keyId, actor: billing, time: at, previousKeyExpiresAt: at + 3_600_000 },
      `answered POST /v1/chat/completions 200`,
      { type: 'account.balance_low', accountId: seeded.account.id, keyId, actor: proxyActor, time: at, balance: 0.992, threshold: 1 },
      `answered POST /v1/chat/completions 403`,
      { type: 'key.limit_reached', accountId: seeded.account.id, keyId, actor: proxyActor, time: at, limit: 0.05, usage: 0.028 },
      `answered POST /v1/chat/completions 200`,
      `answered DELETE /api/keys/${keyId} 200`,
      { type: 'key.deleted', accountId: seeded.account.id, keyId, actor: billing, time: at },
      {
        type: 'account.credited',
        accountId: seeded.account.id,
        keyId: null,
        actor: 'host',
        time: at,
        amount: 5,
        balance: 5.964,
        reference: 'pay_1',
      },
      { type: 'account.balance_low', accountId: seeded.account.id, keyId: null, actor: 'host', time: at, balance: 0.464, threshold: 1 },
    ]);
    const text = JSON.stringify(log);
    for (const key of [proxyKeyBefore, proxyKey, seeded.proxyKey, seeded.billingKey]) expect(text).not.toContain(key.slice(3, 11));
    expect(redactKeys(text)).toBe(text);
    expect(host.logger.lines).toEqual([]);
  });

  it('a throwing or rejecting handler changes no answer; each failure is logged once, with any key redacted', async () => {
    let calls = 0;
    const host = await startHost((event) => {
      calls++;
      if (event.type === 'key.created') throw new Error(`cannot store ${host.seeded.billingKey}`);
      return Promise.reject(new Error('audit log down'));
    });
    const created = await host.call('POST', '/api/keys', host.seeded.billingKey, { name: 'Support bot' });
    expect(created).toMatchObject({ status: 201, body: { name: 'Support bot' } });
    const keyId = created.body.id as number;
    expect(await host.call('DELETE', `/api/keys/${keyId}`, host.seeded.billingKey)).toEqual({
      status: 200,
      body: { id: keyId, deleted: true },
    });
    await vi.waitFor(() => expect(host.logger.lines).toHaveLength(2));
    const billingKeyId = (await host.store.listKeys(host.seeded.account.id, { type: 'billing', limit: 10 })).keys[0]?.id as number;
    expect(host.logger.lines).toEqual([
      `error: modelswitch-keys: the onEvent handler failed on key.created (billing key ${billingKeyId}): cannot store ${host.seeded.billingKey.slice(0, 7)}…redacted`,
      `error: modelswitch-keys: the onEvent handler failed on key.deleted (billing key ${billingKeyId}): audit log down`,
    ]);
    expect(calls).toBe(2);
  });

  it('a slow handler delays no answer: requests go on while every call it got is still pending', async () => {
    const never = deferred();
    const pending: ModelSwitchEvent[] = [];
    const host = await startHost(async (event) => {
      pending.push(event);
      await never.promise;
    });
    for (let i = 0; i < 5; i++) {
      expect((await host.call('POST', '/api/keys', host.seeded.billingKey, { name: `key ${i}` })).status).toBe(201);
    }
    expect((await host.call('POST', '/v1/chat/completions', host.seeded.proxyKey, chat())).status).toBe(200);
    await vi.waitFor(() => expect(pending.map((event) => event.type)).toEqual([...Array(5).fill('key.created'), 'account.balance_low']));
    never.resolve();
  });

  it('a handler that is not a function is refused when the factory is made', () => {
    const store = new MemoryKeyStore();
    const onEvent = 'audit' as unknown as EventHandler;
    for (const make of [
      () => keysRouter(store, { onEvent }),
      () => modelSwitchAuth(store, { onEvent }),
      () => proxyRouter(store, { upstreams: [{ name: 'mock', target: 'http://127.0.0.1:9/v1', models: ['m'] }], pricing: {}, onEvent }),
    ]) {
      expect(make).toThrow(ConfigurationError);
    }
    expect(() => keysRouter(store, { onEvent })).toThrow(
      'keysRouter: options.onEvent must be a function (event) => void, e.g. (event) => auditLog.info(event), or left out',
    );
    expect(() =>
      proxyRouter(store, {
        upstreams: [{ name: 'mock', target: 'http://127.0.0.1:9/v1', models: ['m'] }],
        pricing: {},
        balanceLowThreshold: -1,
      }),
    ).toThrow('proxyRouter: options.balanceLowThreshold must be a number of USD from 0 to 1000000000000, e.g. 1');
  });

  it('creditBalance and adjustBalance check their event options before changing anything', async () => {
    const store = new MemoryKeyStore();
    const seeded: SeededAccount = await seedAccount(store, { hasher, balance: 2 });
    const onEvent = 42 as unknown as EventHandler;
    await expect(creditBalance(store, seeded.account.id, 1, { onEvent })).rejects.toThrow(
      'creditBalance: options.onEvent must be a function (event) => void, or left out',
    );
    await expect(adjustBalance(store, seeded.account.id, -1, { reference: 'r', balanceLowThreshold: Number.NaN })).rejects.toThrow(
      'adjustBalance: options.balanceLowThreshold must be a number of USD from 0 to 1000000000000, e.g. 1',
    );
    expect((await store.getAccount(seeded.account.id))?.balance).toBe(2);
  });
});
