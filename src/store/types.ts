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
  /**
   * The models this key may call: 1–100 names, each exact (`gpt-4o-mini`) or a prefix ending in `*`
   * (`gpt-4o*`), stored and answered as given; `null` allows every model.
   */
  models: string[] | null;
  /**
   * During a rotation's grace period, the scrypt hash of the previous secret (which still works until
   * `previousKeyExpiresAt`); `null` otherwise. Set only by `rotateKey`.
   */
  previousHash: string | null;
  /** When the previous secret stops working (epoch ms), or `null` when there is none. Set only by `rotateKey`. */
  previousKeyExpiresAt: number | null;
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
export type KeyChanges = Partial<Pick<KeyRecord, 'name' | 'active' | 'expiresAt' | 'limit' | 'limitReset' | 'rateLimit' | 'models'>>;

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
  /** The gateway's clock (epoch ms): the key's and the account's holds with `expiresAt <= now` are released first. */
  now: number;
  /**
   * The hold's deadline (epoch ms), after `now`: if nobody settles or extends the hold by then (its
   * gateway died), any reservation of the key or account, or `releaseExpiredHolds`, releases it.
   */
  expiresAt: number;
}

/** Why a reservation was refused, or `ok` with the hold to settle. */
export type ReservationResult =
  | {
      ok: true;
      /** The hold this reservation made: opaque, unique per store; pass it to `settleSpend` and `extendHold`. */
      holdId: string;
    }
  | { ok: false; reason: 'key_not_found' | 'account_not_found' | 'spend_limit_reached' | 'insufficient_balance' };

/** What a settled request used, for its ledger entry and the usage aggregates. */
export interface UsageDetails {
  /** The model the request named, 1–200 characters. */
  model: string;
  /** Prompt tokens the upstream reported, a safe integer ≥ 0. */
  promptTokens: number;
  /** Completion tokens the upstream reported, a safe integer ≥ 0. */
  completionTokens: number;
  /**
   * The `X-Request-Id` the gateway sent on the answer, 1–200 characters. Unique per request: a second
   * settlement with a request id already in the account's ledger is a retry and changes nothing.
   */
  requestId: string;
  /** The upstream answer's `id` (`chatcmpl-…`, `resp_…`), 1–200 characters, or `null` when it had none. */
  upstreamId: string | null;
}

/** Settle a reservation: release its hold, charge `cost`, write the ledger entry. */
export interface SpendSettlement {
  keyId: number;
  accountId: string;
  /** The hold `reserveSpend` answered, released here unless it was released before; `null` when nothing was held. */
  holdId: string | null;
  /** USD actually spent, ≥ 0: added to the key's `usage` and taken from the account's `balance`. */
  cost: number;
  period: string | null;
  /** Time of use (epoch ms): the key's `lastUsedAt`, the entry's `createdAt` and the UTC day of its usage aggregate. */
  now: number;
  /** What the request used; without it the entry's model and tokens are `null` and the aggregate's model is `'unknown'`. */
  usage?: UsageDetails | undefined;
}

/** The kinds of ledger entry: a settled request, a top-up, a host's correction. */
export type LedgerEntryType = 'usage' | 'credit' | 'adjustment';

/**
 * One change of an account's balance, written in the same atomic step as the change. Replaying an
 * account's entries in id order gives its balance: each entry's `balanceAfter` is the previous
 * entry's `balanceAfter` plus its own `amount`.
 */
export interface LedgerEntry {
  /** Positive integer, unique per store, increasing in write order (the `before` cursor of `listLedger`). */
  id: number;
  accountId: string;
  type: LedgerEntryType;
  /** USD, signed: `usage` < 0 (−cost, or 0), `credit` > 0, `adjustment` ≠ 0 of either sign. */
  amount: number;
  /** The account's balance right after this entry. */
  balanceAfter: number;
  /** `usage`: the key that spent; otherwise `null`. */
  keyId: number | null;
  /** `usage` with details: the model; otherwise `null`. */
  model: string | null;
  /** `usage` with details: prompt tokens; otherwise `null`. */
  promptTokens: number | null;
  /** `usage` with details: completion tokens; otherwise `null`. */
  completionTokens: number | null;
  /** `usage` with details: the `X-Request-Id` the gateway sent; otherwise `null`. */
  requestId: string | null;
  /** `usage` with details: the upstream answer's `id`, if it had one; otherwise `null`. */
  upstreamId: string | null;
  /** `credit` and `adjustment`: the idempotency reference (`'opening'` for an account's opening balance); `usage`: `null`. */
  reference: string | null;
  /** `credit` and `adjustment`: free text, or `null`; `usage`: `null`. */
  note: string | null;
  /** Epoch ms: the caller's `now`. */
  createdAt: number;
}

