import type Keyv from 'keyv';
import { applyReservation, applySettlement, checkBalanceResult, roundUsd } from '../spend-rules.js';
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
import type { CounterHit, KeyvBackend } from './backend.js';
import { KeyvKeyIndex } from './keyv-key-index.js';

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
 */
export class LockedBackend implements KeyvBackend {
  readonly sharedAcrossProcesses = false;
  /** Without a serializer (a `Map` holding the objects themselves) a read would hand out the stored object. */
  private readonly copyOnRead: boolean;
  private readonly lock: Lock;

  constructor(
    private readonly keyv: Keyv,
    private readonly prefix: string,
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
      return account;
    });
  }

  async getAccount(id: string): Promise<AccountRecord | null> {
    return (await this.read<AccountRecord>(`account:${id}`)) ?? null;
  }

  adjustBalance(accountId: string, delta: number): Promise<AccountRecord | null> {
    return this.locked(async () => {
      const account = await this.read<AccountRecord>(`account:${accountId}`);
      if (!account) return null;
      account.balance = roundUsd(account.balance + delta);
      checkBalanceResult(account.balance);
      await this.keyv.set(this.name(`account:${accountId}`), account);
      return account;
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

  reserveSpend(reservation: SpendReservation): Promise<ReservationResult> {
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

  settleSpend(settlement: SpendSettlement): Promise<void> {
    return this.locked(async () => {
      const key = await this.keyById(settlement.keyId);
      const account = (await this.read<AccountRecord>(`account:${settlement.accountId}`)) ?? null;
      applySettlement(key, account, settlement);
      if (key) await this.keyv.set(this.name(`key:${key.handle}`), key);
      if (account) await this.keyv.set(this.name(`account:${account.id}`), account);
    });
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

  /** Runs `task` after every earlier locked task of this Keyv instance (in this process). */
  private locked<T>(task: () => Promise<T>): Promise<T> {
    const run = this.lock.tail.then(task, task);
    this.lock.tail = run.catch(() => undefined);
    return run;
  }
}
