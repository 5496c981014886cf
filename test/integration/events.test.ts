import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { runCli } from '../../src/cli/run.js';
import {
  ConfigurationError,
  type DashboardOptions,
  type EventHandler,
  MemoryKeyStore,
  type ModelSwitchEvent,
  adjustBalance,
  creditBalance,
  dashboardRouter,
  issueKey,
  keysRouter,
  modelSwitchAuth,
  proxyRouter,
  redactKeys,
} from '../../src/index.js';
import { type SeededAccount, fastHasher, recordingLogger, seedAccount, testClock } from '../helpers.js';
import { MOCK_PRICE, chat, deferred } from '../proxy/harness.js';
import { startTestUpstream } from '../proxy/mock-upstream.js';
import { DashboardClient, startDashboardApp } from '../dashboard/dashboard-app.js';

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

describe('onEvent of dashboardRouter', () => {
  async function startDashboard(dashboard: DashboardOptions) {
    const store = new MemoryKeyStore();
    const clock = testClock();
    const seeded = await seedAccount(store, { hasher, now: clock.now() });
    const app = await startDashboardApp('express5', store, { hasher, now: clock.now, dashboard });
    hosts.push(app);
    const billingKeyId = (await store.listKeys(seeded.account.id, { type: 'billing', limit: 10 })).keys[0]?.id as number;
    return { store, clock, seeded, billingKeyId, client: new DashboardClient(app.origin) };
  }

  it('reports every key change made in a billing-key session once, actor "dashboard session" and session "billing key <id>", never a key', async () => {
    const log: ModelSwitchEvent[] = [];
    const logger = recordingLogger();
    const { seeded, clock, billingKeyId, client, store } = await startDashboard({ onEvent: (event) => log.push(event), logger });
    const at = clock.now();
    const accountId = seeded.account.id;
    const actor = 'dashboard session';
    const session = `billing key ${billingKeyId}` as const;
    expect((await client.signIn(seeded.billingKey)).status).toBe(200);

    const created = await client.call('POST', 'api/keys', { name: 'CI', limit: 5 });
    expect(created.status).toBe(201);
    const { id: keyId, key } = created.body as { id: number; key: string };
    expect((await client.call('PATCH', `api/keys/${keyId}`, { name: 'CI runner', active: false })).status).toBe(200);
    const rotated = await client.call('POST', `api/keys/${keyId}/rotate`, { grace_period: '1h' });
    expect(rotated.status).toBe(200);
    const rotatedAgain = await client.call('POST', `api/keys/${keyId}/rotate`);
    expect(rotatedAgain.status).toBe(200);
    const billing = await client.call('POST', 'api/keys', { type: 'billing', name: 'Finance' });
    expect(billing.status).toBe(201);
    const billingId = (billing.body as { id: number }).id;
    expect((await client.call('DELETE', `api/keys/${keyId}`)).status).toBe(200);
    // Refused requests change nothing and report nothing.
    const other = await seedAccount(store, { hasher });
    const theirs = await issueKey(store, { accountId: other.account.id, type: 'proxy', name: 'theirs' }, { hasher });
    expect((await client.call('POST', `api/keys/${theirs.record.id}/rotate`, {})).status).toBe(404);
    expect((await client.call('PATCH', `api/keys/${theirs.record.id}`, { name: 'mine' })).status).toBe(404);
    expect((await client.call('DELETE', `api/keys/${theirs.record.id}`)).status).toBe(404);
    expect((await client.call('POST', `api/keys/${billingId}/rotate`, { grace_period: '8d' })).status).toBe(400);
    expect((await client.call('POST', 'api/keys', { name: '' })).status).toBe(400);
    await delivered();

    expect(log).toEqual([
      { type: 'key.created', accountId, keyId, actor, session, time: at },
      { type: 'key.updated', accountId, keyId, actor, session, time: at, changed: ['name', 'active'] },
      { type: 'key.rotated', accountId, keyId, actor, session, time: at, previousKeyExpiresAt: at + 3_600_000 },
      { type: 'key.rotated', accountId, keyId, actor, session, time: at, previousKeyExpiresAt: null },
      { type: 'key.created', accountId, keyId: billingId, actor, session, time: at },
      { type: 'key.deleted', accountId, keyId, actor, session, time: at },
    ]);
    const text = JSON.stringify(log);
    const secrets = [
      key,
      (rotated.body as { key: string }).key,
      (rotatedAgain.body as { key: string }).key,
      (billing.body as { key: string }).key,
    ];
    for (const secret of [...secrets, seeded.billingKey, seeded.proxyKey]) expect(text).not.toContain(secret.slice(3, 11));
    expect(redactKeys(text)).toBe(text);
    expect(logger.lines).toEqual([]);
  });

  it("names the host's own login by its subject (key-like text redacted), and a failing handler changes no answer and is logged once", async () => {
    const log: ModelSwitchEvent[] = [];
    const logger = recordingLogger();
    let subject = 'alice@example.com';
    let accountId = '';
    const { clock, seeded, client } = await startDashboard({
      identify: () => ({ accountId, subject }),
      onEvent: (event) => {
        log.push(event);
        if (event.type === 'key.deleted') throw new Error('audit log down');
      },
      logger,
    });
    accountId = seeded.account.id;
    const session = await client.call('GET', 'api/session');
    client.csrfToken = (session.body as { csrfToken: string }).csrfToken;
    const created = await client.call('POST', 'api/keys', { name: 'SSO key' });
    expect(created.status).toBe(201);
    const keyId = (created.body as { id: number }).id;
    expect(await client.call('DELETE', `api/keys/${keyId}`)).toMatchObject({ status: 200, body: { id: keyId, deleted: true } });
    subject = `pasted ${seeded.proxyKey}`;
    client.csrfToken = ((await client.call('GET', 'api/session')).body as { csrfToken: string }).csrfToken;
    expect((await client.call('POST', `api/keys/${seeded.proxyKeyId}/rotate`, { grace_period: '0s' })).status).toBe(200);
    await vi.waitFor(() => expect(logger.lines).toHaveLength(1));
    await delivered();

    const at = clock.now();
    const actor = 'dashboard session';
    const alice = 'user alice@example.com';
    const redacted = `user pasted ${seeded.proxyKey.slice(0, 7)}…redacted`;
    expect(log).toEqual([
      { type: 'key.created', accountId, keyId, actor, session: alice, time: at },
      { type: 'key.deleted', accountId, keyId, actor, session: alice, time: at },
      { type: 'key.rotated', accountId, keyId: seeded.proxyKeyId, actor, session: redacted, time: at, previousKeyExpiresAt: null },
    ]);
    expect(JSON.stringify(log)).not.toContain(seeded.proxyKey.slice(3, 11));
    expect(logger.lines).toEqual([
      'error: modelswitch-keys: the onEvent handler failed on key.deleted (dashboard session: user alice@example.com): audit log down',
    ]);
  });

  it('refuses an onEvent that is not a function when the router is made', () => {
    expect(() => dashboardRouter(new MemoryKeyStore(), { onEvent: 'audit' as unknown as EventHandler })).toThrow(
      new ConfigurationError(
        'ERR_MS_OPTION',
        'dashboardRouter: onEvent must be a function (event) => void, e.g. (event) => auditLog.info(event), or left out',
      ),
    );
  });
});

