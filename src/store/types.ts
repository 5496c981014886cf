/** `proxy` keys (`ms-`) call `/v1`; `billing` keys (`mk-`) call the management API `/api`. */
export type KeyType = 'proxy' | 'billing';

/** When a key's `usage` starts again from zero (UTC calendar periods; weeks start on Monday). */
export type LimitReset = 'daily' | 'weekly' | 'monthly';

/** A per-key rate limit: `requests` per `interval` (`"10s"`, `"1m"`, `"1h"`, `"1d"`), optional `tokens` per minute. */
export interface RateLimitSetting {
  /** Requests admitted per interval, ≥ 1. */
  requests: number;
  /** `<n>s`, `<n>m`, `<n>h` or `<n>d`. */
  interval: string;
  /** Tokens (prompt + completion) per minute, counted from metered usage. Optional. */
  tokens?: number;
}

/**
 * A stored key. `hash` never leaves the store and the middleware; the full key value is never stored.
 * Times are epoch milliseconds; money is USD.
 */
export interface KeyRecord {
  /** Positive integer, unique per store, allocated by the store. */
  id: number;
  /** The non-secret lookup handle embedded in the key; unique per store. */
  handle: string;
  type: KeyType;
  accountId: string;
  name: string;
  /** First 7 characters of the key, e.g. `ms-abc1`. */
  prefix: string;
  /** scrypt-kdf hash of the whole key, base64. */
  hash: string;
  active: boolean;
  createdAt: number;
  expiresAt: number | null;
  lastUsedAt: number | null;
  /** USD spent through this key in `usagePeriod`. */
  usage: number;
  /** Which limit period `usage` belongs to (`2026-11-22`, `2026-W47`, `2026-11`), or `null` for lifetime. */
  usagePeriod: string | null;
  /** USD held by requests in flight (reserved, not yet settled). */
  reserved: number;
  /** USD spend cap per period, or `null` for none. */
  limit: number | null;
  limitReset: LimitReset | null;
  /** `null` means the host's default. */
  rateLimit: RateLimitSetting | null;
}

/** An account: owns keys and a USD balance. */
export interface AccountRecord {
  id: string;
  /** USD, may be fractional. */
  balance: number;
  /** USD held by requests in flight. */
  reserved: number;
  isFreeTier: boolean;
  createdAt: number;
}

/** What `insertKey` is given: everything but the `id`, which the store allocates. */
export type NewKeyRecord = Omit<KeyRecord, 'id'>;

/** The fields `updateKey` may change. */
export type KeyChanges = Partial<Pick<KeyRecord, 'name' | 'active' | 'expiresAt' | 'limit' | 'limitReset' | 'rateLimit'>>;

/** Which page of an account's keys to list. */
export interface KeyPageRequest {
  type: KeyType;
  /** Page size, 1–1000. */
  limit: number;
  /** List keys with an id greater than this. */
  after?: number;
}

/** One page of an account's keys, in ascending `id` order. */
export interface KeyPage {
  keys: KeyRecord[];
  /** Whether keys with a larger id exist. */
  hasMore: boolean;
}

/** Reserve `amount` USD for a request before it runs. */
export interface SpendReservation {
  keyId: number;
  accountId: string;
  /** USD to hold, ≥ 0. */
  amount: number;
  /** The key's current limit period (see {@link KeyRecord.usagePeriod}); a different stored period resets `usage` to 0. */
  period: string | null;
}

/** Why a reservation was refused, or `ok`. */
export type ReservationResult =
  | { ok: true }
  | { ok: false; reason: 'key_not_found' | 'account_not_found' | 'spend_limit_reached' | 'insufficient_balance' };

/** Settle a reservation: release `reserved`, charge `cost`. */
export interface SpendSettlement {
  keyId: number;
  accountId: string;
  /** The amount reserved earlier (0 when nothing was reserved). */
  reserved: number;
  /** USD actually spent, ≥ 0: added to the key's `usage` and taken from the account's `balance`. */
  cost: number;
  period: string | null;
  /** Time of use, written to the key's `lastUsedAt`. */
  now: number;
}

/** A fixed-window counter after a hit. */
export interface CounterState {
  /** The counter's value in the current window, including this hit. */
  count: number;
  /** When the current window ends (epoch ms). */
  resetAt: number;
}

/**
 * Where keys, accounts and counters live. Every member returns a Promise and is **required**
 * unless marked **Optional**. A store must never report "not found" for an outage: when its
 * backend fails it rejects, and the middleware answers 503 `store_unavailable`.
 *
 * Operations marked *atomic* must stay correct when many requests (and, for shared stores, many
 * gateway processes) call them at once. Run `keyStoreSuite` from `modelswitch-keys/testing`
 * against a custom store to check it.
 *
 * @example
 * ```ts
 * import { MemoryKeyStore, type KeyStore } from 'modelswitch-keys';
 * const store: KeyStore = new MemoryKeyStore();
 * ```
 */
