import type Keyv from 'keyv';
import { ConfigurationError } from '../../errors/configuration-error.js';
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
import { LEDGER_TRIM_PER_WRITE, retentionCutoff, utcDay } from '../spend-rules.js';
import type { CounterHit, KeyvBackend } from './backend.js';
import { isKeyvDefaultDeserializer, parseKeyvJson } from './keyv-json.js';
import { type KeyvRedisAdapter, RedisRunner } from './keyv-redis.js';

type RefusalReason = Exclude<ReservationResult, { ok: true }>['reason'];

const RESERVATION_REASONS: ReadonlySet<string> = new Set<RefusalReason>([
  'key_not_found',
  'account_not_found',
  'spend_limit_reached',
  'insufficient_balance',
]);

/**
 * How many entries one `trimLedger` script removes at most: the command blocks Redis while it runs,
 * so a large trim is cut into batches, each one round trip, between which other commands run.
 */
const TRIM_BATCH = 1000;

/** A ledger entry as the scripts store it: the account id left out (its set names it), `null` fields left out. */
type StoredEntry = Pick<LedgerEntry, 'id' | 'type' | 'amount' | 'balanceAfter' | 'createdAt'> &
  Partial<Omit<LedgerEntry, 'id' | 'accountId' | 'type' | 'amount' | 'balanceAfter' | 'createdAt'>>;

/**
 * `KeyvKeyStore` on `@keyv/redis`: every operation is one Redis command or one Lua script
 * (`keyv-redis-scripts.ts`, `keyv-redis-ledger-scripts.ts`) on the adapter's client, so it is one
 * round trip and atomic across every process sharing the Redis (`trimLedger` runs in batches of
 * one script each). Records stay in Keyv's format at the keys Keyv uses, so `keyv.get()` reads
 * what the scripts write; holds, ledger entries, their indexes and the usage counters are Redis
 * hashes, sets and sorted sets beside them (docs/redis.md).
 */
export class RedisBackend implements KeyvBackend {
  readonly sharedAcrossProcesses = true;
  /** Runs the commands and scripts; the tests call scripts through it directly. */
  readonly runner: RedisRunner;

  constructor(
    private readonly keyv: Keyv,
    adapter: KeyvRedisAdapter,
    prefix: string,
    /** `ledgerRetentionDays` of the store: each write to an account's ledger trims its entries past it. */
    readonly retentionDays: number,
  ) {
    if (keyv.serialize === undefined || keyv.deserialize === undefined || keyv.opts?.compression !== undefined) {
      throw new ConfigurationError(
        'ERR_MS_STORE',
        "KeyvKeyStore on Redis needs Keyv's default JSON serializer and no compression: its Lua scripts edit the stored JSON",
      );
    }
    this.runner = new RedisRunner(adapter, redisKeyPrefix(keyv, adapter, prefix));
  }

  async createAccount(account: AccountRecord): Promise<AccountRecord> {
    const created = await this.runner.script('createAccount', await this.serialize(account));
    if (created !== 1) throw new Error(`account ${account.id} already exists`);
    return account;
  }

  async getAccount(id: string): Promise<AccountRecord | null> {
    // One GET of the entry Keyv wrote (as the scripts read it), without Keyv's get machinery:
    // this and getKeyByHandle run on every request.
    return this.parse<AccountRecord>(await this.runner.command(['GET', `${this.runner.base}account:${id}`]));
  }

  async changeBalance(change: BalanceChange): Promise<BalanceChangeResult | null> {
    const answer = await this.parse<{ applied: boolean; entry: StoredEntry; account: AccountRecord }>(
      await this.runner.script('changeBalance', await this.serialize({ ...change, ...this.trimming(change.now) })),
    );
    if (!answer) return null;
    return { account: answer.account, entry: ledgerEntry(answer.entry, change.accountId), applied: answer.applied };
  }

  async insertKey(key: NewKeyRecord): Promise<KeyRecord> {
    const id = await this.runner.script('insertKey', await this.serialize(key));
    return { ...structuredClone(key), id: Number(id) };
  }

