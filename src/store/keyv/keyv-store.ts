import type Keyv from 'keyv';
import { ConfigurationError } from '../../errors/configuration-error.js';
import {
  applyReservation,
  applySettlement,
  checkBalanceDelta,
  checkBalanceResult,
  checkCounterHit,
  checkReservation,
  checkSettlement,
  roundUsd,
} from '../spend-rules.js';
import type {
  AccountRecord,
  CounterState,
  KeyChanges,
  KeyPage,
  KeyPageRequest,
  KeyRecord,
  KeyStore,
  NewKeyRecord,
  ReservationResult,
  SpendReservation,
  SpendSettlement,
} from '../types.js';
import { isKeyvDefaultDeserializer, parseKeyvJson } from './keyv-json.js';
import { KeyvKeyIndex } from './keyv-key-index.js';
import { type KeyvRedisAdapter, RedisRunner, isKeyvRedisAdapter } from './keyv-redis.js';

/** Options of {@link KeyvKeyStore}. Every field is optional. */
export interface KeyvKeyStoreOptions {
  /**
   * Prepended to every key this store writes, inside the Keyv namespace, so one Redis (or one
   * table) can hold several stores or other data. Default `modelswitch:`.
   */
  prefix?: string;
}

/** A Keyv whose adapter we can inspect; Keyv types `store` loosely. */
type KeyvWithStore = Keyv & { store: unknown };

const RESERVATION_REASONS = new Set(['key_not_found', 'account_not_found', 'spend_limit_reached', 'insufficient_balance']);

