import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { KeyHasher, MemoryKeyStore, ModelSwitchError, generateApiKey } from '../../src/index.js';
import { buildApp } from '../app.js';
import { seedAccount } from '../helpers.js';

/**
 * scrypt that the test can hold: while `held`, each run is logged when it starts and waits until the
 * test releases it, so queue order is read from the log instead of from a clock.
 */
const scrypt = vi.hoisted(() => ({ held: false, started: [] as string[], waiting: [] as Array<() => void> }));

vi.mock('scrypt-kdf', async (importOriginal) => {
  const module = await importOriginal<Record<string, unknown>>();
  const real = (module.default ?? module) as {
    kdf: (...args: unknown[]) => Promise<Uint8Array>;
    verify: (...args: unknown[]) => Promise<boolean>;
  };
  const turn = async (kind: string) => {
    if (!scrypt.held) return;
    scrypt.started.push(kind);
    await new Promise<void>((resolve) => scrypt.waiting.push(resolve));
  };
  return {
    default: {
      kdf: async (...args: unknown[]) => {
        await turn('create');
        return real.kdf(...args);
      },
      verify: async (...args: unknown[]) => {
        await turn('verify');
        return real.verify(...args);
      },
    },
  };
});

/** Waits (without asserting any time) until `condition` holds: the event loop turns until it does. */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setImmediate(resolve));
}

/** Lets every held scrypt run go, and the ones after them. */
function releaseAll(): void {
  scrypt.held = false;
  for (const release of scrypt.waiting.splice(0)) release();
}

afterEach(() => {
  releaseAll();
  scrypt.started = [];
});

function refusalOf(error: unknown) {
  expect(error).toBeInstanceOf(ModelSwitchError);
  const { status, code, headers } = error as ModelSwitchError;
  return { status, code, retryAfter: Number(headers['Retry-After']) };
}

describe('KeyHasher: verifications before new keys, new keys bounded per account and in all', () => {
  it('runs a waiting verification before the hashes of new keys that queued earlier', async () => {
    const hasher = new KeyHasher({ scrypt: { logN: 10 }, maxHashesPerAccount: 10 });
    const hash = await hasher.hash(generateApiKey('proxy').value);
    const key = generateApiKey('proxy');
    const stored = await hasher.hash(key.value);
    scrypt.held = true;
    const creations = Array.from({ length: 5 }, () => hasher.hash(generateApiKey('proxy').value, { account: 'acct_a' }));
    await until(() => scrypt.started.length === 2);
    const verified = hasher.verify(key.value, stored);
    expect(hasher.hashesInFlight).toBe(6);
    // One slot frees: the verification that queued last goes first.
    scrypt.waiting.shift()?.();
    await until(() => scrypt.started.length === 3);
    expect(scrypt.started).toEqual(['create', 'create', 'verify']);
    releaseAll();
    expect(await verified).toBe(true);
    expect((await Promise.all(creations)).every((made) => typeof made === 'string' && made !== hash)).toBe(true);
  });

  it('refuses a hash made for an account that has maxHashesPerAccount running or waiting with 429 and Retry-After', async () => {
    const hasher = new KeyHasher({ scrypt: { logN: 10 }, maxHashesPerAccount: 3 });
    scrypt.held = true;
    const admitted = Array.from({ length: 3 }, () => hasher.hash(generateApiKey('proxy').value, { account: 'acct_a' }));
    const refused = await hasher.hash(generateApiKey('proxy').value, { account: 'acct_a' }).catch((error: unknown) => error);
    expect(refusalOf(refused)).toEqual({ status: 429, code: 'rate_limit_exceeded', retryAfter: expect.any(Number) });
    expect((refused as ModelSwitchError).message).toBe(
      'Too many API keys are being created for this account right now (at most 3 at once). Create them one after another.',
    );
    expect(Number((refused as ModelSwitchError).headers['Retry-After'])).toBeGreaterThanOrEqual(1);
    // Another account, and the host's own calls (no account), are not affected.
    const other = hasher.hash(generateApiKey('proxy').value, { account: 'acct_b' });
    const host = hasher.hash(generateApiKey('proxy').value);
    expect(hasher.refusedHashes).toBe(1);
    releaseAll();
    await Promise.all([...admitted, other, host]);
    // Once they ended, the account may create again.
    expect(typeof (await hasher.hash(generateApiKey('proxy').value, { account: 'acct_a' }))).toBe('string');
  });

  it('refuses a hash made for an account with 503 server_busy once maxQueuedHashes wait', async () => {
    const hasher = new KeyHasher({ scrypt: { logN: 10 }, maxConcurrentHashes: 1, maxQueuedHashes: 2 });
    scrypt.held = true;
    const admitted = ['a', 'b', 'c'].map((account) => hasher.hash(generateApiKey('proxy').value, { account }));
    const refused = await hasher.hash(generateApiKey('proxy').value, { account: 'd' }).catch((error: unknown) => error);
    expect(refusalOf(refused)).toEqual({ status: 503, code: 'server_busy', retryAfter: expect.any(Number) });
    expect((refused as ModelSwitchError).message).toBe('Too many API keys are being created right now. Please retry shortly.');
    releaseAll();
    expect(await Promise.all(admitted)).toHaveLength(3);
  });

  it('checks the new options', () => {
    expect(() => new KeyHasher({ maxHashesPerAccount: 0 })).toThrow('KeyHasher: maxHashesPerAccount must be a positive integer, got 0');
    expect(() => new KeyHasher({ maxQueuedHashes: -1 })).toThrow(
      'KeyHasher: maxQueuedHashes must be an integer ≥ 0 (or null for no bound), got -1',
    );
    expect(() => new KeyHasher({ maxQueuedHashes: null })).not.toThrow();
  });
});

