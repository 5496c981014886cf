import type Keyv from 'keyv';
import { ConfigurationError } from '../../errors/configuration-error.js';
import { DEFAULT_COUNTER_AMOUNT, DEFAULT_HOLD_SWEEP_LIMIT, DEFAULT_KEYV_PREFIX } from '../../defaults.js';
import {
  checkBalanceChange,
  checkCounterHit,
  checkHoldDeadline,
  checkHoldSweep,
  checkLedgerQuery,
  checkNewAccount,
  checkReservation,
  checkRotation,
  checkSettlement,
  checkTrimBefore,
  checkUsageRange,
  resolveRetentionDays,
} from '../spend-rules.js';
import type {
  AccountRecord,
  BalanceChange,
  BalanceChangeResult,
  CounterState,
  KeyChanges,
  KeyPage,
  KeyPageRequest,
  KeyRecord,
  KeyRotation,
  KeyStore,
  LedgerEntry,
  LedgerPage,
  LedgerQuery,
  NewKeyRecord,
  ReservationResult,
  SpendReservation,
  SpendSettlement,
  UsageRange,
  UsageRow,
} from '../types.js';
import type { KeyvBackend } from './backend.js';
import { isKeyvRedisAdapter } from './keyv-redis.js';
import { LockedBackend } from './locked-backend.js';
import { RedisBackend } from './redis-backend.js';

/**
 * How long a rate-limit counter outlives its window, so an instance whose clock runs a little
 * behind still finds the window's count.
 */
const COUNTER_GRACE_MS = 60_000;

/** Options of {@link KeyvKeyStore}. Every field is optional. */
export interface KeyvKeyStoreOptions {
  /**
   * Prepended to every key this store writes, inside the Keyv namespace, so one Redis (or one
   * table) can hold several stores or other data. Default `modelswitch:`.
   */
  prefix?: string;
  /**
   * Days a ledger entry is kept: older ones are trimmed a few at a time as the account's ledger is
   * written (and all at once by `trimLedger`). `Infinity` keeps every entry. Usage aggregates,
   * balances and top-up references are never trimmed. Default 400.
   */
  ledgerRetentionDays?: number;
}

/** A Keyv whose adapter we can inspect; Keyv types `store` loosely. */
type KeyvWithStore = Keyv & { store: unknown };

/**
 * A {@link KeyStore} over any [Keyv](https://keyv.org) instance: records (keys, accounts) are Keyv
 * entries, so every Keyv adapter works.
 *
 * - **With `@keyv/redis`** every operation that must be atomic (id allocation, balance and usage
 *   changes, spend reservations, rate-limit hits, updates and deletes) runs as one Redis command
 *   or Lua script on the adapter's client, so **several gateway processes share one Redis and
 *   its limits exactly**. Listing uses a sorted set per account. Redis Cluster is not supported.
 * - **With any other adapter** (the in-memory `Map`, `@keyv/sqlite`, `@keyv/postgres`, …) those
 *   operations are atomic **within one process only** (an in-process lock): run a single
 *   gateway instance.
 *
 * Which of the two it is is decided once, from the adapter, when the store is built.
 *
 * Errors are never swallowed: the store turns on `throwOnErrors` on the Keyv instance and its
 * adapter, so an outage rejects (the middleware answers 503 `store_unavailable`) instead of
 * reading as "key not found". While the Redis client reconnects, operations reject at once rather
 * than queue. `close()` disconnects the Keyv instance.
 *
 * @example
 * ```ts
 * import Keyv from 'keyv';
 * import KeyvRedis from '@keyv/redis';
 * import { KeyvKeyStore, keysRouter, modelSwitchAuth } from 'modelswitch-keys';
 *
 * const store = new KeyvKeyStore(new Keyv(new KeyvRedis(process.env.REDIS_URL)));
 * app.use('/api', keysRouter(store));
 * app.use('/v1', modelSwitchAuth(store));
 * ```
 */
export class KeyvKeyStore implements KeyStore {
  /** The Keyv instance records live in. */
  readonly keyv: Keyv;
  /** Whether atomic operations run on Redis (shared by processes) or under an in-process lock. */
  readonly sharedAcrossProcesses: boolean;
  /** Chosen once, here: every operation below checks its arguments, then hands them to it. */
  private readonly backend: KeyvBackend;

