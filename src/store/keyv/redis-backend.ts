import { randomUUID } from 'node:crypto';
import type Keyv from 'keyv';
import { ConfigurationError } from '../../errors/configuration-error.js';
import type {
  AccountRecord,
  BalanceChangeResult,
  KeyChanges,
  KeyRecord,
  KeyType,
  LedgerEntry,
  LedgerPage,
  NewKeyRecord,
  ReservationResult,
  SpendReservation,
  SpendSettlement,
  UsageRow,
} from '../types.js';
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
 * The answer of the members the Redis backend does not have yet (the ledger, hold deadlines,
 * rotation): they come with their Lua scripts. Until then a hold id only carries the reserved amount
 * back to the settlement, as the `reserved` field of a settlement did.
 */
function notYet(): Promise<never> {
  return Promise.reject(new Error('not implemented on Redis yet'));
}

/** The start of an interim hold id, followed by the amount held and a random id (`amount:1.5:<uuid>`). */
const INTERIM_HOLD = 'amount:';

/**
 * `KeyvKeyStore` on `@keyv/redis`: every operation is one Redis command or one Lua script
 * (`keyv-redis-scripts.ts`) on the adapter's client, so it is one round trip and atomic across every
 * process sharing the Redis. Records stay in Keyv's format at the keys Keyv uses, so `keyv.get()`
 * reads what the scripts write.
 */
export class RedisBackend implements KeyvBackend {
  readonly sharedAcrossProcesses = true;
  /** Runs the commands and scripts; the tests call scripts through it directly. */
  readonly runner: RedisRunner;

  constructor(
    private readonly keyv: Keyv,
    adapter: KeyvRedisAdapter,
    prefix: string,
    /** `ledgerRetentionDays` of the store, for the ledger's scripts. */
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
    const created = await this.runner.command(['SET', `${this.runner.base}account:${account.id}`, await this.serialize(account), 'NX']);
    if (created === null) throw new Error(`account ${account.id} already exists`);
    return account;
  }

  async getAccount(id: string): Promise<AccountRecord | null> {
    // One GET of the entry Keyv wrote (as the scripts read it), without Keyv's get machinery:
    // this and getKeyByHandle run on every request.
    return this.parse<AccountRecord>(await this.runner.command(['GET', `${this.runner.base}account:${id}`]));
  }

  changeBalance(): Promise<BalanceChangeResult | null> {
    return notYet();
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
    return this.parse<KeyRecord>(await this.runner.script('updateKey', await this.serialize({ id, changes })));
  }

  async deleteKey(id: number): Promise<boolean> {
    return (await this.runner.script('deleteKey', await this.serialize({ id }))) === 1;
  }

  async touchKey(id: number, at: number): Promise<void> {
    await this.runner.script('touchKey', await this.serialize({ id, at }));
  }

  async reserveSpend(reservation: SpendReservation): Promise<ReservationResult> {
    const answer = await this.runner.script('reserveSpend', await this.serialize(reservation));
    if (answer === 'ok') return { ok: true, holdId: `${INTERIM_HOLD}${reservation.amount}:${randomUUID()}` };
    if (typeof answer === 'string' && RESERVATION_REASONS.has(answer)) return { ok: false, reason: answer as RefusalReason };
    throw new Error(`unexpected reserveSpend answer from Redis: ${String(answer)}`);
  }

  async settleSpend(settlement: SpendSettlement): Promise<LedgerEntry | null> {
    const { keyId, accountId, holdId, cost, period, now } = settlement;
    const reserved = holdId?.startsWith(INTERIM_HOLD) ? Number(holdId.slice(INTERIM_HOLD.length).split(':')[0]) : 0;
    await this.runner.script('settleSpend', await this.serialize({ keyId, accountId, reserved, cost, period, now }));
    return null;
  }

  rotateKey(): Promise<KeyRecord | null> {
    return notYet();
  }

  extendHold(): Promise<boolean> {
    return notYet();
  }

  releaseExpiredHolds(): Promise<number> {
    return notYet();
  }

  listLedger(): Promise<LedgerPage> {
    return notYet();
  }

  findUsageEntry(): Promise<LedgerEntry | null> {
    return notYet();
  }

  getUsage(): Promise<UsageRow[]> {
    return notYet();
  }

  trimLedger(): Promise<number> {
    return notYet();
  }

  async hitCounter(hit: CounterHit): Promise<number> {
    return Number(await this.runner.script('hitCounter', await this.serialize(hit)));
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
