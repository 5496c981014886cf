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
  SyncHotPath,
} from '../types.js';

let warnedInProduction = false;

/** Options of {@link MemoryKeyStore}. */
export interface MemoryKeyStoreOptions {
  /** Where the production warning goes. Default `console.warn`. */
  warn?: (message: string) => void;
}

/**
 * The embedded default store: everything in this process's memory, lost on restart, not shared
 * between processes. Every operation is atomic because it runs synchronously on one thread.
 * Warns once under `NODE_ENV=production`; use `KeyvKeyStore` with Redis there.
 *
 * @example
 * ```ts
 * import { MemoryKeyStore, keysRouter } from 'modelswitch-keys';
 * const store = new MemoryKeyStore();
 * app.use('/api', keysRouter(store));
 * ```
 */
export class MemoryKeyStore implements KeyStore {
  private nextId = 1;
  private nextSweepAt = 10_000;
  /** Every key by id: ids are dense (1, 2, 3…), so an array beats a Map in heap and lookup cost. */
  private readonly records: Array<KeyRecord | undefined> = [];
  private readonly byHandle = new Map<string, KeyRecord>();
  /** Each account's key ids per key type, ascending (ids only grow, so appending keeps the order). */
  private readonly idsByAccount = new Map<string, number[]>();
  private readonly accounts = new Map<string, AccountRecord>();
  private readonly counters = new Map<string, { windowStart: number; resetAt: number; count: number }>();

  private readonly syncPath: SyncHotPath = {
    getKeyByHandle: (handle) => this.byHandle.get(handle) ?? null,
    getAccount: (id) => this.accounts.get(id) ?? null,
    hitCounter: (name, windowMs, now, amount = 1) => this.hit(name, windowMs, now, amount),
    // Defined below the class; instances are only made after the module has run.
    standsFor: ORIGINAL_METHODS,
  };

  /**
   * The hot path without promises (see `KeyStore.sync`): `modelSwitchAuth` answers a cached key
   * synchronously. Returns the stored records themselves; the middleware copies what it keeps.
   * It stands for this class's own `getKeyByHandle`, `getAccount` and `hitCounter`: once a
   * subclass, a wrapper or a patch replaces one of them, the middleware stops using it, so their
   * version is never bypassed.
   *
   * @example
   * ```ts
   * new MemoryKeyStore().sync?.getKeyByHandle('AbCdEfGhIj'); // null
   * ```
   */
  get sync(): SyncHotPath | undefined {
    return this.syncPath;
  }

  constructor(options: MemoryKeyStoreOptions = {}) {
    if (process.env.NODE_ENV === 'production' && !warnedInProduction) {
      warnedInProduction = true;
      (options.warn ?? console.warn)(
        'modelswitch-keys: MemoryKeyStore keeps keys in this process only; they are lost on restart and not shared between instances. Use KeyvKeyStore with Redis in production.',
      );
    }
  }

  async createAccount(account: AccountRecord): Promise<AccountRecord> {
    if (this.accounts.has(account.id)) throw new Error(`account ${account.id} already exists`);
    this.accounts.set(account.id, { ...account });
    return { ...account };
  }

  async getAccount(id: string): Promise<AccountRecord | null> {
    const account = this.accounts.get(id);
    return account ? { ...account } : null;
  }

  async adjustBalance(accountId: string, delta: number): Promise<AccountRecord | null> {
    checkBalanceDelta(delta);
    const account = this.accounts.get(accountId);
    if (!account) return null;
    const balance = roundUsd(account.balance + delta);
    checkBalanceResult(balance);
    account.balance = balance;
    return { ...account };
  }

  async insertKey(key: NewKeyRecord): Promise<KeyRecord> {
    if (this.byHandle.has(key.handle)) throw new Error('key handle already exists');
    // Every field by name, in one literal: one hidden class for all records, properties in-object
    // (a spread builds the object property by property), about half the heap per key.
    const record: KeyRecord = {
      id: this.nextId++,
      handle: key.handle,
      type: key.type,
      accountId: key.accountId,
      name: key.name,
      prefix: key.prefix,
      hash: key.hash,
      active: key.active,
      createdAt: key.createdAt,
      expiresAt: key.expiresAt,
      lastUsedAt: key.lastUsedAt,
      usage: key.usage,
      usagePeriod: key.usagePeriod,
      reserved: key.reserved,
      limit: key.limit,
      limitReset: key.limitReset,
      rateLimit: key.rateLimit === null ? null : { ...key.rateLimit },
    };
    this.records[record.id] = record;
    this.byHandle.set(record.handle, record);
    const list = listName(record.accountId, record.type);
    const ids = this.idsByAccount.get(list);
    if (ids) ids.push(record.id);
    else this.idsByAccount.set(list, [record.id]);
    return copy(record);
  }