  async getKey(id: number): Promise<KeyRecord | null> {
    // JSON would send NaN or Infinity as null, which the script cannot name a key with: no such key.
    if (!Number.isFinite(id)) return null;
    return this.parse<KeyRecord>(await this.runner.script('getKey', await this.serialize({ id })));
  }

  async getKeyByHandle(handle: string): Promise<KeyRecord | null> {
    return this.parse<KeyRecord>(await this.runner.command(['GET', `${this.runner.base}key:${handle}`]));
  }

  async listKeys(accountId: string, type: KeyType, after: number, limit: number): Promise<KeyRecord[]> {
    const raw = (await this.runner.script('listKeys', await this.serialize({ accountId, type, after, limit }))) as string[];
    const records: KeyRecord[] = [];
    for (const entry of raw) {
      // A key deleted between the index read and the record read cannot happen (one script), but
      // an empty string would mean a damaged index: skip it rather than fail the page.
      const record = entry === '' ? null : await this.parse<KeyRecord>(entry);
      if (record) records.push(record);
    }
    return records;
  }

  async updateKey(id: number, changes: KeyChanges): Promise<KeyRecord | null> {
    if (!Number.isFinite(id)) return null;
    return this.parse<KeyRecord>(await this.runner.script('updateKey', await this.serialize({ id, changes })));
  }

  async deleteKey(id: number): Promise<boolean> {
    if (!Number.isFinite(id)) return false;
    return (await this.runner.script('deleteKey', await this.serialize({ id }))) === 1;
  }

  async touchKey(id: number, at: number): Promise<void> {
    if (!Number.isFinite(id)) return;
    await this.runner.script('touchKey', await this.serialize({ id, at }));
  }

  async rotateKey(rotation: KeyRotation): Promise<KeyRecord | null> {
    if (!Number.isFinite(rotation.id)) return null;
    return this.parse<KeyRecord>(await this.runner.script('rotateKey', await this.serialize(rotation)));
  }

  async reserveSpend(reservation: SpendReservation): Promise<ReservationResult> {
    const answer = await this.runner.script('reserveSpend', await this.serialize(reservation));
    if (typeof answer === 'string' && answer.startsWith('ok:')) return { ok: true, holdId: answer.slice(3) };
    if (typeof answer === 'string' && RESERVATION_REASONS.has(answer)) return { ok: false, reason: answer as RefusalReason };
    throw new Error(`unexpected reserveSpend answer from Redis: ${String(answer)}`);
  }

  async settleSpend(settlement: SpendSettlement): Promise<LedgerEntry | null> {
    const payload = { ...settlement, day: utcDay(settlement.now), ...this.trimming(settlement.now) };
    const stored = await this.parse<StoredEntry>(await this.runner.script('settleSpend', await this.serialize(payload)));
    return stored && ledgerEntry(stored, settlement.accountId);
  }

  async extendHold(holdId: string, accountId: string, expiresAt: number): Promise<boolean> {
    return (await this.runner.script('extendHold', await this.serialize({ holdId, accountId, expiresAt }))) === 1;
  }

  async releaseExpiredHolds(now: number, limit: number): Promise<number> {
    return Number(await this.runner.script('releaseExpiredHolds', await this.serialize({ now, limit })));
  }

  async listLedger(accountId: string, query: LedgerQuery): Promise<LedgerPage> {
    const page = await this.parse<{ entries: StoredEntry[]; hasMore: boolean }>(
      await this.runner.script('listLedger', await this.serialize({ accountId, ...query })),
    );
    if (!page) throw new Error('unexpected listLedger answer from Redis');
    return { entries: page.entries.map((stored) => ledgerEntry(stored, accountId)), hasMore: page.hasMore };
  }

  async findUsageEntry(accountId: string, id: string): Promise<LedgerEntry | null> {
    const stored = await this.parse<StoredEntry>(await this.runner.script('findUsageEntry', await this.serialize({ accountId, id })));
    return stored && ledgerEntry(stored, accountId);
  }