describe('300 key creations by one billing key', () => {
  it("leave another account's first request ahead of them in the scrypt queue, and are refused 429 past the account's bound", async () => {
    const hasher = new KeyHasher({ scrypt: { logN: 10 } });
    const store = new MemoryKeyStore();
    const flooder = await seedAccount(store, { hasher });
    const victim = await seedAccount(store, { hasher });
    const app = buildApp('express5', store, { hasher });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    // The flooder's billing key is verified (cached) before the flood, as in a real one.
    const warm = await fetch(`${base}/api/keys`, { headers: { authorization: `Bearer ${flooder.billingKey}` } });
    expect(warm.status).toBe(200);
    try {
      scrypt.held = true;
      const creates = Array.from({ length: 300 }, (_, i) =>
        fetch(`${base}/api/keys`, {
          method: 'POST',
          headers: { authorization: `Bearer ${flooder.billingKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ name: `flood ${i}` }),
        }).then(async (res) => ({ status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.json() })),
      );
      // Two creations run, two wait (the account's bound of 4); the other 296 are answered at once.
      await until(() => hasher.refusedHashes === 296);
      await until(() => hasher.hashesInFlight === 4);
      const first = fetch(`${base}/v1/whoami`, { headers: { authorization: `Bearer ${victim.proxyKey}` } });
      await until(() => hasher.hashesInFlight === 5);
      scrypt.waiting.shift()?.();
      await until(() => scrypt.started.length === 3);
      // The other account's verification took the free slot before the creations queued before it.
      expect(scrypt.started).toEqual(['create', 'create', 'verify']);
      releaseAll();
      const victimAnswer = await first;
      expect({ status: victimAnswer.status, body: await victimAnswer.json() }).toEqual({
        status: 200,
        body: { keyId: victim.proxyKeyId, accountId: victim.account.id },
      });
      const answers = await Promise.all(creates);
      const created = answers.filter((answer) => answer.status === 201);
      const refused = answers.filter((answer) => answer.status === 429);
      expect({ created: created.length, refused: refused.length }).toEqual({ created: 4, refused: 296 });
      expect(refused[0]).toEqual({
        status: 429,
        retryAfter: expect.stringMatching(/^[1-9][0-9]?$/),
        body: {
          error: {
            message: 'Too many API keys are being created for this account right now (at most 4 at once). Create them one after another.',
            type: 'rate_limit_error',
            code: 'rate_limit_exceeded',
          },
        },
      });
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
