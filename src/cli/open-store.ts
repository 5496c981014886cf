import KeyvRedis from '@keyv/redis';
import Keyv from 'keyv';
import { KeyvKeyStore } from '../store/keyv/keyv-store.js';
import type { KeyStore } from '../store/types.js';
import { CliInputError } from './errors.js';

/** How long the CLI waits for a Redis connection before the command fails with exit code 3. */
export const REDIS_CONNECT_TIMEOUT_MS = 5000;

/** A store the CLI opened, and what `migrate` does on it. */
export interface CliStore {
  readonly store: KeyStore;
  /** `redis` or `postgres`: which kind of store the URL named. */
  readonly kind: 'redis' | 'postgres';
  /** Brings the store's schema up to date and says what it did, in one line. */
  migrate(): Promise<{ line: string; json: Record<string, unknown> }>;
  close(): Promise<void>;
}

/** What picks the store: `--store` (or the environment's `MODELSWITCH_STORE`), `--prefix`, `--schema`. */
export interface StoreSelection {
  url: string | undefined;
  prefix: string | undefined;
  schema: string | undefined;
}

/**
 * Opens the store a URL names: `redis://` / `rediss://` → `KeyvKeyStore` on Redis (with `prefix`),
 * `postgres://` / `postgresql://` → `PostgresKeyStore` (with `schema`; `pg` is loaded only then).
 * The URL is never put in an error: it may carry a password.
 */
export async function openStore(selection: StoreSelection): Promise<CliStore> {
  const { url } = selection;
  if (url === undefined || url === '') {
    throw new CliInputError('no store: pass --store redis://… or postgres://…, or set MODELSWITCH_STORE');
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'redis' || scheme === 'rediss') {
    if (selection.schema !== undefined) throw new CliInputError('--schema is for a postgres:// store; a Redis store takes --prefix');
    // One command, one connection: an unreachable server fails the command (exit 3) instead of
    // being retried for ever, and a server that does not answer the connection in time too.
    const adapter = new KeyvRedis({ url, socket: { connectTimeout: REDIS_CONNECT_TIMEOUT_MS, reconnectStrategy: false } });
    const store = new KeyvKeyStore(new Keyv(adapter), selection.prefix === undefined ? {} : { prefix: selection.prefix });
    return {
      store,
      kind: 'redis',
      migrate: async () => ({ line: 'Redis needs no migration: nothing to do', json: { kind: 'redis', applied: [] } }),
      close: () => store.close(),
    };
  }
  if (scheme === 'postgres' || scheme === 'postgresql') {
    if (selection.prefix !== undefined) throw new CliInputError('--prefix is for a redis:// store; a PostgreSQL store takes --schema');
    // Imported only for a PostgreSQL store: the CLI works on Redis without pg installed.
    const { PostgresKeyStore } = await import('../store/postgres/index.js');
    const store = new PostgresKeyStore({ connectionString: url, ...(selection.schema === undefined ? {} : { schema: selection.schema }) });
    return {
      store,
      kind: 'postgres',
      migrate: async () => {
        const result = await store.migrate();
        const applied = result.applied.map((step) => `${step.version} (${step.name})`).join(', ');
        return {
          line:
            result.applied.length === 0
              ? `Schema ${store.schema} is up to date at version ${result.version}`
              : `Schema ${store.schema} migrated to version ${result.version}; applied ${applied}`,
          json: { kind: 'postgres', schema: store.schema, version: result.version, applied: result.applied },
        };
      },
      close: () => store.close(),
    };
  }
  throw new CliInputError('--store must be a redis://, rediss://, postgres:// or postgresql:// URL');
}
