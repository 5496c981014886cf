import type { AccountRecord, KeyRecord, KeyStore, KeyType } from '../types.js';

/** One hit of a fixed-window counter, with the window already worked out by the store. */
export interface CounterHit {
  name: string;
  /** Start of the window (epoch ms): part of the counter's entry name. */
  windowStart: number;
  /** Added to the counter, ≥ 0 (0 reads it). */
  amount: number;
  /** How long the counter's entry lives. */
  ttlMs: number;
}

/**
 * Where the operations of a `KeyvKeyStore` run. The store picks one backend in its constructor:
 * `RedisBackend` on `@keyv/redis` (one Redis command or Lua script per operation, atomic across
 * processes), `LockedBackend` on any other Keyv adapter (atomic within this process, under a lock
 * per Keyv instance). The store checks every argument first (amounts, `updateKey`'s fields), so a
 * backend is given valid ones only; the members it shares with `KeyStore` answer as there.
 */
export interface KeyvBackend
  extends Pick<
    KeyStore,
    | 'createAccount'
    | 'changeBalance'
    | 'insertKey'
    | 'getKey'
    | 'updateKey'
    | 'deleteKey'
    | 'touchKey'
    | 'rotateKey'
    | 'reserveSpend'
    | 'settleSpend'
    | 'extendHold'
    | 'listLedger'
    | 'findUsageEntry'
    | 'getUsage'
    | 'trimLedger'
  > {
  /** `KeyStore.getAccount`, always a promise here (both backends read Keyv or Redis). */
  getAccount(id: string): Promise<AccountRecord | null>;
  /** `KeyStore.getKeyByHandle`, always a promise here. */
  getKeyByHandle(handle: string): Promise<KeyRecord | null>;
  /** Whether the atomic operations are atomic across processes (true on Redis only). */
  readonly sharedAcrossProcesses: boolean;
  /** Up to `limit + 1` keys of the account and type with an id greater than `after`, ascending (the extra one tells "has more"). */
  listKeys(accountId: string, type: KeyType, after: number, limit: number): Promise<KeyRecord[]>;
  /** The counter's value after the hit. */
  hitCounter(hit: CounterHit): Promise<number>;
  /** `KeyStore.releaseExpiredHolds` with its `limit` filled in. */
  releaseExpiredHolds(now: number, limit: number): Promise<number>;
}