  async getKey(id: number): Promise<KeyRecord | null> {
    const key = this.record(id);
    return key ? copy(key) : null;
  }

  async getKeyByHandle(handle: string): Promise<KeyRecord | null> {
    const key = this.syncPath.getKeyByHandle(handle);
    return key ? copy(key) : null;
  }

  async listKeys(accountId: string, page: KeyPageRequest): Promise<KeyPage> {
    const ids = this.idsByAccount.get(listName(accountId, page.type)) ?? [];
    const start = page.after === undefined ? 0 : firstGreater(ids, page.after);
    const slice = ids.slice(start, start + page.limit);
    return {
      keys: slice.map((id) => copy(this.record(id) as KeyRecord)),
      hasMore: start + page.limit < ids.length,
    };
  }

  async updateKey(id: number, changes: KeyChanges): Promise<KeyRecord | null> {
    const key = this.record(id);
    if (!key) return null;
    Object.assign(key, copy(changes));
    return copy(key);
  }

  async deleteKey(id: number): Promise<boolean> {
    const key = this.record(id);
    if (!key) return false;
    this.records[id] = undefined;
    this.byHandle.delete(key.handle);
    const ids = this.idsByAccount.get(listName(key.accountId, key.type));
    if (ids) {
      const index = firstGreater(ids, id - 1);
      if (ids[index] === id) ids.splice(index, 1);
    }
    return true;
  }

  async touchKey(id: number, at: number): Promise<void> {
    const key = this.record(id);
    if (key && (key.lastUsedAt === null || key.lastUsedAt < at)) key.lastUsedAt = at;
  }

  async reserveSpend(reservation: SpendReservation): Promise<ReservationResult> {
    checkReservation(reservation);
    const key = this.record(reservation.keyId);
    if (!key) return { ok: false, reason: 'key_not_found' };
    const account = this.accounts.get(reservation.accountId);
    if (!account) return { ok: false, reason: 'account_not_found' };
    return applyReservation(key, account, reservation);
  }

  async settleSpend(settlement: SpendSettlement): Promise<void> {
    checkSettlement(settlement);
    applySettlement(this.record(settlement.keyId) ?? null, this.accounts.get(settlement.accountId) ?? null, settlement);
  }

  async hitCounter(name: string, windowMs: number, now: number, amount = 1): Promise<CounterState> {
    return this.hit(name, windowMs, now, amount);
  }

  private hit(name: string, windowMs: number, now: number, amount: number): CounterState {
    checkCounterHit(windowMs, now, amount);
    const windowStart = now - (now % windowMs);
    let counter = this.counters.get(name);
    if (!counter || counter.windowStart !== windowStart) {
      // Sweep expired windows now and then so idle counters do not pile up.
      if (this.counters.size >= this.nextSweepAt) {
        this.sweep(now);
        this.nextSweepAt = Math.max(10_000, this.counters.size * 2);
      }
      counter = { windowStart, resetAt: windowStart + windowMs, count: 0 };
      this.counters.set(name, counter);
    }
    counter.count += amount;
    return { count: counter.count, resetAt: counter.resetAt };
  }

  /** The stored key with this id (not a copy), or undefined. */
  private record(id: number): KeyRecord | undefined {
    return Number.isSafeInteger(id) && id > 0 ? this.records[id] : undefined;
  }

  private sweep(now: number): void {
    for (const [name, counter] of this.counters) {
      if (counter.resetAt <= now) this.counters.delete(name);
    }
  }
}

function listName(accountId: string, type: KeyRecord['type']): string {
  return `${type}\u0000${accountId}`;
}

/**
 * A copy the caller may change freely. Records are flat but for `rateLimit`, so a spread and one
 * nested spread do what `structuredClone` did at a fraction of the cost (this runs on every request).
 */
function copy<T extends object>(value: T): T {
  const out: T & { rateLimit?: unknown } = { ...value };
  const rateLimit = (value as { rateLimit?: unknown }).rateLimit;
  if (typeof rateLimit === 'object' && rateLimit !== null) out.rateLimit = { ...rateLimit };
  return out;
}

/** Index of the first id greater than `after` in an ascending array. */
function firstGreater(ids: number[], after: number): number {
  let low = 0;
  let high = ids.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if ((ids[mid] as number) <= after) low = mid + 1;
    else high = mid;
  }
  return low;
}

/** The methods `MemoryKeyStore.sync` stands in for, as the class defines them (before any patch). */
const ORIGINAL_METHODS: SyncHotPath['standsFor'] = {
  getKeyByHandle: MemoryKeyStore.prototype.getKeyByHandle,
  getAccount: MemoryKeyStore.prototype.getAccount,
  hitCounter: MemoryKeyStore.prototype.hitCounter,
};
