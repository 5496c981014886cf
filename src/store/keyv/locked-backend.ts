import type Keyv from 'keyv';
import {
  type SpendHold,
  applyReservation,
  applyRotation,
  applySettlement,
  balanceAfter,
  balanceChangeEntry,
  openingEntry,
  releaseHold,
  retentionCutoff,
  settlementWritesEntry,
  usageEntry,
} from '../spend-rules.js';
import type {
  AccountRecord,
  BalanceChange,
  BalanceChangeResult,
  KeyChanges,
  KeyRecord,
  KeyRotation,
  KeyType,
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
import type { CounterHit, KeyvBackend } from './backend.js';
import { KeyvAccountLedger, type KeyvEntries, entryName } from './keyv-account-ledger.js';
import { KeyvKeyIndex } from './keyv-key-index.js';

/** Index entries read per page when a sweep or `trimLedger` walks a whole index. */
const SCAN_PAGE = 1000;

/** A chain of tasks that run one after another. */
interface Lock {
  tail: Promise<unknown>;
}

/** One lock per Keyv instance: two stores over the same Keyv in one process still serialize. */
const locks = new WeakMap<object, Lock>();

/**
 * `KeyvKeyStore` on any Keyv adapter but `@keyv/redis` (Keyv's in-memory `Map`, `@keyv/sqlite`,
 * `@keyv/postgres`, …): reads and writes go through Keyv's `get`/`set`/`delete`, and every
 * read-then-write runs under an in-process lock, so it is atomic within this process only. An
 * account's key ids are listed from a chunked index (`KeyvKeyIndex`), as adapters have no sorted sets.
 *
 * The ledger of each account is chunked the same way (`KeyvAccountLedger`); holds are one entry each,
 * listed in a chunked index per account (for the expired holds a reservation releases) and one for
 * the store (for `releaseExpiredHolds`); the accounts that have a ledger are listed for `trimLedger`.
 * An operation is atomic against the other operations of this process; it is several Keyv writes,
 * so an adapter that fails between two of them (a full disk) can leave it half done. Use Redis or
 * PostgreSQL where that matters.
 */
export class LockedBackend implements KeyvBackend {
  readonly sharedAcrossProcesses = false;
  /** Without a serializer (a `Map` holding the objects themselves) a read would hand out the stored object. */
  private readonly copyOnRead: boolean;
  private readonly lock: Lock;

  /** Named reads and writes below the prefix, for the ledger. */
  private readonly entries: KeyvEntries = {
    get: (name) => this.read(name),
    set: async (name, value) => {
      await this.keyv.set(this.name(name), value);
    },
    delete: async (name) => {
      await this.keyv.delete(this.name(name));
    },
  };

  constructor(
    private readonly keyv: Keyv,
    private readonly prefix: string,
    /** `ledgerRetentionDays` of the store. */
    private readonly retentionDays: number,
  ) {
    this.copyOnRead = keyv.serialize === undefined;
    const known = locks.get(keyv);
    this.lock = known ?? { tail: Promise.resolve() };
    if (!known) locks.set(keyv, this.lock);
  }

  createAccount(account: AccountRecord): Promise<AccountRecord> {
    return this.locked(async () => {
      if ((await this.read<AccountRecord>(`account:${account.id}`)) !== undefined) throw new Error(`account ${account.id} already exists`);
      await this.keyv.set(this.name(`account:${account.id}`), account);
      const opening = openingEntry(await this.nextEntryId(), account);
      if (opening) await this.append(opening, account.createdAt);
      return account;
    });
  }

  async getAccount(id: string): Promise<AccountRecord | null> {
    return (await this.read<AccountRecord>(`account:${id}`)) ?? null;
  }

  changeBalance(change: BalanceChange): Promise<BalanceChangeResult | null> {
    return this.locked(async () => {
      const account = await this.read<AccountRecord>(`account:${change.accountId}`);
      if (!account) return null;
      const known = await this.ledger(account.id).reference(change.reference);
      if (known) return { account, entry: known, applied: false };
      account.balance = balanceAfter(account.balance, change.amount);
      const entry = balanceChangeEntry(await this.nextEntryId(), change, account.balance);
      await this.keyv.set(this.name(`account:${account.id}`), account);
      await this.append(entry, change.now);
      return { account, entry: structuredClone(entry), applied: true };
    });
  }

  insertKey(key: NewKeyRecord): Promise<KeyRecord> {
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
    return this.keyById(id);
  }

  async getKeyByHandle(handle: string): Promise<KeyRecord | null> {
    return (await this.read<KeyRecord>(`key:${handle}`)) ?? null;
  }

  async listKeys(accountId: string, type: KeyType, after: number, limit: number): Promise<KeyRecord[]> {
    const entries = await this.index(accountId, type).page(after, limit);
    const found = await Promise.all(entries.map(([, handle]) => this.read<KeyRecord>(`key:${handle}`)));
    return found.filter((record): record is KeyRecord => record !== undefined);
  }

  updateKey(id: number, changes: KeyChanges): Promise<KeyRecord | null> {
    return this.locked(async () => {
      const found = await this.keyById(id);
      if (!found) return null;
      Object.assign(found, structuredClone(changes));
      await this.keyv.set(this.name(`key:${found.handle}`), found);
      return structuredClone(found);
    });
  }

  deleteKey(id: number): Promise<boolean> {
    return this.locked(async () => {
      const found = await this.keyById(id);
      if (!found) return false;
      await this.keyv.delete(this.name(`key:${found.handle}`));
      await this.keyv.delete(this.name(`key-id:${id}`));
      await this.index(found.accountId, found.type).remove(id);
      return true;
    });
  }

  touchKey(id: number, at: number): Promise<void> {
    return this.locked(async () => {
      const found = await this.keyById(id);
      if (!found || (found.lastUsedAt !== null && found.lastUsedAt >= at)) return;
      found.lastUsedAt = at;
      await this.keyv.set(this.name(`key:${found.handle}`), found);
    });
  }

  rotateKey(rotation: KeyRotation): Promise<KeyRecord | null> {
    return this.locked(async () => {
      const found = await this.keyById(rotation.id);
      if (!found) return null;
      applyRotation(found, rotation);
      await this.keyv.set(this.name(`key:${found.handle}`), found);
      return structuredClone(found);
    });
  }

  reserveSpend(reservation: SpendReservation): Promise<ReservationResult> {
    return this.locked(async () => {
      const owner = (await this.keyById(reservation.keyId))?.accountId;
      // The key's holds are listed under its account: release both accounts' expired holds (one, as a rule).
      await this.releaseExpired(reservation.accountId, reservation.now);
      if (owner !== undefined && owner !== reservation.accountId) await this.releaseExpired(owner, reservation.now);
      // Read after the releases, which wrote both records.
      const key = await this.keyById(reservation.keyId);
      if (!key) return { ok: false, reason: 'key_not_found' } as const;
      const account = await this.read<AccountRecord>(`account:${reservation.accountId}`);
      if (!account) return { ok: false, reason: 'account_not_found' } as const;
      const verdict = applyReservation(key, account, reservation);
      if (!verdict.ok) return verdict;
      const number = ((await this.read<number>('next-hold-id')) ?? 0) + 1;
      await this.keyv.set(this.name('next-hold-id'), number);
      const hold: SpendHold = {
        id: String(number),
        keyId: key.id,
        accountId: account.id,
        amount: reservation.amount,
        expiresAt: reservation.expiresAt,
      };
      await this.keyv.set(this.name(`hold:${hold.id}`), hold);
      await this.holdIndex().add(number, account.id);
      await this.accountHolds(account.id).add(number, hold.id);
      await this.keyv.set(this.name(`key:${key.handle}`), key);
      await this.keyv.set(this.name(`account:${account.id}`), account);
      return { ok: true, holdId: hold.id } as const;
    });
  }

  settleSpend(settlement: SpendSettlement): Promise<LedgerEntry | null> {
    return this.locked(async () => {
      const ledger = this.ledger(settlement.accountId);
      // A retry of a settlement already written (its answer was lost) changes nothing.
      const settled = settlement.usage === undefined ? undefined : await ledger.settledRequest(settlement.usage.requestId);
      if (settled) return settled;
      const hold = settlement.holdId === null ? undefined : await this.read<SpendHold>(`hold:${settlement.holdId}`);
      if (hold && hold.keyId === settlement.keyId && hold.accountId === settlement.accountId) await this.release(hold.id);
      // Read after the release, which wrote both records.
      const key = await this.keyById(settlement.keyId);
      const account = (await this.read<AccountRecord>(`account:${settlement.accountId}`)) ?? null;
      applySettlement(key, account, settlement);
      if (key) await this.keyv.set(this.name(`key:${key.handle}`), key);
      if (!account) return null;
      await this.keyv.set(this.name(`account:${account.id}`), account);
      if (!settlementWritesEntry(settlement)) return null;
      const entry = usageEntry(await this.nextEntryId(), settlement, account.balance);
      await this.append(entry, settlement.now);
      await ledger.count(settlement);
      return structuredClone(entry);
    });
  }

  extendHold(holdId: string, accountId: string, expiresAt: number): Promise<boolean> {
    return this.locked(async () => {
      const hold = await this.read<SpendHold>(`hold:${holdId}`);
      if (!hold || hold.accountId !== accountId) return false;
      hold.expiresAt = expiresAt;
      await this.keyv.set(this.name(`hold:${holdId}`), hold);
      return true;
    });
  }

  /**
   * Walks the store's hold index (live holds: one per request in flight, plus those of dead
   * gateways), reading each hold; each due one is released under the lock on its own, after reading
   * it again, so a hold settled meanwhile is not released twice.
   */
  async releaseExpiredHolds(now: number, limit: number): Promise<number> {
    let released = 0;
    let after = 0;
    for (;;) {
      const page = await this.holdIndex().page(after, SCAN_PAGE);
      for (const [number] of page.slice(0, SCAN_PAGE)) {
        if (released >= limit) return released;
        const done = await this.locked(async () => {
          const hold = await this.read<SpendHold>(`hold:${number}`);
          if (!hold || hold.expiresAt > now) return false;
          await this.release(hold.id);
          return true;
        });
        if (done) released += 1;
      }
      if (page.length <= SCAN_PAGE) return released;
      after = (page[SCAN_PAGE - 1] as [number, string])[0];
    }
  }

  listLedger(accountId: string, query: LedgerQuery): Promise<LedgerPage> {
    return this.locked(() => this.ledger(accountId).page(query));
  }

  async findUsageEntry(accountId: string, id: string): Promise<LedgerEntry | null> {
    return (await this.ledger(accountId).findUsage(id)) ?? null;
  }

  getUsage(accountId: string, range: UsageRange): Promise<UsageRow[]> {
    return this.locked(() => this.ledger(accountId).usageRows(range));
  }

  /** Walks the accounts that have a ledger; each account is trimmed under the lock on its own. */
  async trimLedger(before: number): Promise<number> {
    let trimmed = 0;
    let after = 0;
    for (;;) {
      const page = await this.ledgerAccounts().page(after, SCAN_PAGE);
      for (const [, accountId] of page.slice(0, SCAN_PAGE)) {
        trimmed += await this.locked(() => this.ledger(accountId).trim(before, Number.POSITIVE_INFINITY));
      }
      if (page.length <= SCAN_PAGE) return trimmed;
      after = (page[SCAN_PAGE - 1] as [number, string])[0];
    }
  }

  hitCounter(hit: CounterHit): Promise<number> {
    return this.locked(async () => {
      const entry = this.name(`counter:${hit.name}:${hit.windowStart}`);
      const count = (((await this.keyv.get(entry)) as number | undefined) ?? 0) + hit.amount;
      await this.keyv.set(entry, count, hit.ttlMs);
      return count;
    });
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

  private index(accountId: string, type: KeyType): KeyvKeyIndex {
    return new KeyvKeyIndex(this.keyv, this.name(`account-keys:${type}:${accountId}`));
  }

  /** Every live hold of the store: [hold number, account id]. */
  private holdIndex(): KeyvKeyIndex {
    return new KeyvKeyIndex(this.keyv, this.name('holds'));
  }

  /** The live holds of an account: [hold number, hold id]. */
  private accountHolds(accountId: string): KeyvKeyIndex {
    return new KeyvKeyIndex(this.keyv, this.name(entryName('account-holds', accountId, 'index')));
  }

  /** The accounts that have a ledger, for `trimLedger`: [sequence number, account id]. */
  private ledgerAccounts(): KeyvKeyIndex {
    return new KeyvKeyIndex(this.keyv, this.name('ledger-accounts'));
  }

  private ledger(accountId: string): KeyvAccountLedger {
    return new KeyvAccountLedger(this.entries, accountId);
  }

  private async nextEntryId(): Promise<number> {
    const id = ((await this.read<number>('next-entry-id')) ?? 0) + 1;
    await this.keyv.set(this.name('next-entry-id'), id);
    return id;
  }

  /** Appends an entry to its account's ledger (trimming what retention allows at `now`); lists a new ledger for `trimLedger`. */
  private async append(entry: LedgerEntry, now: number): Promise<void> {
    const first = await this.ledger(entry.accountId).append(entry, retentionCutoff(now, this.retentionDays));
    if (!first) return;
    const sequence = ((await this.read<number>('next-ledger-account')) ?? 0) + 1;
    await this.keyv.set(this.name('next-ledger-account'), sequence);
    await this.ledgerAccounts().add(sequence, entry.accountId);
  }

  /** Releases a live hold (its amount leaves its key's and account's reserved) and deletes it; a gone hold is a no-op. Under the lock. */
  private async release(holdId: string): Promise<void> {
    const hold = await this.read<SpendHold>(`hold:${holdId}`);
    if (!hold) return;
    await this.keyv.delete(this.name(`hold:${holdId}`));
    const number = Number(hold.id);
    await this.holdIndex().remove(number);
    await this.accountHolds(hold.accountId).remove(number);
    const key = await this.keyById(hold.keyId);
    const account = (await this.read<AccountRecord>(`account:${hold.accountId}`)) ?? null;
    releaseHold(hold, key, account);
    if (key) await this.keyv.set(this.name(`key:${key.handle}`), key);
    if (account) await this.keyv.set(this.name(`account:${account.id}`), account);
  }

  /** Releases the account's holds whose deadline is `now` or earlier. Under the lock. */
  private async releaseExpired(accountId: string, now: number): Promise<void> {
    let after = 0;
    for (;;) {
      const page = await this.accountHolds(accountId).page(after, SCAN_PAGE);
      for (const [, holdId] of page.slice(0, SCAN_PAGE)) {
        const hold = await this.read<SpendHold>(`hold:${holdId}`);
        if (hold && hold.expiresAt <= now) await this.release(holdId);
      }
      if (page.length <= SCAN_PAGE) return;
      after = (page[SCAN_PAGE - 1] as [number, string])[0];
    }
  }

  /** Runs `task` after every earlier locked task of this Keyv instance (in this process). */
  private locked<T>(task: () => Promise<T>): Promise<T> {
    const run = this.lock.tail.then(task, task);
    this.lock.tail = run.catch(() => undefined);
    return run;
  }
}
