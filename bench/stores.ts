import { randomBytes } from 'node:crypto';
import type { KeyHasher } from '../src/keys/hashing.js';
import type { KeyStore } from '../src/store/types.js';
import { KeyvKeyStore, MemoryKeyStore, createAccount, issueKey, sampleKeyRecord } from './package.js';
import { fillerHash, randomHandle } from './common.js';

/** A store for one bench scenario, and how to remove what it wrote. */
export interface BenchStore {
  store: KeyStore;
  kind: 'memory' | 'redis';
  close(): Promise<void>;
}

/** Why the Redis scenarios cannot run here, or `null` when they can. */
export function redisUnavailableReason(): string | null {
  if (!process.env.REDIS_URL) return 'REDIS_URL is not set';
  return null;
}

/** A MemoryKeyStore, or a KeyvKeyStore on Redis under a random namespace that `close()` deletes. */
export async function openStore(kind: 'memory' | 'redis'): Promise<BenchStore> {
  if (kind === 'memory') return { store: new MemoryKeyStore(), kind, close: async () => {} };
  const reason = redisUnavailableReason();
  if (reason) throw new Error(`Redis store unavailable: ${reason}`);
  const url = process.env.REDIS_URL as string;
  const { default: Keyv } = await import('keyv');
  const { default: KeyvRedis, createClient } = await import('@keyv/redis');
  const namespace = `msbench${randomBytes(6).toString('hex')}`;
  const adapter = new KeyvRedis(url);
  const keyv = new Keyv({ store: adapter, namespace });
  const store = new KeyvKeyStore(keyv);
  return {
    store,
    kind,
    async close() {
      const client = createClient({ url });
      await client.connect();
      let cursor = '0';
      do {
        const reply = await client.scan(cursor, { MATCH: `*${namespace}*`, COUNT: 10_000 });
        cursor = String(reply.cursor);
        if (reply.keys.length > 0) await client.unlink(reply.keys);
      } while (cursor !== '0');
      await client.quit();
      await keyv.disconnect().catch(() => {});
    },
  };
}

/** An account plus `count` proxy keys issued with `hasher` (real scrypt hashes at its parameters). */
export async function issueProxyKeys(
  store: KeyStore,
  hasher: KeyHasher,
  count: number,
  rateLimit: { requests: number; interval: string } | null = UNLIMITED,
): Promise<Array<{ key: string; handle: string; id: number }>> {
  const account = await createAccount(store, { balance: 1_000_000 });
  const issued: Array<{ key: string; handle: string; id: number }> = [];
  for (let start = 0; start < count; start += 16) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(16, count - start) }, () =>
        issueKey(store, { accountId: account.id, type: 'proxy', name: 'bench', rateLimit }, { hasher }),
      ),
    );
    for (const { key, record } of batch) issued.push({ key, handle: record.handle, id: record.id });
  }
  return issued;
}

/**
 * The rate limit given to benchmark keys: counted on every request like any limit, but so high that
 * it never answers 429 (the docs' default, 1000 per 10 s, would cap the load generator).
 */
export const UNLIMITED = { requests: 1_000_000_000, interval: '10s' };

/**
 * Fills the store with `count` keys that are never used: real records with random handles and
 * hash-sized random strings (scrypt for a million keys would take a day; nothing verifies them).
 */
export async function seedFillerKeys(store: KeyStore, count: number, concurrency: number): Promise<void> {
  const account = await createAccount(store, { balance: 1 });
  const now = Date.now();
  let made = 0;
  async function worker(): Promise<void> {
    while (made < count) {
      made++;
      const handle = randomHandle();
      const record = sampleKeyRecord(account.id, {
        handle,
        name: 'filler',
        prefix: `ms-${handle.slice(0, 4)}`,
        hash: fillerHash(),
        createdAt: now,
      });
      await store.insertKey(record);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, () => worker()));
}