/**
 * A usage aggregate: one UTC day × key × model of an account's settled requests, counted in the same
 * atomic step as their ledger entries. Never trimmed (the ledger's retention does not touch it).
 */
export interface UsageRow {
  /** UTC day of the settlement's `now`, `YYYY-MM-DD`. */
  date: string;
  keyId: number;
  /** The settlement's `usage.model`, or `'unknown'` for a settlement without usage details. */
  model: string;
  /** Settlements counted. */
  requests: number;
  promptTokens: number;
  completionTokens: number;
  /** USD, Σ of the settlements' costs. */
  cost: number;
}

/** Which days of usage aggregates to read: UTC dates `YYYY-MM-DD`, both inclusive. */
export interface UsageRange {
  from: string;
  to: string;
}

/** A top-up or a correction of an account's balance, idempotent by `(accountId, reference)`. */
export interface BalanceChange {
  accountId: string;
  /** `credit`: `amount` > 0 (a payment); `adjustment`: `amount` ≠ 0, either sign (a correction). */
  type: 'credit' | 'adjustment';
  /** USD, finite, |amount| ≤ 1e12. */
  amount: number;
  /**
   * 1–200 characters, unique per account: a payment id, a webhook event id. A reference already in the
   * account's ledger (even one trimmed by retention) changes nothing.
   */
  reference: string;
  /** Free text up to 1000 characters, or `null`. */
  note: string | null;
  /** Epoch ms: the entry's `createdAt`. */
  now: number;
}

/** What `changeBalance` did. */
export interface BalanceChangeResult {
  /** The account as it is now (after the change, or unchanged when the reference was known). */
  account: AccountRecord;
  /** The entry written, or the first entry written with this reference when `applied` is false. */
  entry: LedgerEntry;
  /** `false` when the reference was already in the account's ledger and nothing changed. */
  applied: boolean;
}

/** A key's new secret, from `prepareRotation`. */
export interface KeyRotation {
  /** The key to rotate. */
  id: number;
  /** The scrypt hash of the new secret (same handle, new secret and checksum). */
  hash: string;
  /**
   * Until when the current secret keeps working (epoch ms); `null` or a time ≤ `now` ends it at once.
   */
  previousKeyExpiresAt: number | null;
  /** The caller's clock (epoch ms). */
  now: number;
}

/** Which page of an account's ledger to list, newest first. */
export interface LedgerQuery {
  /** Page size, an integer 1–1000. */
  limit: number;
  /** Only entries with an id below this (the last id of the previous page). Default: from the newest. */
  before?: number | undefined;
  /** Only this key's entries (`usage` entries carry a key). */
  keyId?: number | undefined;
  /** Only entries of this type. */
  type?: LedgerEntryType | undefined;
}

/** One page of an account's ledger, in descending `id` order. */
export interface LedgerPage {
  entries: LedgerEntry[];
  /** Whether older entries matching the query exist. */
  hasMore: boolean;
}

/** A fixed-window counter after a hit. */
export interface CounterState {
  /** The counter's value in the current window, including this hit. */
  count: number;
  /** When the current window ends (epoch ms). */
  resetAt: number;
}

/**
 * A value, or a promise of one: what the hot path's store methods (`getKeyByHandle`, `getAccount`,
 * `hitCounter`) may answer. A store that keeps its data in this process answers at once; one that
 * does I/O answers a promise. Callers `await` it (or check for a promise, as the middleware does).
 *
 * @example
 * ```ts
 * const counter: Awaitable<CounterState> = store.hitCounter('requests:1:10000', 10_000, Date.now());
 * const { count } = await counter;
 * ```
 */
export type Awaitable<T> = T | Promise<T>;