/** One lock per Keyv instance: two stores over the same Keyv in one process still serialize. */
const locks = new WeakMap<object, { tail: Promise<unknown> }>();

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
  private readonly prefix: string;
  private readonly redis: RedisRunner | undefined;
  private readonly copyOnRead: boolean;
  private readonly lock: { tail: Promise<unknown> };

  constructor(keyv: Keyv, options: KeyvKeyStoreOptions = {}) {
    if (typeof keyv !== 'object' || keyv === null || typeof keyv.get !== 'function' || typeof keyv.set !== 'function') {
      throw new ConfigurationError('ERR_MS_STORE', 'new KeyvKeyStore(keyv): pass a Keyv instance, e.g. new Keyv(new KeyvRedis(url))');
    }
    this.keyv = keyv;
    this.prefix = options.prefix ?? 'modelswitch:';
    if (typeof this.prefix !== 'string') throw new ConfigurationError('ERR_MS_OPTION', 'KeyvKeyStore: prefix must be a string');
    // A swallowed error reads as `undefined`, i.e. "no such key": turn it into a rejection.
    keyv.throwOnErrors = true;
    const adapter = (keyv as KeyvWithStore).store;
    if (typeof adapter === 'object' && adapter !== null && 'throwOnErrors' in adapter) {
      (adapter as { throwOnErrors: boolean }).throwOnErrors = true;
    }
    // Errors also surface as rejections; an 'error' listener keeps Keyv's emitter from throwing.
    keyv.on('error', ignoreEmittedError);
    this.copyOnRead = keyv.serialize === undefined;
    if (isKeyvRedisAdapter(adapter)) {
      if (keyv.serialize === undefined || keyv.deserialize === undefined || keyv.opts?.compression !== undefined) {
        throw new ConfigurationError(
          'ERR_MS_STORE',
          "KeyvKeyStore on Redis needs Keyv's default JSON serializer and no compression: its Lua scripts edit the stored JSON",
        );
      }
      this.redis = new RedisRunner(adapter, redisKeyPrefix(keyv, adapter, this.prefix));
    }
    this.sharedAcrossProcesses = this.redis !== undefined;
    const known = locks.get(keyv);
    this.lock = known ?? { tail: Promise.resolve() };
    if (!known) locks.set(keyv, this.lock);
  }

  async createAccount(account: AccountRecord): Promise<AccountRecord> {
    const record = { ...account };
    if (this.redis) {
      const created = await this.redis.command(['SET', `${this.redis.base}account:${record.id}`, await this.serialize(record), 'NX']);
      if (created === null) throw new Error(`account ${record.id} already exists`);
      return record;
    }
    return this.locked(async () => {
      if ((await this.read<AccountRecord>(`account:${record.id}`)) !== undefined) throw new Error(`account ${record.id} already exists`);
      await this.keyv.set(this.name(`account:${record.id}`), record);
      return record;
    });
  }

  async getAccount(id: string): Promise<AccountRecord | null> {
    // On Redis, one GET of the entry Keyv wrote (as the scripts read it), without Keyv's get
    // machinery: this and getKeyByHandle run on every request.
    if (this.redis) return this.parse<AccountRecord>(await this.redis.command(['GET', `${this.redis.base}account:${id}`]));
    return (await this.read<AccountRecord>(`account:${id}`)) ?? null;
  }

  async adjustBalance(accountId: string, delta: number): Promise<AccountRecord | null> {
    checkBalanceDelta(delta);
    if (this.redis) {
      return this.parse<AccountRecord>(await this.redis.script('adjustBalance', await this.serialize({ accountId, delta })));
    }
    return this.locked(async () => {
      const account = await this.read<AccountRecord>(`account:${accountId}`);
      if (!account) return null;
      account.balance = roundUsd(account.balance + delta);
      checkBalanceResult(account.balance);
      await this.keyv.set(this.name(`account:${accountId}`), account);
      return account;
    });
  }

  async insertKey(key: NewKeyRecord): Promise<KeyRecord> {
    if (this.redis) {
      const id = await this.redis.script('insertKey', await this.serialize(key));
      return { ...structuredClone(key), id: Number(id) };
    }
    return this.locked(async () => {
      if ((await this.read<KeyRecord>(`key:${key.handle}`)) !== undefined) throw new Error('key handle already exists');
      const id = ((await this.read<number>('next-key-id')) ?? 0) + 1;
      await this.keyv.set(this.name('next-key-id'), id);
      const record: KeyRecord = { ...structuredClone(key), id };
      await this.keyv.set(this.name(`key:${record.handle}`), record);
      await this.keyv.set(this.name(`key-id:${id}`), record.handle);
      await this.index(record.accountId, record.type).add(id, record.handle);
      return structuredClone(record);
    });
  }

  async getKey(id: number): Promise<KeyRecord | null> {
    await this.redis?.ready();
    return this.keyById(id);
  }

  async getKeyByHandle(handle: string): Promise<KeyRecord | null> {
    if (this.redis) return this.parse<KeyRecord>(await this.redis.command(['GET', `${this.redis.base}key:${handle}`]));
    return (await this.read<KeyRecord>(`key:${handle}`)) ?? null;
  }

  async listKeys(accountId: string, page: KeyPageRequest): Promise<KeyPage> {
    const after = page.after ?? 0;
    let records: KeyRecord[];
    if (this.redis) {
      const payload = await this.serialize({ accountId, type: page.type, after, limit: page.limit });
      const raw = (await this.redis.script('listKeys', payload)) as string[];
      records = [];
      for (const entry of raw) {
        // A key deleted between the index read and the record read inside the script cannot happen
        // (one script), but an empty string would mean a damaged index: skip rather than fail.
        const record = entry === '' ? null : await this.parse<KeyRecord>(entry);
        if (record) records.push(record);
      }
    } else {
      const entries = await this.index(accountId, page.type).page(after, page.limit);
      const found = await Promise.all(entries.map(([, handle]) => this.read<KeyRecord>(`key:${handle}`)));
      records = found.filter((record): record is KeyRecord => record !== undefined);
    }
    return { keys: records.slice(0, page.limit), hasMore: records.length > page.limit };
  }

  async updateKey(id: number, changes: KeyChanges): Promise<KeyRecord | null> {
    const fields = pickChanges(changes);
    if (this.redis) {
      return this.parse<KeyRecord>(await this.redis.script('updateKey', await this.serialize({ id, changes: fields })));
    }
    return this.locked(async () => {
      const found = await this.keyById(id);
      if (!found) return null;
      Object.assign(found, structuredClone(fields));
      await this.keyv.set(this.name(`key:${found.handle}`), found);
      return structuredClone(found);
    });
  }

  async deleteKey(id: number): Promise<boolean> {
    if (this.redis) return (await this.redis.script('deleteKey', await this.serialize({ id }))) === 1;
    return this.locked(async () => {
      const found = await this.keyById(id);
      if (!found) return false;
      await this.keyv.delete(this.name(`key:${found.handle}`));
      await this.keyv.delete(this.name(`key-id:${id}`));
      await this.index(found.accountId, found.type).remove(id);
      return true;
    });
  }

  async touchKey(id: number, at: number): Promise<void> {
    if (this.redis) {
      await this.redis.script('touchKey', await this.serialize({ id, at }));
      return;
    }
    await this.locked(async () => {
      const found = await this.keyById(id);
      if (!found || (found.lastUsedAt !== null && found.lastUsedAt >= at)) return;
      found.lastUsedAt = at;
      await this.keyv.set(this.name(`key:${found.handle}`), found);
    });
  }

  async reserveSpend(reservation: SpendReservation): Promise<ReservationResult> {
    checkReservation(reservation);
    if (this.redis) {
      const answer = await this.redis.script('reserveSpend', await this.serialize(reservation));
      if (answer === 'ok') return { ok: true };
      if (typeof answer === 'string' && RESERVATION_REASONS.has(answer)) {
        return { ok: false, reason: answer as Exclude<ReservationResult, { ok: true }>['reason'] };
      }
      throw new Error(`unexpected reserveSpend answer from Redis: ${String(answer)}`);
    }
    return this.locked(async () => {
      const key = await this.keyById(reservation.keyId);
      if (!key) return { ok: false, reason: 'key_not_found' } as const;
      const account = await this.read<AccountRecord>(`account:${reservation.accountId}`);
      if (!account) return { ok: false, reason: 'account_not_found' } as const;
      const result = applyReservation(key, account, reservation);
      if (result.ok) {
        await this.keyv.set(this.name(`key:${key.handle}`), key);
        await this.keyv.set(this.name(`account:${account.id}`), account);
      }
      return result;
    });
  }

  async settleSpend(settlement: SpendSettlement): Promise<void> {
    checkSettlement(settlement);
    if (this.redis) {
      await this.redis.script('settleSpend', await this.serialize(settlement));
      return;
    }
    await this.locked(async () => {
      const key = await this.keyById(settlement.keyId);
      const account = (await this.read<AccountRecord>(`account:${settlement.accountId}`)) ?? null;
      applySettlement(key, account, settlement);
      if (key) await this.keyv.set(this.name(`key:${key.handle}`), key);
      if (account) await this.keyv.set(this.name(`account:${account.id}`), account);
    });
  }

  async hitCounter(name: string, windowMs: number, now: number, amount = 1): Promise<CounterState> {
    checkCounterHit(windowMs, now, amount);
    const windowStart = now - (now % windowMs);
    const resetAt = windowStart + windowMs;
    // Kept a little past the window so a slow clock on one instance still finds it.
    const ttlMs = windowMs + 60_000;
    if (this.redis) {
      const count = await this.redis.script('hitCounter', await this.serialize({ name, windowStart, amount, ttlMs }));
      return { count: Number(count), resetAt };
    }
    return this.locked(async () => {
      const entry = this.name(`counter:${name}:${windowStart}`);
      const count = (((await this.keyv.get(entry)) as number | undefined) ?? 0) + amount;
      await this.keyv.set(entry, count, ttlMs);
      return { count, resetAt };
    });
  }

  /** Disconnects the Keyv instance (and its Redis client). */
  async close(): Promise<void> {
    await this.keyv.disconnect();
  }

  private name(entry: string): string {
    return `${this.prefix}${entry}`;
  }

  private async read<T>(entry: string): Promise<T | undefined> {
    const value = (await this.keyv.get(this.name(entry))) as T | undefined;
    return this.copyOnRead && value !== undefined ? structuredClone(value) : value;
  }

  private async keyById(id: number): Promise<KeyRecord | null> {
    const handle = await this.read<string>(`key-id:${id}`);
    return handle === undefined ? null : ((await this.read<KeyRecord>(`key:${handle}`)) ?? null);
  }

  private index(accountId: string, type: KeyRecord['type']): KeyvKeyIndex {
    return new KeyvKeyIndex(this.keyv, this.name(`account-keys:${type}:${accountId}`));
  }

  /** A Lua payload in Keyv's own serialization, so strings carry the same escaping as stored records. */
  private async serialize(value: unknown): Promise<string> {
    return (await (this.keyv.serialize as NonNullable<Keyv['serialize']>)({ value })) as string;
  }

  /**
   * A Keyv-serialized record (as a Lua script returns it), or `null` for a script's `false`. Read
   * with the instance's deserializer as it is now; Keyv's default one is stood in for by the
   * equivalent, faster `parseKeyvJson`.
   */
  private async parse<T>(raw: unknown): Promise<T | null> {
    if (typeof raw !== 'string') return null;
    const deserialize = this.keyv.deserialize as NonNullable<Keyv['deserialize']>;
    const entry = (isKeyvDefaultDeserializer(deserialize) ? parseKeyvJson(raw) : await deserialize.call(this.keyv, raw)) as
      | { value?: T }
      | undefined;
    return entry?.value ?? null;
  }

  /** Runs `task` after every earlier locked task of this Keyv instance (in this process). */
  private locked<T>(task: () => Promise<T>): Promise<T> {
    const run = this.lock.tail.then(task, task);
    this.lock.tail = run.catch(() => undefined);
    return run;
  }
}

function ignoreEmittedError(): void {
  // Every failure also rejects the operation that hit it; the middleware logs once per outage.
}

/** Only the fields `updateKey` may change, without `undefined` values (JSON would drop them anyway). */
function pickChanges(changes: KeyChanges): KeyChanges {
  const picked: Record<string, unknown> = {};
  for (const field of ['name', 'active', 'expiresAt', 'limit', 'limitReset', 'rateLimit'] as const) {
    if (changes[field] !== undefined) picked[field] = changes[field];
  }
  return picked as KeyChanges;
}

/**
 * The Redis key prefix of this store's entries: Keyv's namespace prefix, then the adapter's,
 * then the store prefix. Both are plain string prefixes, which the check below makes sure of.
 */
function redisKeyPrefix(keyv: Keyv, adapter: KeyvRedisAdapter, prefix: string): string {
  const redisKey = (entry: string) => adapter.createKeyPrefix(keyv._getKeyPrefix(entry), adapter.namespace);
  const base = redisKey(prefix);
  if (redisKey(`${prefix}probe`) !== `${base}probe`) {
    throw new ConfigurationError('ERR_MS_OPTION', 'KeyvKeyStore: choose a prefix that does not start with the Keyv namespace');
  }
  return base;
}
