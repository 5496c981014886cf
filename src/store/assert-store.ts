import { ConfigurationError } from '../errors/configuration-error.js';
import type { KeyStore } from './types.js';

/** Throws a coded error at creation time when a factory is not given a store. */
export function assertStore(store: unknown, factory: string): asserts store is KeyStore {
  const methods = ['getKeyByHandle', 'getAccount', 'insertKey', 'hitCounter'] as const;
  if (typeof store !== 'object' || store === null || methods.some((m) => typeof (store as Record<string, unknown>)[m] !== 'function')) {
    throw new ConfigurationError('ERR_MS_STORE', `${factory}(store): store must implement KeyStore, e.g. new MemoryKeyStore()`);
  }
}
