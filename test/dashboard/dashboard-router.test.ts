import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { SignJWT } from 'jose';
import { ConfigurationError, MemoryKeyStore, dashboardRouter, issueKey } from '../../src/index.js';
import { buildDashboardAssets } from '../../scripts/build-dashboard.js';
import { FRAMEWORKS } from '../app.js';
import { fastHasher, invalid, seedAccount, testClock } from '../helpers.js';
import { DashboardClient, TEST_SESSION_SECRET, startDashboardApp } from './dashboard-app.js';

const hasher = fastHasher();
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
const closers: Array<() => Promise<void>> = [];

beforeAll(async () => {
  // The router serves the built assets: build them from the sources under test.
  await buildDashboardAssets();
});

afterEach(async () => {
  for (const close of closers.splice(0)) await close();
});

async function setUp(framework: (typeof FRAMEWORKS)[number] = 'express5', options: { clock?: ReturnType<typeof testClock> } = {}) {
  const store = new MemoryKeyStore();
  const clock = options.clock ?? testClock(Date.now());
  const seeded = await seedAccount(store, { hasher, now: clock.now() });
  const app = await startDashboardApp(framework, store, { hasher, now: clock.now });
  closers.push(app.close);
  return { store, clock, seeded, app, client: new DashboardClient(app.origin) };
}

function expectSecurityHeaders(headers: Headers): void {
  expect(headers.get('content-security-policy')).toBe(CSP);
  expect(headers.get('cache-control')).toBe('no-store');
  expect(headers.get('referrer-policy')).toBe('no-referrer');
  expect(headers.get('x-content-type-options')).toBe('nosniff');
  expect(headers.get('x-frame-options')).toBe('DENY');
}

