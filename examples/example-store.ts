/**
 * The store of the example gateway, from the environment:
 * - `DATABASE_URL` set: `PostgresKeyStore` (keys, balances and the ledger are durable, several
 *   gateway processes share them), in the schema `DATABASE_SCHEMA` (default `modelswitch`),
 *   migrated explicitly here at startup;
 * - else `REDIS_URL` set: `KeyvKeyStore` on Redis (keys survive a restart, several processes share them);
 * - else the in-memory store.
 */
import KeyvRedis from '@keyv/redis';
import Keyv from 'keyv';
import { type KeyStore, MemoryKeyStore } from '../src/index.js';
import { KeyvKeyStore } from '../src/store/keyv/keyv-store.js';

/** A store and one line saying which one it is, for the startup log. */
export interface ExampleStore {
  store: KeyStore;
  description: string;
}

/**
 * Picks the example's store from the environment; a PostgreSQL store is migrated before it is
 * answered (the store never migrates on its own).
 *
 * @example
 * ```ts
 * const { store, description } = await exampleStore(process.env);
 * console.log(description); // "key store: PostgreSQL at 127.0.0.1:5432/gateway, schema modelswitch (…)"
 * ```
 */
export async function exampleStore(env: NodeJS.ProcessEnv = process.env): Promise<ExampleStore> {
  if (env.DATABASE_URL) {
    // Imported only here, so the example runs without pg when DATABASE_URL is not set.
    const { PostgresKeyStore } = await import('../src/store/postgres/index.js');
    const store = new PostgresKeyStore({
      connectionString: env.DATABASE_URL,
      ...(env.DATABASE_SCHEMA ? { schema: env.DATABASE_SCHEMA } : {}),
    });
    try {
      const { version } = await store.migrate();
      return {
        store,
        description: `key store: PostgreSQL at ${where(env.DATABASE_URL)}, schema ${store.schema} at version ${version} (keys, balances and the ledger are durable)`,
      };
    } catch (error) {
      await store.close();
      throw error;
    }
  }
  const url = env.REDIS_URL;
  if (!url) {
    return {
      store: new MemoryKeyStore(),
      description: 'key store: in memory (set DATABASE_URL or REDIS_URL to keep keys across restarts)',
    };
  }
  const store = new KeyvKeyStore(new Keyv(new KeyvRedis(url)));
  // Only the host part: a URL may carry a password, which must never reach a log.
  return { store, description: `key store: Redis at ${new URL(url).host} (keys survive a restart)` };
}

/** Host, port and database of a connection string, never its user or password. */
function where(connectionString: string): string {
  try {
    const url = new URL(connectionString);
    return `${url.host || 'the local socket'}${url.pathname}`;
  } catch {
    return 'the configured server';
  }
}