  async getUsage(accountId: string, range: UsageRange): Promise<UsageRow[]> {
    const flat = (await this.runner.script('getUsage', await this.serialize({ accountId, ...range }))) as string[];
    const rows: UsageRow[] = [];
    for (let i = 0; i + 2 < flat.length; i += 3) {
      const date = flat[i] as string;
      const row = flat[i + 1] as string;
      // '<key id>:<model>': key ids have no ':', models may.
      const colon = row.indexOf(':');
      const [requests, promptTokens, completionTokens, cost] = (flat[i + 2] as string).split(',').map(Number) as [
        number,
        number,
        number,
        number,
      ];
      rows.push({ date, keyId: Number(row.slice(0, colon)), model: row.slice(colon + 1), requests, promptTokens, completionTokens, cost });
    }
    return rows;
  }

  async trimLedger(before: number): Promise<number> {
    let removed = 0;
    let cursor = '0';
    for (;;) {
      const [count, next, done] = (await this.runner.script(
        'trimLedger',
        await this.serialize({ before, cursor, budget: TRIM_BATCH }),
      )) as [number, string, number];
      removed += count;
      if (done === 1) return removed;
      cursor = next;
    }
  }

  async hitCounter(hit: CounterHit): Promise<number> {
    return Number(await this.runner.script('hitCounter', await this.serialize(hit)));
  }

  /**
   * The lazy trim of a write at `now`: entries created before `trimBefore` (`null`: keep every
   * entry), at most `trimPerWrite` of them.
   */
  private trimming(now: number): { trimBefore: number | null; trimPerWrite: number } {
    const cutoff = retentionCutoff(now, this.retentionDays);
    return { trimBefore: Number.isFinite(cutoff) ? cutoff : null, trimPerWrite: LEDGER_TRIM_PER_WRITE };
  }

  /** A Lua payload in Keyv's own serialization, so strings carry the same escaping as stored records. */
  private async serialize(value: unknown): Promise<string> {
    return (await (this.keyv.serialize as NonNullable<Keyv['serialize']>)({ value })) as string;
  }

  /**
   * A Keyv-serialized record (as a command or script answers it), or `null` for anything else (a
   * script's `false`, a missing key). Read with the instance's deserializer as it is now; Keyv's
   * default one is stood in for by the equivalent, faster `parseKeyvJson`.
   */
  private async parse<T>(raw: unknown): Promise<T | null> {
    if (typeof raw !== 'string') return null;
    const deserialize = this.keyv.deserialize as NonNullable<Keyv['deserialize']>;
    const entry = (isKeyvDefaultDeserializer(deserialize) ? parseKeyvJson(raw) : await deserialize.call(this.keyv, raw)) as
      | { value?: T }
      | undefined;
    return entry?.value ?? null;
  }
}

/** A stored entry with its account and every field the scripts left out as `null`. */
function ledgerEntry(stored: StoredEntry, accountId: string): LedgerEntry {
  return {
    id: stored.id,
    accountId,
    type: stored.type,
    amount: stored.amount,
    balanceAfter: stored.balanceAfter,
    keyId: stored.keyId ?? null,
    model: stored.model ?? null,
    promptTokens: stored.promptTokens ?? null,
    completionTokens: stored.completionTokens ?? null,
    requestId: stored.requestId ?? null,
    upstreamId: stored.upstreamId ?? null,
    reference: stored.reference ?? null,
    note: stored.note ?? null,
    createdAt: stored.createdAt,
  };
}

/**
 * The Redis key prefix of the store's entries: Keyv's namespace prefix, then the adapter's, then
 * the store prefix. Both are plain string prefixes, which the check below makes sure of.
 */
function redisKeyPrefix(keyv: Keyv, adapter: KeyvRedisAdapter, prefix: string): string {
  const redisKey = (entry: string) => adapter.createKeyPrefix(keyv._getKeyPrefix(entry), adapter.namespace);
  const base = redisKey(prefix);
  if (redisKey(`${prefix}probe`) !== `${base}probe`) {
    throw new ConfigurationError('ERR_MS_OPTION', 'KeyvKeyStore: choose a prefix that does not start with the Keyv namespace');
  }
  return base;
}
