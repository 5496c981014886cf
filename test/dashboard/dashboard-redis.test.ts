import { afterAll, describe, expect, it } from 'vitest';
import { KeyvKeyStore } from '../../src/index.js';
import { fastHasher, seedAccount, testClock } from '../helpers.js';
import { REDIS_URL, redisKeyv, redisSkipReason, removeKeys, runPrefix } from '../stores/redis-env.js';
import { DashboardClient, startDashboardApp } from './dashboard-app.js';

const hasher = fastHasher();

describe.skipIf(!REDIS_URL)(`the dashboard on two instances sharing one Redis${redisSkipReason ? ` (${redisSkipReason})` : ''}`, () => {
  const url = REDIS_URL as string;
  const prefix = runPrefix();
  // Two apps, each with its own store and Redis connection (as two processes), the same session secret.
  const storeA = new KeyvKeyStore(redisKeyv(url), { prefix });
  const storeB = new KeyvKeyStore(redisKeyv(url), { prefix });
  const closers: Array<() => Promise<void>> = [];

  afterAll(async () => {
    for (const close of closers) await close();
    await Promise.all([storeA.close(), storeB.close()]);
    await removeKeys(url, prefix);
  });

  async function twoInstances() {
    // One fixed clock: the sign-in counter's window cannot end halfway through a test.
    const clock = testClock(Date.now());
    const a = await startDashboardApp('express5', storeA, { hasher, now: clock.now });
    const b = await startDashboardApp('express4', storeB, { hasher, now: clock.now });
    closers.push(a.close, b.close);
    return { a: new DashboardClient(a.origin), b: new DashboardClient(b.origin) };
  }

  it('a session made on one instance works on the other, and a sign-out on one ends it on the other', async () => {
    const { a, b } = await twoInstances();
    const seeded = await seedAccount(storeA, { hasher });
    expect((await a.signIn(seeded.billingKey)).status).toBe(200);
    b.cookie = a.cookie;
    b.csrfToken = a.csrfToken;
    const created = await b.call('POST', 'api/keys', { name: 'made on B' });
    expect(created.status).toBe(201);
    expect((await a.call('GET', 'api/keys')).text).toContain('made on B');
    expect((await a.call('DELETE', 'api/session')).status).toBe(200);
    const replay = await b.call('GET', 'api/keys');
    expect(replay.status).toBe(401);
    expect((replay.body as { error: { code: string } }).error.code).toBe('session_required');
  });

  it('counts failed sign-ins of one address across instances', async () => {
    const { a, b } = await twoInstances();
    const seeded = await seedAccount(storeA, { hasher });
    for (let attempt = 0; attempt < 10; attempt++) {
      expect((await (attempt % 2 === 0 ? a : b).call('POST', 'api/session', { key: 'mk-nothing' })).status).toBe(401);
    }
    const throttled = await b.call('POST', 'api/session', { key: seeded.billingKey });
    expect(throttled.status).toBe(429);
    expect(throttled.headers.get('retry-after')).toMatch(/^\d+$/);
  });
});
