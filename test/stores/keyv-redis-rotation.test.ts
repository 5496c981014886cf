import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { KeyvKeyStore } from '../../src/store/keyv/keyv-store.js';
import { type SeededAccount, fastHasher, seedAccount } from '../helpers.js';
import { type MockUpstream, startTestUpstream } from '../proxy/mock-upstream.js';
import { type GatewayProcess, startGatewayProcess, stopGatewayProcess } from './gateway-processes.js';
import { REDIS_URL, redisKeyv, redisSkipReason, removeKeys, runPrefix } from './redis-env.js';

const GATEWAY_SCRIPT = fileURLToPath(new URL('./redis-gateway-process.ts', import.meta.url));
const START = Date.parse('2026-11-22T12:00:00Z');
const HOUR = 3_600_000;
const INVALID_KEY = { error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } };
const DEACTIVATED = { error: { message: 'API key has been deactivated', type: 'permission_error', code: 'key_deactivated' } };

describe.skipIf(!REDIS_URL)(
  `key rotation across two gateway processes sharing one Redis${redisSkipReason ? ` (${redisSkipReason})` : ''}`,
  () => {
    const url = REDIS_URL as string;
    const prefix = runPrefix();
    const hasher = fastHasher();
    const store = new KeyvKeyStore(redisKeyv(url), { prefix });
    let upstream: MockUpstream | undefined;
    let gateways: GatewayProcess[] = [];
    const children: ChildProcess[] = [];
    let seeded: SeededAccount;

    beforeAll(async () => {
      const mock = await startTestUpstream();
      upstream = mock;
      gateways = await Promise.all(
        [0, 1].map(() =>
          startGatewayProcess(
            GATEWAY_SCRIPT,
            { REDIS_URL: url, GATEWAY_PREFIX: prefix, GATEWAY_UPSTREAM: mock.url, GATEWAY_NOW: String(START) },
            children,
          ),
        ),
      );
    }, 60_000);

    afterAll(async () => {
      try {
        await Promise.all(children.map(stopGatewayProcess));
        await upstream?.close();
        for (const gateway of gateways) expect(gateway.stderr).toEqual([]);
      } finally {
        await store.close();
        await removeKeys(url, prefix);
      }
    }, 30_000);

    beforeEach(async () => {
      await setClocks(START);
      seeded = await seedAccount(store, { hasher, now: START });
    });

    /** Moves both processes' clocks to `at` (epoch ms). */
    async function setClocks(at: number): Promise<void> {
      for (const gateway of gateways) {
        const response = await fetch(`${gateway.api.replace(/\/api$/, '')}/clock/${at}`, { method: 'PUT' });
        expect(response.status).toBe(204);
      }
    }

    function on(index: number): GatewayProcess {
      return gateways[index] as GatewayProcess;
    }

    /** `GET /v1/auth/key` with `key` on process `index`: status and body. */
    async function keyInfo(index: number, key: string): Promise<{ status: number; body: unknown }> {
      const response = await fetch(`${on(index).v1}/auth/key`, { headers: { authorization: `Bearer ${key}` } });
      return { status: response.status, body: await response.json() };
    }

    async function statuses(key: string): Promise<number[]> {
      return [(await keyInfo(0, key)).status, (await keyInfo(1, key)).status];
    }

    async function rotate(index: number, id: number, body: unknown, billingKey = seeded.billingKey) {
      const response = await fetch(`${on(index).api}/keys/${id}/rotate`, {
        method: 'POST',
        headers: { authorization: `Bearer ${billingKey}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return {
        status: response.status,
        body: (await response.json()) as { key: string; previousKeyExpiresAt: string | null; active: boolean },
      };
    }

    it('the previous secret works on both processes until the deadline of each one’s clock, then answers 401 on both', async () => {
      const oldKey = seeded.proxyKey;
      // Both processes verify (and cache) the old secret first.
      expect(await statuses(oldKey)).toEqual([200, 200]);
      const rotated = await rotate(0, seeded.proxyKeyId, { grace_period: '1h' });
      expect({ status: rotated.status, deadline: rotated.body.previousKeyExpiresAt }).toEqual({
        status: 200,
        deadline: '2026-11-22T13:00:00Z',
      });
      expect(await statuses(rotated.body.key)).toEqual([200, 200]);
      expect(await statuses(oldKey)).toEqual([200, 200]);
      await setClocks(START + HOUR - 1);
      expect(await statuses(oldKey)).toEqual([200, 200]);
      await setClocks(START + HOUR);
      expect(await keyInfo(0, oldKey)).toEqual({ status: 401, body: INVALID_KEY });
      expect(await keyInfo(1, oldKey)).toEqual({ status: 401, body: INVALID_KEY });
      expect(await statuses(rotated.body.key)).toEqual([200, 200]);
    });

    it('a second rotation on the other process ends the oldest secret on both at once', async () => {
      const first = seeded.proxyKey;
      expect(await statuses(first)).toEqual([200, 200]);
      const second = await rotate(1, seeded.proxyKeyId, { grace_period: '1h' });
      expect(await statuses(second.body.key)).toEqual([200, 200]);
      expect(await statuses(first)).toEqual([200, 200]);
      const third = await rotate(0, seeded.proxyKeyId, { grace_period: 600 });
      expect(third.body.previousKeyExpiresAt).toBe('2026-11-22T12:10:00Z');
      expect(await statuses(first)).toEqual([401, 401]);
      expect(await statuses(second.body.key)).toEqual([200, 200]);
      expect(await statuses(third.body.key)).toEqual([200, 200]);
      await setClocks(START + 600_000);
      expect(await statuses(second.body.key)).toEqual([401, 401]);
      expect(await statuses(third.body.key)).toEqual([200, 200]);
    });

    it('rotating a deactivated key keeps it deactivated on both processes', async () => {
      const oldKey = seeded.proxyKey;
      const off = await fetch(`${on(0).api}/keys/${seeded.proxyKeyId}`, {
        method: 'PATCH',
        headers: { authorization: `Bearer ${seeded.billingKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ active: false }),
      });
      expect(off.status).toBe(200);
      const rotated = await rotate(1, seeded.proxyKeyId, { grace_period: '1h' });
      expect({ status: rotated.status, active: rotated.body.active }).toEqual({ status: 200, active: false });
      for (const key of [oldKey, rotated.body.key]) {
        expect(await keyInfo(0, key)).toEqual({ status: 403, body: DEACTIVATED });
        expect(await keyInfo(1, key)).toEqual({ status: 403, body: DEACTIVATED });
      }
    });

    it("answers 404 to another account's billing key and 400 to a bad grace period, changing nothing", async () => {
      const other = await seedAccount(store, { hasher, now: START });
      const before = await store.getKey(seeded.proxyKeyId);
      const foreign = await rotate(1, seeded.proxyKeyId, { grace_period: '1h' }, other.billingKey);
      expect(foreign).toEqual({
        status: 404,
        body: {
          error: { message: `No API key with id ${seeded.proxyKeyId}`, type: 'not_found_error', code: 'key_not_found', param: 'id' },
        },
      });
      const bad = await rotate(0, seeded.proxyKeyId, { grace_period: '8d' });
      expect(bad.status).toBe(400);
      expect(bad.body).toEqual({
        error: {
          message:
            'grace_period must be a duration from 0 to 7 days: a whole number of seconds, or a string like "90s", "15m", "1h" or "7d"',
          type: 'invalid_request_error',
          code: 'invalid_request',
          param: 'grace_period',
        },
      });
      expect(await store.getKey(seeded.proxyKeyId)).toEqual(before);
      expect(await statuses(seeded.proxyKey)).toEqual([200, 200]);
    });
  },
);