describe('dashboardRouter', () => {
  describe.each(FRAMEWORKS)('mounted under %s', (framework) => {
    it('serves the page shell, its assets and the session API under the mount path', async () => {
      const { client, seeded } = await setUp(framework);
      const page = await client.call('GET', '');
      expect(page.status).toBe(200);
      expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expectSecurityHeaders(page.headers);
      expect(page.text).toContain('<script src="assets/app.js" defer></script>');
      expect(page.text).not.toMatch(/<script>|<style>|style="/);
      const script = await client.call('GET', 'assets/app.js');
      expect(script.status).toBe(200);
      expect(script.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
      expect(script.headers.get('cache-control')).toBe('no-cache');
      const css = await client.call('GET', 'assets/app.css');
      expect(css.status).toBe(200);
      expect(css.headers.get('content-type')).toBe('text/css; charset=utf-8');
      const signedIn = await client.signIn(seeded.billingKey);
      expect(signedIn.status).toBe(200);
      const cookie = signedIn.headers.get('set-cookie') as string;
      expect(cookie).toMatch(/^modelswitch_session=[\w-]+\.[\w-]+\.[\w-]+; Path=\/dashboard; Max-Age=43200; HttpOnly; SameSite=Strict$/);
      const keys = await client.call('GET', 'api/keys');
      expect(keys.status).toBe(200);
      expect((keys.body as { keys: Array<{ name: string }> }).keys.map((key) => key.name)).toEqual(['My Production Key']);
    });
  });

  it('redirects /dashboard to /dashboard/ so the relative URLs resolve', async () => {
    const { app } = await setUp();
    const response = await fetch(`${app.origin}/dashboard`, { redirect: 'manual' });
    expect(response.status).toBe(308);
    expect(response.headers.get('location')).toBe('/dashboard/');
  });

  it('signs in with a billing key: 200 with the session, a CSRF token and an HttpOnly cookie, never the key', async () => {
    const { client, seeded, clock } = await setUp();
    const answer = await client.signIn(seeded.billingKey);
    expect(answer.status).toBe(200);
    expectSecurityHeaders(answer.headers);
    const body = answer.body as Record<string, unknown>;
    expect(body).toEqual({
      kind: 'billing-key',
      accountId: seeded.account.id,
      subject: expect.stringMatching(/^billing \(mk-.{4}…\)$/),
      keyId: expect.any(Number),
      expiresAt: new Date(Math.floor(clock.now() / 1000) * 1000 + 12 * 3600 * 1000).toISOString().replace('.000Z', 'Z'),
      csrfToken: expect.stringMatching(/^[\w-]{43}$/),
    });
    expect(JSON.stringify(body)).not.toContain(seeded.billingKey);
    expect(answer.headers.get('set-cookie')).not.toContain(seeded.billingKey);
    const session = await client.call('GET', 'api/session');
    expect(session.status).toBe(200);
    expect(session.body).toEqual(body);
  });

  it('refuses a proxy key, a wrong secret and garbage at sign-in, and throttles repeated failures with 429', async () => {
    const { client, seeded, app } = await setUp();
    const proxy = await client.call('POST', 'api/session', { key: seeded.proxyKey });
    expect(proxy.status).toBe(401);
    expect((proxy.body as { error: { code: string } }).error.code).toBe('wrong_key_type');
    const wrong = `${seeded.billingKey.slice(0, 20)}${seeded.billingKey.slice(20).split('').reverse().join('')}`;
    const refused = await client.call('POST', 'api/session', { key: wrong });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('www-authenticate')).toBe('Bearer realm="modelswitch", error="invalid_token"');
    expect(refused.body).toEqual({ error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } });
    expect(refused.headers.get('set-cookie')).toBeNull();
    const shape = await client.call('POST', 'api/session', { key: 42 });
    expect(shape.status).toBe(400);
    for (let attempt = 3; attempt <= 10; attempt++) await client.call('POST', 'api/session', { key: 'mk-nothing' });
    const throttled = await client.call('POST', 'api/session', { key: seeded.billingKey });
    expect(throttled.status).toBe(429);
    expect(throttled.headers.get('retry-after')).toMatch(/^\d+$/);
    expect((throttled.body as { error: { code: string } }).error.code).toBe('rate_limit_exceeded');
    expect(app.origin).toBeTruthy();
  });

  it('answers 401 session_required without a session, with a forged token, and after the session expires', async () => {
    const { client, seeded, clock } = await setUp();
    const none = await client.call('GET', 'api/keys');
    expect(none.status).toBe(401);
    expect(none.body).toEqual({
      error: { message: 'Sign in to the dashboard with a billing key (mk-…)', type: 'authentication_error', code: 'session_required' },
    });
    expect(none.headers.get('www-authenticate')).toBe('Bearer realm="modelswitch"');
    expectSecurityHeaders(none.headers);

    const forged = await new SignJWT({ acc: seeded.account.id })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject('1')
      .setIssuer('modelswitch-keys/dashboard')
      .setAudience('modelswitch-keys/dashboard')
      .setJti('x')
      .setIssuedAt()
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode('another-secret-another-secret-another-secret'));
    client.cookie = `modelswitch_session=${forged}`;
    expect((await client.call('GET', 'api/keys')).status).toBe(401);
    const unsigned = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${forged.split('.')[1]}.`;
    client.cookie = `modelswitch_session=${unsigned}`;
    expect((await client.call('GET', 'api/keys')).status).toBe(401);

    client.cookie = '';
    await client.signIn(seeded.billingKey);
    expect((await client.call('GET', 'api/keys')).status).toBe(200);
    clock.advance(12 * 3600 * 1000 + 1000);
    const expired = await client.call('GET', 'api/keys');
    expect(expired.status).toBe(401);
    expect(expired.headers.get('set-cookie')).toBe('modelswitch_session=; Path=/dashboard; Max-Age=0; HttpOnly; SameSite=Strict');
  });

  it('ends the session when its billing key is deactivated or deleted (read fresh on every request)', async () => {
    const { client, seeded, store } = await setUp();
    const signedIn = (await client.signIn(seeded.billingKey)).body as { keyId: number };
    await store.updateKey(signedIn.keyId, { active: false });
    expect((await client.call('GET', 'api/keys')).status).toBe(401);
    await store.updateKey(signedIn.keyId, { active: true });
    await client.signIn(seeded.billingKey);
    expect((await client.call('GET', 'api/keys')).status).toBe(200);
    await store.deleteKey(signedIn.keyId);
    expect((await client.call('GET', 'api/keys')).status).toBe(401);
  });

  it('signs out: the same cookie replayed afterwards answers 401', async () => {
    const { client, seeded } = await setUp();
    await client.signIn(seeded.billingKey);
    const cookie = client.cookie;
    const out = await client.call('DELETE', 'api/session');
    expect(out.status).toBe(200);
    expect(out.body).toEqual({ signedOut: true });
    expect(out.headers.get('set-cookie')).toBe('modelswitch_session=; Path=/dashboard; Max-Age=0; HttpOnly; SameSite=Strict');
    client.cookie = cookie;
    expect((await client.call('GET', 'api/session')).status).toBe(401);
  });

  it('refuses state-changing requests without the CSRF token, with a wrong one, or from another origin (403 csrf_check_failed)', async () => {
    const { client, seeded } = await setUp();
    await client.signIn(seeded.billingKey);
    const noToken = await client.call('POST', 'api/keys', { name: 'x' }, { 'x-csrf-token': '' });
    expect(noToken.status).toBe(403);
    expect(noToken.body).toEqual({
      error: {
        message: 'Missing or wrong CSRF token: reload the dashboard and try again',
        type: 'permission_error',
        code: 'csrf_check_failed',
      },
    });
    const wrongToken = await client.call('POST', 'api/keys', { name: 'x' }, { 'x-csrf-token': 'A'.repeat(43) });
    expect(wrongToken.status).toBe(403);
    const otherOrigin = await client.call('POST', 'api/keys', { name: 'x' }, { origin: 'https://evil.example' });
    expect(otherOrigin.status).toBe(403);
    expect((otherOrigin.body as { error: { message: string } }).error.message).toBe(
      'Cross-origin request refused: state-changing requests must come from the dashboard page itself',
    );
    const noOrigin = await client.call('DELETE', 'api/session', undefined, { origin: '' });
    expect(noOrigin.status).toBe(403);
    const signInElsewhere = await client.call('POST', 'api/session', { key: seeded.billingKey }, { origin: 'https://evil.example' });
    expect(signInElsewhere.status).toBe(403);
    const listed = (await client.call('GET', 'api/keys')).body as { keys: unknown[] };
    expect(listed.keys).toHaveLength(1);
  });

  it('creates, renames, deactivates, rotates and deletes keys with the key value only in the create and rotate answers', async () => {
    const { client, seeded, clock } = await setUp();
    await client.signIn(seeded.billingKey);
    const created = await client.call('POST', 'api/keys', {
      name: 'CI',
      expires_at: '2099-01-01',
      limit: 5,
      limit_reset: 'monthly',
      rate_limit: { requests: 10, interval: '1m' },
      models: ['gpt-4o-mini', 'claude-*'],
    });
    expect(created.status).toBe(201);
    const key = created.body as { id: number; key: string };
    expect(created.body).toEqual({
      id: expect.any(Number),
      key: expect.stringMatching(/^ms-[0-9A-Za-z]{38}$/),
      name: 'CI',
      prefix: key.key.slice(0, 7),
      active: true,
      createdAt: new Date(clock.now()).toISOString().replace('.000Z', 'Z'),
      expiresAt: '2099-01-01T00:00:00Z',
      lastUsedAt: null,
      usage: 0,
      limit: 5,
      limitReset: 'monthly',
      rateLimit: { requests: 10, interval: '1m' },
      type: 'proxy',
      models: ['gpt-4o-mini', 'claude-*'],
      previousKeyExpiresAt: null,
    });
    const listed = await client.call('GET', 'api/keys');
    expect(listed.text).not.toContain(key.key);
    const renamed = await client.call('PATCH', `api/keys/${key.id}`, { name: 'CI runner' });
    expect(renamed.status).toBe(200);
    expect((renamed.body as { name: string }).name).toBe('CI runner');
    const off = await client.call('PATCH', `api/keys/${key.id}`, { active: false });
    expect((off.body as { active: boolean }).active).toBe(false);
    const rotated = await client.call('POST', `api/keys/${key.id}/rotate`, { grace_period: '1h' });
    expect(rotated.status).toBe(200);
    const rotatedBody = rotated.body as { id: number; key: string; previousKeyExpiresAt: string };
    expect(rotatedBody.id).toBe(key.id);
    expect(rotatedBody.key).not.toBe(key.key);
    expect(rotatedBody.key.slice(0, 13)).toBe(key.key.slice(0, 13));
    expect(rotatedBody.previousKeyExpiresAt).toBe(new Date(clock.now() + 3600_000).toISOString().replace('.000Z', 'Z'));
    const badGrace = await client.call('POST', `api/keys/${key.id}/rotate`, { grace_period: '8d' });
    expect(badGrace.status).toBe(400);
    expect((badGrace.body as { error: { param: string } }).error.param).toBe('grace_period');
    const deleted = await client.call('DELETE', `api/keys/${key.id}`);
    expect(deleted.body).toEqual({ id: key.id, deleted: true });
    expect((await client.call('DELETE', `api/keys/${key.id}`)).status).toBe(404);
  });

  it('reads grace_period exactly as POST /api/keys/:id/rotate does: the same deadlines, the same 400s, nothing changed by one', async () => {
    const { client, seeded, store, app, clock } = await setUp();
    await client.signIn(seeded.billingKey);
    const viaApi = async (body: unknown) => {
      const response = await fetch(`${app.origin}/api/keys/${seeded.proxyKeyId}/rotate`, {
        method: 'POST',
        headers: { authorization: `Bearer ${seeded.billingKey}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    const viaDashboard = async (body: unknown) => {
      const answer = await client.call('POST', `api/keys/${seeded.proxyKeyId}/rotate`, body);
      return { status: answer.status, body: answer.body as Record<string, unknown> };
    };
    const at = clock.now();
    const iso = (ms: number) => new Date(ms).toISOString().replace('.000Z', 'Z');
    const accepted: Array<[unknown, string | null]> = [
      [undefined, null],
      [null, null],
      [0, null],
      ['0s', null],
      [90, iso(at + 90_000)],
      ['90s', iso(at + 90_000)],
      ['1h', iso(at + 3_600_000)],
      ['7d', iso(at + 604_800_000)],
    ];
    for (const [grace, deadline] of accepted) {
      const body = grace === undefined ? {} : { grace_period: grace };
      for (const [route, rotate] of [
        ['api', viaApi],
        ['dashboard', viaDashboard],
      ] as const) {
        const answer = await rotate(body);
        expect({ route, grace, status: answer.status, deadline: answer.body.previousKeyExpiresAt }).toEqual({
          route,
          grace,
          status: 200,
          deadline,
        });
      }
    }
    const message =
      'grace_period must be a duration from 0 to 7 days: a whole number of seconds, or a string like "90s", "15m", "1h" or "7d"';
    const before = await store.getKey(seeded.proxyKeyId);
    // "0" is not a duration (the API's form is "0s"): the dashboard used to take it, and no longer does.
    for (const grace of ['0', '8d', 604_801, -1, 1.5, '1w', '', '1.5h', '3600', true, {}, []]) {
      for (const [route, rotate] of [
        ['api', viaApi],
        ['dashboard', viaDashboard],
      ] as const) {
        const answer = await rotate({ grace_period: grace });
        expect({ route, grace, ...answer }).toEqual({ route, grace, status: 400, body: invalid(message, 'grace_period') });
      }
    }
    expect(await store.getKey(seeded.proxyKeyId)).toEqual(before);
  });

  it("signs in with a rotated billing key's previous secret until its deadline (injected clock), then 401; its use never locks the new secret out", async () => {
    const { client, seeded, store, clock, app } = await setUp();
    await client.signIn(seeded.billingKey);
    const billingId = (await store.listKeys(seeded.account.id, { type: 'billing', limit: 10 })).keys[0]?.id as number;
    const rotated = await client.call('POST', `api/keys/${billingId}/rotate`, { grace_period: '1h' });
    expect(rotated.status).toBe(200);
    const newKey = (rotated.body as { key: string }).key;
    expect(newKey).toMatch(/^mk-[0-9A-Za-z]{38}$/);
    const signIn = async (key: string) => {
      const answer = await new DashboardClient(app.origin).signIn(key);
      return { status: answer.status, body: answer.status === 200 ? 'signed in' : answer.body };
    };
    clock.advance(3_600_000 - 1);
    expect(await signIn(seeded.billingKey)).toEqual({ status: 200, body: 'signed in' });
    clock.advance(1);
    expect(await signIn(seeded.billingKey)).toEqual({
      status: 401,
      body: { error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } },
    });
    expect(await signIn(newKey)).toEqual({ status: 200, body: 'signed in' });
    // The session made before the rotation is bound to the key record, not its secret: it goes on.
    expect((await client.call('GET', 'api/keys')).status).toBe(200);
  });

  it("hashes a rotation's new secret for its account, as a creation's, so maxHashesPerAccount bounds both", async () => {
    const { client, seeded } = await setUp();
    await client.signIn(seeded.billingKey);
    const hash = vi.spyOn(hasher, 'hash');
    try {
      expect((await client.call('POST', `api/keys/${seeded.proxyKeyId}/rotate`, { grace_period: '1h' })).status).toBe(200);
      expect((await client.call('POST', 'api/keys', { name: 'CI' })).status).toBe(201);
      expect(hash.mock.calls.map(([, options]) => options)).toEqual([{ account: seeded.account.id }, { account: seeded.account.id }]);
    } finally {
      hash.mockRestore();
    }
  });

  it('validates like the management API: unknown fields, a key in a name, bad limits and models answer 400 with param', async () => {
    const { client, seeded } = await setUp();
    await client.signIn(seeded.billingKey);
    const cases: Array<[unknown, string]> = [
      [{ name: 'x', usage: 1 }, 'usage'],
      [{}, 'name'],
      [{ name: `leak ${seeded.proxyKey}` }, 'name'],
      [{ name: 'x', limit: -1 }, 'limit'],
      [{ name: 'x', models: [] }, 'models'],
      [{ name: 'x', type: 'admin' }, 'type'],
      [{ name: 'x', type: 'billing', models: ['gpt-4o'] }, 'models'],
    ];
    for (const [body, param] of cases) {
      const answer = await client.call('POST', 'api/keys', body);
      expect(answer.status, JSON.stringify(body)).toBe(400);
      expect((answer.body as { error: { param: string } }).error.param).toBe(param);
      expect(answer.text).not.toContain(seeded.proxyKey);
    }
  });

  it("manages billing keys on the Billing Keys page, and never another account's keys (404)", async () => {
    const { client, seeded, store } = await setUp();
    await client.signIn(seeded.billingKey);
    const created = await client.call('POST', 'api/keys', { type: 'billing', name: 'Finance' });
    expect(created.status).toBe(201);
    expect((created.body as { key: string; type: string }).key).toMatch(/^mk-/);
    const billing = (await client.call('GET', 'api/keys?type=billing')).body as { keys: Array<{ name: string }>; signedInKeyId: number };
    expect(billing.keys.map((key) => key.name)).toEqual(['billing', 'Finance']);
    // A model list is a proxy key's: refused on a billing key when updated as when created; null (none) is not a list.
    const financeId = (created.body as { id: number }).id;
    const withModels = await client.call('PATCH', `api/keys/${financeId}`, { models: ['gpt-4o'] });
    expect({ status: withModels.status, body: withModels.body }).toEqual({
      status: 400,
      body: invalid('models applies to proxy keys only', 'models'),
    });
    const withoutModels = await client.call('PATCH', `api/keys/${financeId}`, { name: 'Finance 2', models: null });
    expect(withoutModels.status).toBe(200);
    expect(withoutModels.body).toMatchObject({ id: financeId, name: 'Finance 2', type: 'billing', models: null });
    const other = await seedAccount(store, { hasher });
    const otherKey = await issueKey(store, { accountId: other.account.id, type: 'proxy', name: 'theirs' }, { hasher });
    for (const [method, path, body] of [
      ['PATCH', `api/keys/${otherKey.record.id}`, { name: 'mine' }],
      ['DELETE', `api/keys/${otherKey.record.id}`, undefined],
      ['POST', `api/keys/${otherKey.record.id}/rotate`, {}],
    ] as const) {
      const answer = await client.call(method, path, body);
      expect(answer.status).toBe(404);
      expect((answer.body as { error: { code: string } }).error.code).toBe('key_not_found');
    }
  });

  it('shows the account, its transactions (paged, newest first), usage of the last 30 days and a CSV export', async () => {
    const { client, seeded, store, clock } = await setUp();
    await client.signIn(seeded.billingKey);
    const account = await client.call('GET', 'api/account');
    expect(account.body).toEqual({
      id: seeded.account.id,
      balance: 10,
      reserved: 0,
      available: 10,
      isFreeTier: false,
      createdAt: new Date(seeded.account.createdAt).toISOString().replace('.000Z', 'Z'),
    });
    await store.changeBalance({
      accountId: seeded.account.id,
      type: 'credit',
      amount: 5,
      reference: '=cmd|evil',
      note: null,
      now: clock.now(),
    });
    const page = await client.call('GET', 'api/transactions?limit=1');
    const transactions = page.body as { transactions: Array<{ type: string; amount: number }>; has_more: boolean };
    expect(transactions.transactions).toMatchObject([{ type: 'credit', amount: 5 }]);
    expect(transactions.has_more).toBe(true);
    const csv = await client.call('GET', 'api/transactions.csv');
    expect(csv.status).toBe(200);
    expect(csv.headers.get('content-type')).toBe('text/csv; charset=utf-8');
    expect(csv.headers.get('content-disposition')).toMatch(/^attachment; filename="transactions-[\w-]+\.csv"$/);
    const lines = csv.text.trim().split('\r\n');
    expect(lines[0]).toBe('id,created_at,type,amount,balance_after,key_id,model,prompt_tokens,completion_tokens,request_id,reference');
    expect(lines).toHaveLength(3);
    expect(lines[1]).toMatch(/,credit,5,15,,,,,,'=cmd\|evil$/);
    // The same answers as /api/account, /api/transactions and /api/usage with the billing key.
    const bearer = { authorization: `Bearer ${seeded.billingKey}` };
    for (const path of ['account', 'transactions?limit=1', 'usage?group_by=day,model']) {
      const dashboard = await client.call('GET', `api/${path}`);
      const api = await fetch(`${client.origin}/api/${path}`, { headers: bearer });
      expect(dashboard.status, path).toBe(200);
      expect(dashboard.body, path).toEqual(await api.json());
    }
    const usage = await client.call('GET', 'api/usage');
    expect(usage.body).toEqual({ usage: [], total: { requests: 0, promptTokens: 0, completionTokens: 0, cost: 0 } });
    expect((await client.call('GET', 'api/usage?from=2020-01-01&to=2026-01-01')).status).toBe(400);
    expect((await client.call('GET', 'api/transactions?type=bogus')).status).toBe(400);
  });

  it('passes other paths to next() and answers unknown API routes 404 in the error shape', async () => {
    const { client, seeded } = await setUp();
    await client.signIn(seeded.billingKey);
    const unknown = await client.call('GET', 'api/nothing');
    expect(unknown.status).toBe(404);
    expect((unknown.body as { error: { code: string } }).error.code).toBe('route_not_found');
    const other = await client.call('GET', 'elsewhere');
    expect(other.status).toBe(404);
    // The host's own 404 (Express's finalhandler here), not the dashboard's headers.
    expect(other.headers.get('content-security-policy')).not.toBe(CSP);
  });

  it('requires session.secret under NODE_ENV=production with a coded ConfigurationError, and refuses a short one', () => {
    const store = new MemoryKeyStore();
    const previous = process.env.NODE_ENV;
    process.env.NODE_ENV = 'production';
    try {
      expect(() => dashboardRouter(store)).toThrow(ConfigurationError);
      try {
        dashboardRouter(store);
      } catch (error) {
        expect((error as ConfigurationError).code).toBe('ERR_MS_SESSION_SECRET');
        expect((error as Error).message).toContain('session.secret is required under NODE_ENV=production');
      }
      expect(() => dashboardRouter(store, { session: { secret: TEST_SESSION_SECRET } })).not.toThrow();
    } finally {
      process.env.NODE_ENV = previous;
    }
    expect(() => dashboardRouter(store, { session: { secret: 'short' } })).toThrow(/at least 32 bytes/);
    expect(() => dashboardRouter(store, { session: { ttlMs: 1 } })).toThrow(/ttlMs/);
    expect(() => dashboardRouter(store, { allowedOrigins: ['https://x.example/path'] })).toThrow(/allowedOrigins/);
  });

  it('sets Secure on the cookie behind an HTTPS proxy when trusted', async () => {
    const store = new MemoryKeyStore();
    const seeded = await seedAccount(store, { hasher });
    const app = await startDashboardApp('express5', store, { hasher, dashboard: { trustProxy: true } });
    closers.push(app.close);
    const client = new DashboardClient(app.origin);
    const host = new URL(app.origin).host;
    const answer = await client.call(
      'POST',
      'api/session',
      { key: seeded.billingKey },
      { 'x-forwarded-proto': 'https', origin: `https://${host}` },
    );
    expect(answer.status).toBe(200);
    expect(answer.headers.get('set-cookie')).toMatch(/; HttpOnly; SameSite=Strict; Secure$/);
  });
});
