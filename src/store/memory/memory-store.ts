import { DEFAULT_COUNTER_AMOUNT, DEFAULT_HOLD_SWEEP_LIMIT } from '../../defaults.js';
import {
  type SpendHold,
  applyReservation,
  applyRotation,
  applySettlement,
  balanceAfter,
  balanceChangeEntry,
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
  openingEntry,
  releaseHold,
  resolveRetentionDays,
  retentionCutoff,
  settlementWritesEntry,
  usageEntry,
} from '../spend-rules.js';
import type {
  AccountRecord,
  Awaitable,
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
import { AccountBook } from './account-book.js';

let warnedInProduction = false;

/** Options of {@link MemoryKeyStore}. */
export interface MemoryKeyStoreOptions {
  /** Where the production warning goes. Default `console.warn`. */
  warn?: (message: string) => void;
  /**
   * Days a ledger entry is kept: older ones are trimmed a few at a time as the account's ledger is
   * written (and all at once by `trimLedger`). `Infinity` keeps every entry. Usage aggregates,
   * balances and top-up references are never trimmed. Default 400.
   */
  ledgerRetentionDays?: number;
}

/**
 * The embedded default store: everything in this process's memory, lost on restart, not shared
 * between processes. Every operation is atomic because it runs synchronously on one thread.
 * Warns once under `NODE_ENV=production`; use `KeyvKeyStore` with Redis there.
 *
 * Each account's ledger is its own array (entry ids are global), so listing one account's entries
 * never reads another's; beside it, the account's reference, request-id and usage-aggregate indexes
 * and its live holds. The hot path (`getKeyByHandle`, `getAccount`, `hitCounter`) reads none of them.
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
  /** Each account's ledger, indexes and live holds, made with its first entry or hold. */
  private readonly books = new Map<string, AccountBook>();
  /** Every live hold by id, in the order they were made. */
  private readonly holds = new Map<string, SpendHold>();
  private nextHoldId = 1;
  private nextEntryId = 1;
  private readonly retentionDays: number;

  constructor(options: MemoryKeyStoreOptions = {}) {
    this.retentionDays = resolveRetentionDays(options.ledgerRetentionDays, 'MemoryKeyStore');
    if (process.env.NODE_ENV === 'production' && !warnedInProduction) {
      warnedInProduction = true;
      (options.warn ?? console.warn)(
        'modelswitch-keys: MemoryKeyStore keeps keys in this process only; they are lost on restart and not shared between instances. Use KeyvKeyStore with Redis in production.',
      );
    }
  }

  async createAccount(account: AccountRecord): Promise<AccountRecord> {
    checkNewAccount(account);
    if (this.accounts.has(account.id)) throw new Error(`account ${account.id} already exists`);
    this.accounts.set(account.id, { ...account });
    const opening = openingEntry(this.nextEntryId, account);
    if (opening) {
      this.nextEntryId += 1;
      this.book(account.id).append(opening, retentionCutoff(account.createdAt, this.retentionDays));
    }
    return { ...account };
  }

  /**
   * Answers at once, without a promise: a copy of the account, or `null`. Typed `Awaitable` as in
   * `KeyStore`, so a subclass may still override it with an async method.
   */
  getAccount(id: string): Awaitable<AccountRecord | null> {
    const account = this.accounts.get(id);
    return account ? { ...account } : null;
  }

  async changeBalance(change: BalanceChange): Promise<BalanceChangeResult | null> {
    checkBalanceChange(change);
    const account = this.accounts.get(change.accountId);
    if (!account) return null;
    const book = this.book(account.id);
    const known = book.references.get(change.reference);
    if (known) return { account: { ...account }, entry: { ...known }, applied: false };
    // Throws (changing nothing) for a balance beyond the bound.
    const balance = balanceAfter(account.balance, change.amount);
    account.balance = balance;
    const entry = balanceChangeEntry(this.nextEntryId++, change, balance);
    book.append(entry, retentionCutoff(change.now, this.retentionDays));
    return { account: { ...account }, entry: { ...entry }, applied: true };
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
      models: key.models === null ? null : [...key.models],
      previousHash: key.previousHash,
      previousKeyExpiresAt: key.previousKeyExpiresAt,
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

  /** Answers at once, without a promise: a copy of the key, or `null` (typed `Awaitable`, like `getAccount`). */
  getKeyByHandle(handle: string): Awaitable<KeyRecord | null> {
    const key = this.byHandle.get(handle);
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

  async rotateKey(rotation: KeyRotation): Promise<KeyRecord | null> {
    checkRotation(rotation);
    const key = this.record(rotation.id);
    if (!key) return null;
    applyRotation(key, rotation);
    return copy(key);
  }

  async reserveSpend(reservation: SpendReservation): Promise<ReservationResult> {
    checkReservation(reservation);
    const key = this.record(reservation.keyId);
    // The key's holds live in its account's book: release both accounts' expired holds (one, as a rule).
    this.releaseExpired(reservation.accountId, reservation.now);
    if (key && key.accountId !== reservation.accountId) this.releaseExpired(key.accountId, reservation.now);
    if (!key) return { ok: false, reason: 'key_not_found' };
    const account = this.accounts.get(reservation.accountId);
    if (!account) return { ok: false, reason: 'account_not_found' };
    const verdict = applyReservation(key, account, reservation);
    if (!verdict.ok) return verdict;
    const hold: SpendHold = {
      id: String(this.nextHoldId++),
      keyId: key.id,
      accountId: account.id,
      amount: reservation.amount,
      expiresAt: reservation.expiresAt,
    };
    this.holds.set(hold.id, hold);
    this.book(account.id).holds.add(hold.id);
    return { ok: true, holdId: hold.id };
  }

  async settleSpend(settlement: SpendSettlement): Promise<LedgerEntry | null> {
    checkSettlement(settlement);
    const book = this.books.get(settlement.accountId);
    // A retry of a settlement already written (its answer was lost) changes nothing.
    const settled = settlement.usage === undefined ? undefined : book?.settledRequest(settlement.usage.requestId);
    if (settled) return { ...settled };
    const hold = settlement.holdId === null ? undefined : this.holds.get(settlement.holdId);
    if (hold && hold.keyId === settlement.keyId && hold.accountId === settlement.accountId) this.release(hold.id);
    const key = this.record(settlement.keyId) ?? null;
    const account = this.accounts.get(settlement.accountId) ?? null;
    applySettlement(key, account, settlement);
    if (!account || !settlementWritesEntry(settlement)) return null;
    const entry = usageEntry(this.nextEntryId++, settlement, account.balance);
    const accountBook = book ?? this.book(account.id);
    accountBook.append(entry, retentionCutoff(settlement.now, this.retentionDays));
    accountBook.count(settlement);
    return { ...entry };
  }

  async extendHold(holdId: string, accountId: string, expiresAt: number): Promise<boolean> {
    checkHoldDeadline(expiresAt);
    const hold = this.holds.get(holdId);
    if (!hold || hold.accountId !== accountId) return false;
    hold.expiresAt = expiresAt;
    return true;
  }

  /** Scans the live holds (one per request in flight, plus those of dead gateways) in the order they were made. */
  async releaseExpiredHolds(now: number, limit: number = DEFAULT_HOLD_SWEEP_LIMIT): Promise<number> {
    checkHoldSweep(now, limit);
    let released = 0;
    for (const hold of this.holds.values()) {
      if (released >= limit) break;
      if (hold.expiresAt <= now) {
        this.release(hold.id);
        released += 1;
      }
    }
    return released;
  }

  async listLedger(accountId: string, query: LedgerQuery): Promise<LedgerPage> {
    checkLedgerQuery(query);
    return this.books.get(accountId)?.page(query) ?? { entries: [], hasMore: false };
  }

  async findUsageEntry(accountId: string, id: string): Promise<LedgerEntry | null> {
    const entry = this.books.get(accountId)?.findUsage(id);
    return entry ? { ...entry } : null;
  }

  async getUsage(accountId: string, range: UsageRange): Promise<UsageRow[]> {
    checkUsageRange(range);
    return this.books.get(accountId)?.usageRows(range) ?? [];
  }

  async trimLedger(before: number): Promise<number> {
    checkTrimBefore(before);
    let trimmed = 0;
    for (const book of this.books.values()) trimmed += book.trim(before, Number.POSITIVE_INFINITY);
    return trimmed;
  }

  /** Answers at once, without a promise (typed `Awaitable`, like `getAccount`); throws a TypeError for a bad hit, changing nothing. */
  hitCounter(name: string, windowMs: number, now: number, amount = DEFAULT_COUNTER_AMOUNT): Awaitable<CounterState> {
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

  /** The account's book, made on first use. */
  private book(accountId: string): AccountBook {
    let book = this.books.get(accountId);
    if (book === undefined) {
      book = new AccountBook();
      this.books.set(accountId, book);
    }
    return book;
  }

  /** Releases a live hold (its amount leaves its key's and account's reserved) and deletes it; a gone hold is a no-op. */
  private release(holdId: string): void {
    const hold = this.holds.get(holdId);
    if (!hold) return;
    this.holds.delete(holdId);
    this.books.get(hold.accountId)?.holds.delete(holdId);
    releaseHold(hold, this.record(hold.keyId) ?? null, this.accounts.get(hold.accountId) ?? null);
  }

  /** Releases the account's holds whose deadline is `now` or earlier. */
  private releaseExpired(accountId: string, now: number): void {
    const holds = this.books.get(accountId)?.holds;
    if (!holds) return;
    for (const holdId of holds) {
      const hold = this.holds.get(holdId);
      if (hold && hold.expiresAt <= now) this.release(holdId);
    }
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
 * A copy the caller may change freely. Records are flat but for `rateLimit` and `models`, so a spread
 * and two nested copies do what `structuredClone` did at a fraction of the cost (this runs on every
 * request).
 */
function copy<T extends object>(value: T): T {
  const out: T & { rateLimit?: unknown; models?: unknown } = { ...value };
  const { rateLimit, models } = value as { rateLimit?: unknown; models?: unknown };
  if (typeof rateLimit === 'object' && rateLimit !== null) out.rateLimit = { ...rateLimit };
  if (Array.isArray(models)) out.models = [...models];
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