describe('onEvent of the CLI (runCli)', () => {
  async function cli(args: string[], store: MemoryKeyStore, onEvent?: EventHandler) {
    let stdout = '';
    let stderr = '';
    const code = await runCli(args, {
      stdout: (text) => (stdout += text),
      stderr: (text) => (stderr += text),
      env: {},
      store,
      now: () => Date.UTC(2026, 2, 15),
      ...(onEvent === undefined ? {} : { onEvent }),
    });
    return { code, stdout, stderr };
  }

  it('reports each change a command made once, actor "cli", before runCli answers; reads report nothing; none carries a key', async () => {
    const store = new MemoryKeyStore();
    const log: ModelSwitchEvent[] = [];
    const onEvent: EventHandler = async (event) => {
      // Awaited: the bin exits on runCli's answer, so a slow audit write must still land.
      await new Promise((resolve) => setImmediate(resolve));
      log.push(event);
    };
    const time = Date.UTC(2026, 2, 15);
    const run = async (...args: string[]) => {
      const result = await cli(args, store, onEvent);
      expect({ args, code: result.code, stderr: result.stderr }).toEqual({ args, code: 0, stderr: '' });
      return result;
    };
    await run('account', 'create', '--id', 'team-1');
    const issued = await run('billing-key', 'create', 'team-1', '--name', 'ops');
    expect(log).toEqual([{ type: 'key.created', accountId: 'team-1', keyId: 1, actor: 'cli', time }]);
    await run('account', 'credit', 'team-1', '2.50', '--reference', 'pay_1');
    await run('account', 'credit', 'team-1', '2.50', '--reference', 'pay_1');
    await run('account', 'show', 'team-1');
    await run('keys', 'list', 'team-1');
    await run('keys', 'deactivate', '1');
    await run('keys', 'delete', '1');
    expect((await cli(['keys', 'delete', '1'], store, onEvent)).code).toBe(1);
    expect((await cli(['account', 'credit', 'nobody', '1', '--reference', 'r'], store, onEvent)).code).toBe(1);
    expect(log).toEqual([
      { type: 'key.created', accountId: 'team-1', keyId: 1, actor: 'cli', time },
      { type: 'account.credited', accountId: 'team-1', keyId: null, actor: 'cli', time, amount: 2.5, balance: 2.5, reference: 'pay_1' },
      { type: 'key.updated', accountId: 'team-1', keyId: 1, actor: 'cli', time, changed: ['active'] },
      { type: 'key.deleted', accountId: 'team-1', keyId: 1, actor: 'cli', time },
    ]);
    const key = /mk-[0-9A-Za-z]{38}/.exec(issued.stdout)?.[0] as string;
    expect(JSON.stringify(log)).not.toContain(key.slice(3, 11));
  });

  it('--events prints each event as one JSON line on stderr after the output; a failing handler is one line and exit code 0', async () => {
    const store = new MemoryKeyStore();
    await cli(['account', 'create', '--id', 'team-1'], store);
    const printed = await cli(['account', 'credit', 'team-1', '3', '--reference', 'pay_2', '--events', '--json'], store);
    expect(printed.code).toBe(0);
    expect(JSON.parse(printed.stdout)).toMatchObject({ applied: true });
    expect(printed.stderr).toBe(
      `${JSON.stringify({ type: 'account.credited', accountId: 'team-1', keyId: null, actor: 'cli', time: Date.UTC(2026, 2, 15), amount: 3, balance: 3, reference: 'pay_2' })}\n`,
    );
    const failing = await cli(['billing-key', 'create', 'team-1', '--name', 'ops'], store, () => {
      throw new Error('audit log down');
    });
    expect(failing.code).toBe(0);
    expect(failing.stdout).toMatch(/^Billing key 1 "ops"/);
    expect(failing.stderr).toBe('modelswitch-keys: the onEvent handler failed on key.created (cli): audit log down\n');
    // Without --events or onEvent, nothing is said.
    expect((await cli(['keys', 'delete', '1'], store)).stderr).toBe('');
  });
});