/**
 * Where keys, accounts and counters live. Every member returns a Promise and is **required**
 * unless marked **Optional**, except the three the middleware calls on every request
 * (`getKeyByHandle`, `getAccount`, `hitCounter`), which may answer at once ({@link Awaitable}):
 * an in-process store then admits a cached key with no promise at all. Each may fail by throwing
 * or by rejecting. A store must never report "not found" for an outage: when its backend fails it
 * rejects (or throws), and the middleware answers 503 `store_unavailable`.
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
   * Required, atomic. Creates an account and, when its `balance` is not 0, its opening ledger entry
   * in the same step (a `credit`, or an `adjustment` if negative, of the whole balance, reference
   * `'opening'`, `createdAt` = the account's `createdAt`). Rejects if an account with `account.id`
   * exists; rejects with a TypeError, changing nothing, when `balance` is not finite or beyond
   * ±1e12 (`MAX_USD`) or `reserved` is not 0.
   */
  createAccount(account: AccountRecord): Promise<AccountRecord>;
  /**
   * Required. The account, or `null` when there is none with that id. May answer at once
   * ({@link Awaitable}); a record it answers is the caller's to keep (a copy, never the store's own).
   */
  getAccount(id: string): Awaitable<AccountRecord | null>;
  /**
   * Required, atomic, idempotent by `(accountId, reference)`: adds `amount` to the balance and writes
   * its ledger entry (`type`, `reference`, `note`) in one step, answering `{ account, entry, applied: true }`.
   * A `reference` already in the account's ledger (of any type, even an entry trimmed by retention)
   * changes nothing and answers `{ applied: false, entry: <that first entry>, account: <as it is> }`,
   * so a payment webhook delivered twice pays once. `null` when there is no such account.
   * Rejects with a TypeError, changing nothing, when `amount` is not finite or |amount| > 1e12, a
   * credit is ≤ 0, an adjustment is 0, `type` is neither, `reference` is empty or over 200
   * characters, `note` is over 1000, `now` is not finite, or the new balance would be beyond ±1e12.
   */
  changeBalance(change: BalanceChange): Promise<BalanceChangeResult | null>;
  /**
   * Required, atomic. Allocates the next positive integer id (never reused, unique even across
   * processes sharing the store), stores the record and returns it. Rejects if `handle` exists.
   */
  insertKey(key: NewKeyRecord): Promise<KeyRecord>;
  /** Required. The key with this id, or `null`. */
  getKey(id: number): Promise<KeyRecord | null>;
  /**
   * Required. The key with this handle, or `null`. Called on every authenticated request: keep it
   * one read. May answer at once ({@link Awaitable}); a record it answers is the caller's to keep.
   */
  getKeyByHandle(handle: string): Awaitable<KeyRecord | null>;
  /**
   * Required. Up to `limit` keys of the account and `type` with `id > after` (from the start when
   * `after` is undefined), ascending by id. Must not scan other accounts' keys.
   */
  listKeys(accountId: string, page: KeyPageRequest): Promise<KeyPage>;
  /**
   * Required, atomic. Applies `changes` to the key and returns it, or `null` when there is none.
   * Fields not named in `changes` (including `usage`, `reserved` and the rotation fields) keep their
   * current value.
   */
  updateKey(id: number, changes: KeyChanges): Promise<KeyRecord | null>;
  /** Required. Removes the key (and its handle); `true` if it existed. */
  deleteKey(id: number): Promise<boolean>;
  /** Required. Sets `lastUsedAt` to `at` if it is later; no-op for an unknown id. */
  touchKey(id: number, at: number): Promise<void>;
  /**
   * Required, atomic. A new secret for the key, in one step: `previousHash` becomes the current
   * `hash` when `previousKeyExpiresAt` is after `now` (else `null`, and `previousKeyExpiresAt` too),
   * `hash` becomes `rotation.hash`. A second rotation within the grace period therefore ends the
   * oldest secret at once. Everything else (id, handle, prefix, name, limits, usage, reserved,
   * active, models, lastUsedAt) is kept. Answers the key, or `null` when there is none. Rejects with
   * a TypeError, changing nothing, when `hash` is not a non-empty string or a time is not finite.
   */
  rotateKey(rotation: KeyRotation): Promise<KeyRecord | null>;
  /**
   * Required, atomic. First releases, exactly once each, the holds of the key's account and of
   * `accountId` whose `expiresAt <= now` (their amount leaves the key's and the account's
   * `reserved`; the hold is deleted). Then holds `amount` against both the key's `limit`
   * (`usage + reserved + amount ≤ limit` in `period`) and the account's balance
   * (`balance − reserved ≥ amount`, and `> 0`; the account's `reserved` counts the holds of all its
   * keys), or refuses. On `ok` it answers the new hold's id, with deadline `expiresAt`.
   * A stored period other than `period` starts again at 0 and is replaced by `period`, unless it is a
   * later period of the same reset rule (another instance's clock ran ahead): then its usage counts
   * and it stays. Rejects with a TypeError, changing nothing, when `amount` is NaN, infinite,
   * negative or over 1e12, `now` is not finite, or `expiresAt` is not a finite time after `now`:
   * never answer `ok` for an amount that cannot be compared.
   */
  reserveSpend(reservation: SpendReservation): Promise<ReservationResult>;
  /**
   * Required, atomic. In one step:
   * 1. When `usage` is given and its `requestId` is already in the account's ledger (a retried
   *    settlement whose first attempt was applied), changes nothing and answers that entry.
   * 2. Releases the hold `holdId` (its amount leaves the key's and the account's `reserved`) and
   *    deletes it. A hold released before (expired, or settled already), or one of another key or
   *    account, is not released; the cost is still charged.
   * 3. Takes `cost` from the account's balance, updates `lastUsedAt`, and charges `cost` to the
   *    key's `usage` by the stored period:
   *    - the same as `period`: `usage += cost`;
   *    - an earlier period of the same reset rule (periods of one rule have one length and sort as
   *      strings: `2026-11-21` < `2026-11-22`): `period` starts, `usage = cost`, `usagePeriod = period`;
   *    - a later period, or one of another reset rule (`null` included): usage and period stay as
   *      they are. A request that reserved before the period rolled over and settles after a newer
   *      request must not replace the new period's usage (its cost is still debited from the account).
   * 4. When `cost > 0` or `usage` is given, and the account exists: appends a `usage` ledger entry
   *    (amount −cost, `balanceAfter`, `keyId`, and model, tokens, request and upstream ids from
   *    `usage`, else `null`) and adds the request to the aggregate of (UTC day of `now`, key, model
   *    or `'unknown'`).
   *
   * Answers the entry written (or found, in 1), or `null` when none was. A deleted key still debits
   * its account. Rejects with a TypeError, changing nothing, when `cost` is NaN, infinite, negative
   * or over 1e12, `now` is not finite, `holdId` is neither a string nor `null`, or `usage` breaks
   * the rules of {@link UsageDetails}.
   */
  settleSpend(settlement: SpendSettlement): Promise<LedgerEntry | null>;
  /**
   * Required, atomic. Moves the deadline of a live hold of `accountId` to `expiresAt` (the proxy
   * renews the holds of long streams) and answers `true`; `false` when the hold is gone (settled or
   * released) or belongs to another account. Rejects with a TypeError when `expiresAt` is not finite.
   */
  extendHold(holdId: string, accountId: string, expiresAt: number): Promise<boolean>;
  /**
   * Required, atomic per hold. Releases up to `limit` (default 1000) holds of any account whose
   * `expiresAt <= now`, exactly once each (a hold released here is never released again by a
   * reservation or a late settlement), and answers how many it released. A sweeper calls it now and
   * then, so the holds of a gateway that died free their key's limit and account's balance even
   * when nothing else reserves. Rejects with a TypeError when `now` is not finite or `limit` is not
   * a positive integer.
   */
  releaseExpiredHolds(now: number, limit?: number): Promise<number>;
  /**
   * Required. Up to `query.limit` of the account's ledger entries, newest first (descending id),
   * with `id < before` when `before` is given, of that key and that type when given. Reads the
   * account's own entries only, never scanning other accounts' (a per-account index); a `keyId` or
   * `type` filter may read that account's non-matching entries on the way. An unknown account has
   * an empty ledger. Rejects with a TypeError when `limit` is not an integer 1–1000, or `before` or
   * `keyId` is not a positive integer, or `type` is not a {@link LedgerEntryType}.
   */
  listLedger(accountId: string, query: LedgerQuery): Promise<LedgerPage>;
  /**
   * Required. The account's `usage` entry whose `requestId` or `upstreamId` is `id` (the request id
   * first), from an index (never a scan), or `null`: none, another account's, or trimmed.
   */
  findUsageEntry(accountId: string, id: string): Promise<LedgerEntry | null>;
  /**
   * Required. The account's usage aggregates with `from <= date <= to`, in any order, read from the
   * counters (never from the ledger). `from` after `to` is an empty range. Rejects with a TypeError
   * when `from` or `to` is not a valid `YYYY-MM-DD` date.
   */
  getUsage(accountId: string, range: UsageRange): Promise<UsageRow[]>;
  /**
   * Required. Retention, for the CLI or a cron job: removes, for every account, its oldest entries
   * (in id order) while their `createdAt < before`, and answers how many. Kept entries stay an
   * unbroken run of the newest, so they still replay to the balance from the first one's
   * `balanceAfter − amount`. Never touches balances, keys, usage aggregates, or the reference index
   * (a trimmed credit's reference still answers `applied: false`); a trimmed usage entry leaves the
   * request-id index. Stores also trim lazily: each write to an account's ledger removes at least
   * one and at most a few of its entries older than the store's `ledgerRetentionDays`.
   * Rejects with a TypeError when `before` is not finite.
   */
  trimLedger(before: number): Promise<number>;
  /**
   * Required, atomic. Adds `amount` (default 1) to the fixed-window counter `name` for the window of
   * `windowMs` that contains `now`, and returns its new value. Windows start at multiples of
   * `windowMs` since the epoch. `amount` 0 reads the counter. Rejects (or throws) a TypeError,
   * changing nothing, when `amount` is NaN, infinite or negative. May answer at once ({@link Awaitable}).
   */
  hitCounter(name: string, windowMs: number, now: number, amount?: number): Awaitable<CounterState>;
  /** Optional. Releases connections and timers. */
  close?(): Promise<void>;
}