export interface KeyStore {
  /**
   * Required. Creates an account. Rejects if an account with `account.id` exists.
   */
  createAccount(account: AccountRecord): Promise<AccountRecord>;
  /** Required. The account, or `null` when there is none with that id. */
  getAccount(id: string): Promise<AccountRecord | null>;
  /**
   * Required, atomic. Adds `delta` USD (negative to debit) to the balance and returns the updated
   * account, or `null` when there is none with that id. Rejects with a TypeError, changing nothing,
   * when `delta` is not a finite number or beyond ±1e12 (`MAX_USD`); a store may also reject
   * (changing nothing) a resulting balance beyond ±1e12.
   */
  adjustBalance(accountId: string, delta: number): Promise<AccountRecord | null>;
  /**
   * Required, atomic. Allocates the next positive integer id (never reused, unique even across
   * processes sharing the store), stores the record and returns it. Rejects if `handle` exists.
   */
  insertKey(key: NewKeyRecord): Promise<KeyRecord>;
  /** Required. The key with this id, or `null`. */
  getKey(id: number): Promise<KeyRecord | null>;
  /** Required. The key with this handle, or `null`. Called on every authenticated request: keep it one read. */
  getKeyByHandle(handle: string): Promise<KeyRecord | null>;
  /**
   * Required. Up to `limit` keys of the account and `type` with `id > after` (from the start when
   * `after` is undefined), ascending by id. Must not scan other accounts' keys.
   */
  listKeys(accountId: string, page: KeyPageRequest): Promise<KeyPage>;
  /**
   * Required, atomic. Applies `changes` to the key and returns it, or `null` when there is none.
   * Fields not named in `changes` (including `usage` and `reserved`) keep their current value.
   */
  updateKey(id: number, changes: KeyChanges): Promise<KeyRecord | null>;
  /** Required. Removes the key (and its handle); `true` if it existed. */
  deleteKey(id: number): Promise<boolean>;
  /** Required. Sets `lastUsedAt` to `at` if it is later; no-op for an unknown id. */
  touchKey(id: number, at: number): Promise<void>;
  /**
   * Required, atomic. Holds `amount` against both the key's `limit` (`usage + reserved + amount ≤ limit`
   * in `period`) and the account's balance (`balance − reserved ≥ amount`, and `> 0`), or refuses.
   * A stored period other than `period` starts again at 0 and is replaced by `period`, unless it is a
   * later period of the same reset rule (another instance's clock ran ahead): then its usage counts
   * and it stays. Rejects with a TypeError, changing nothing, when `amount` is NaN, infinite,
   * negative or over 1e12: never answer `ok` for an amount that cannot be compared.
   */
  reserveSpend(reservation: SpendReservation): Promise<ReservationResult>;
  /**
   * Required, atomic. Releases `reserved` from key and account, takes `cost` from the account's
   * balance, updates `lastUsedAt`, and charges `cost` to the key's `usage` by the stored period:
   * - the same as `period`: `usage += cost`;
   * - an earlier period of the same reset rule (periods of one rule have one length and sort as
   *   strings: `2026-11-21` < `2026-11-22`): `period` starts, `usage = cost`, `usagePeriod = period`;
   * - a later period, or one of another reset rule (`null` included): usage and period stay as they
   *   are. A request that reserved before the period rolled over and settles after a newer request
   *   must not replace the new period's usage (its cost is still debited from the account).
   *
   * A deleted key still debits its account. Rejects with a TypeError, changing nothing, when
   * `reserved` or `cost` is NaN, infinite, negative or over 1e12, or `now` is not finite.
   */
  settleSpend(settlement: SpendSettlement): Promise<void>;
  /**
   * Required, atomic. Adds `amount` (default 1) to the fixed-window counter `name` for the window of
   * `windowMs` that contains `now`, and returns its new value. Windows start at multiples of
   * `windowMs` since the epoch. `amount` 0 reads the counter. Rejects with a TypeError, changing
   * nothing, when `amount` is NaN, infinite or negative.
   */
  hitCounter(name: string, windowMs: number, now: number, amount?: number): Promise<CounterState>;
  /**
   * Optional, for stores that keep their data in this process (like `MemoryKeyStore`): the three
   * calls of the authentication hot path, answered synchronously. When present, `modelSwitchAuth`
   * and `keysRouter` use them for keys already in the verified-key cache and call `next()` without a
   * promise or a store timeout (a store in this process cannot hang). Each must behave like its
   * async namesake, and throw where that one would reject. A store that does I/O must not have it.
   */
  readonly sync?: SyncHotPath | undefined;
  /** Optional. Releases connections and timers. */
  close?(): Promise<void>;
}

/**
 * `KeyStore.sync`: the hot path's store calls without a promise, for in-process stores.
 *
 * @example
 * ```ts
 * const store = new MemoryKeyStore();
 * store.sync?.getKeyByHandle('AbCdEfGhIj'); // the record, or null
 * ```
 */
export interface SyncHotPath {
  /**
   * The key with this handle, or `null`. May be the store's own record rather than a copy: the
   * caller reads it at once, copies what it keeps and never changes it.
   */
  getKeyByHandle(handle: string): Readonly<KeyRecord> | null;
  /** The account, or `null`. May be the store's own record, read and copied like the key's. */
  getAccount(id: string): Readonly<AccountRecord> | null;
  /** Atomic. Like `KeyStore.hitCounter`. */
  hitCounter(name: string, windowMs: number, now: number, amount?: number): CounterState;
  /**
   * The store's own async methods these stand in for. The middleware uses `sync` only while the
   * store object it was given still has exactly these functions, so a wrapper, subclass or patch
   * that replaces one of them (to log, filter or fail on purpose) is never bypassed.
   */
  readonly standsFor: Readonly<Pick<KeyStore, 'getKeyByHandle' | 'getAccount' | 'hitCounter'>>;
}