  constructor(keyv: Keyv, options: KeyvKeyStoreOptions = {}) {
    if (typeof keyv !== 'object' || keyv === null || typeof keyv.get !== 'function' || typeof keyv.set !== 'function') {
      throw new ConfigurationError('ERR_MS_STORE', 'new KeyvKeyStore(keyv): pass a Keyv instance, e.g. new Keyv(new KeyvRedis(url))');
    }
    this.keyv = keyv;
    const prefix = options.prefix ?? DEFAULT_KEYV_PREFIX;
    if (typeof prefix !== 'string')
      throw new ConfigurationError(
        'ERR_MS_OPTION',
        "KeyvKeyStore: prefix must be a string, e.g. 'gateway:' (or left out for 'modelswitch:')",
      );
    const retentionDays = resolveRetentionDays(options.ledgerRetentionDays, 'KeyvKeyStore');
    // A swallowed error reads as `undefined`, i.e. "no such key": turn it into a rejection.
    keyv.throwOnErrors = true;
    const adapter = (keyv as KeyvWithStore).store;
    if (typeof adapter === 'object' && adapter !== null && 'throwOnErrors' in adapter) {
      (adapter as { throwOnErrors: boolean }).throwOnErrors = true;
    }
    // Errors also surface as rejections; an 'error' listener keeps Keyv's emitter from throwing.
    keyv.on('error', ignoreEmittedError);
    this.backend = isKeyvRedisAdapter(adapter)
      ? new RedisBackend(keyv, adapter, prefix, retentionDays)
      : new LockedBackend(keyv, prefix, retentionDays);
    this.sharedAcrossProcesses = this.backend.sharedAcrossProcesses;
  }

  async createAccount(account: AccountRecord): Promise<AccountRecord> {
    checkNewAccount(account);
    return this.backend.createAccount({ ...account });
  }

  getAccount(id: string): Promise<AccountRecord | null> {
    return this.backend.getAccount(id);
  }

  async changeBalance(change: BalanceChange): Promise<BalanceChangeResult | null> {
    checkBalanceChange(change);
    return this.backend.changeBalance({ ...change });
  }

  insertKey(key: NewKeyRecord): Promise<KeyRecord> {
    return this.backend.insertKey(key);
  }

  getKey(id: number): Promise<KeyRecord | null> {
    return this.backend.getKey(id);
  }

  getKeyByHandle(handle: string): Promise<KeyRecord | null> {
    return this.backend.getKeyByHandle(handle);
  }

  async listKeys(accountId: string, page: KeyPageRequest): Promise<KeyPage> {
    const records = await this.backend.listKeys(accountId, page.type, page.after ?? 0, page.limit);
    return { keys: records.slice(0, page.limit), hasMore: records.length > page.limit };
  }

  async updateKey(id: number, changes: KeyChanges): Promise<KeyRecord | null> {
    return this.backend.updateKey(id, pickChanges(changes));
  }

  deleteKey(id: number): Promise<boolean> {
    return this.backend.deleteKey(id);
  }

  touchKey(id: number, at: number): Promise<void> {
    return this.backend.touchKey(id, at);
  }

  async rotateKey(rotation: KeyRotation): Promise<KeyRecord | null> {
    checkRotation(rotation);
    return this.backend.rotateKey({ ...rotation });
  }

  async reserveSpend(reservation: SpendReservation): Promise<ReservationResult> {
    checkReservation(reservation);
    return this.backend.reserveSpend(reservation);
  }

  async settleSpend(settlement: SpendSettlement): Promise<LedgerEntry | null> {
    checkSettlement(settlement);
    return this.backend.settleSpend(settlement);
  }

  async extendHold(holdId: string, accountId: string, expiresAt: number): Promise<boolean> {
    checkHoldDeadline(expiresAt);
    return this.backend.extendHold(holdId, accountId, expiresAt);
  }

  async releaseExpiredHolds(now: number, limit: number = DEFAULT_HOLD_SWEEP_LIMIT): Promise<number> {
    checkHoldSweep(now, limit);
    return this.backend.releaseExpiredHolds(now, limit);
  }

  async listLedger(accountId: string, query: LedgerQuery): Promise<LedgerPage> {
    checkLedgerQuery(query);
    return this.backend.listLedger(accountId, query);
  }

  findUsageEntry(accountId: string, id: string): Promise<LedgerEntry | null> {
    return this.backend.findUsageEntry(accountId, id);
  }

  async getUsage(accountId: string, range: UsageRange): Promise<UsageRow[]> {
    checkUsageRange(range);
    return this.backend.getUsage(accountId, range);
  }

  async trimLedger(before: number): Promise<number> {
    checkTrimBefore(before);
    return this.backend.trimLedger(before);
  }

  async hitCounter(name: string, windowMs: number, now: number, amount = DEFAULT_COUNTER_AMOUNT): Promise<CounterState> {
    checkCounterHit(windowMs, now, amount);
    const windowStart = now - (now % windowMs);
    const count = await this.backend.hitCounter({ name, windowStart, amount, ttlMs: windowMs + COUNTER_GRACE_MS });
    return { count, resetAt: windowStart + windowMs };
  }

  /** Disconnects the Keyv instance (and its Redis client). */
  async close(): Promise<void> {
    await this.keyv.disconnect();
  }
}

function ignoreEmittedError(): void {
  // Every failure also rejects the operation that hit it; the middleware logs once per outage.
}

/** Only the fields `updateKey` may change, without `undefined` values (JSON would drop them anyway). */
function pickChanges(changes: KeyChanges): KeyChanges {
  const picked: Record<string, unknown> = {};
  for (const field of ['name', 'active', 'expiresAt', 'limit', 'limitReset', 'rateLimit', 'models'] as const) {
    if (changes[field] !== undefined) picked[field] = changes[field];
  }
  return picked as KeyChanges;
}
