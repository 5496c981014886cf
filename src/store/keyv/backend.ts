import type {
  AccountRecord,
  KeyChanges,
  KeyRecord,
  KeyType,
  NewKeyRecord,
  ReservationResult,
  SpendReservation,
  SpendSettlement,
} from '../types.js';

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
 * per Keyv instance). The store checks every argument first, so a backend is given valid ones only,
 * and answers with the store's own result types.
 */
export interface KeyvBackend {
  /** Whether the atomic operations are atomic across processes (true on Redis only). */
  readonly sharedAcrossProcesses: boolean;
  /** Stores `account`, a copy the caller no longer holds; rejects when the id exists. */
  createAccount(account: AccountRecord): Promise<AccountRecord>;
  getAccount(id: string): Promise<AccountRecord | null>;
  adjustBalance(accountId: string, delta: number): Promise<AccountRecord | null>;
  insertKey(key: NewKeyRecord): Promise<KeyRecord>;
  getKey(id: number): Promise<KeyRecord | null>;
  getKeyByHandle(handle: string): Promise<KeyRecord | null>;
  /** Up to `limit + 1` keys of the account and type with an id greater than `after`, ascending (the extra one says "has more"). */
  listKeys(accountId: string, type: KeyType, after: number, limit: number): Promise<KeyRecord[]>;
  /** `changes` holds only fields `updateKey` may change, none of them `undefined`. */
  updateKey(id: number, changes: KeyChanges): Promise<KeyRecord | null>;
  deleteKey(id: number): Promise<boolean>;
  touchKey(id: number, at: number): Promise<void>;
  reserveSpend(reservation: SpendReservation): Promise<ReservationResult>;
  settleSpend(settlement: SpendSettlement): Promise<void>;
  /** The counter's value after the hit. */
  hitCounter(hit: CounterHit): Promise<number>;
}
