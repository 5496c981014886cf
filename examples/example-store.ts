/**
 * The store of the example gateway: KeyvKeyStore on Redis when `REDIS_URL` is set (keys then
 * survive a restart and several gateway processes can share them), the in-memory store otherwise.
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
 * Picks the example's store from the environment.
 *
 * @example
 * ```ts
 * const { store, description } = exampleStore(process.env);
 * console.log(description); // "key store: Redis at 127.0.0.1:6379 (keys survive a restart)"
 * ```
 */
export function exampleStore(env: NodeJS.ProcessEnv = process.env): ExampleStore {
  const url = env.REDIS_URL;
  if (!url) {
    return { store: new MemoryKeyStore(), description: 'key store: in memory (set REDIS_URL to keep keys across restarts)' };
  }
  const store = new KeyvKeyStore(new Keyv(new KeyvRedis(url)));
  // Only the host part: a URL may carry a password, which must never reach a log.
  return { store, description: `key store: Redis at ${new URL(url).host} (keys survive a restart)` };
}
