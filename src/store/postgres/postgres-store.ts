import { DEFAULT_COUNTER_AMOUNT, DEFAULT_HOLD_SWEEP_LIMIT } from '../../defaults.js';
import {
  LEDGER_TRIM_PER_WRITE,
  MAX_USD,
  OPENING_REFERENCE,
  UNKNOWN_MODEL,
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
  retentionCutoff,
  settlementWritesEntry,
  utcDay,
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
import { loadPg } from './load-pg.js';
import { type PostgresMigrationResult, quoteIdentifier, runMigrations } from './migrations.js';
import {
  POSTGRES_CLIENT_TIMEOUT_MARGIN_MS,
  type PostgresKeyStoreOptions,
  type PostgresPool,
  type ResolvedPostgresOptions,
  resolvePostgresOptions,
} from './options.js';
import { type AccountRow, type KeyRow, type LedgerRow, type UsageDailyRow, toAccount, toEntry, toKey, toUsageRow } from './rows.js';

// Loaded when this module is: importing `modelswitch-keys/postgres` without `pg` fails at once,
// saying `npm install pg`, instead of at the first query.
const pg = loadPg();

/** `application_name` of the store's connections, so `pg_stat_activity` shows whose they are. */
const APPLICATION_NAME = 'modelswitch-keys';

/**
 * How long a rate-limit window's row outlives the window, so an instance whose clock runs a little
 * behind still finds the window's count (as `KeyvKeyStore` keeps its counters).
 */
const COUNTER_GRACE_MS = 60_000;
/** Every this many counter hits, the store deletes up to {@link COUNTER_SWEEP_ROWS} ended windows. */
const COUNTER_SWEEP_EVERY = 1000;
const COUNTER_SWEEP_ROWS = 1000;

/** `trimLedger` works in batches of at most this many accounts and entries per statement, each well within a statement timeout. */
const TRIM_BATCH_ACCOUNTS = 1000;
const TRIM_BATCH_ENTRIES = 10_000;

/** The SQLSTATE `change_balance` raises for a balance that would leave ±MAX_USD: a refusal, answered as a TypeError. */
const BALANCE_OUT_OF_RANGE = 'MSK01';

/** The largest `bigint`: hold ids above it name no hold. */
const MAX_BIGINT = 9_223_372_036_854_775_807n;

/** Which column each field `updateKey` may change lives in, and whether it is written as JSON. */
const CHANGE_COLUMNS: Readonly<Record<keyof KeyChanges, { column: string; json: boolean }>> = {
  name: { column: 'name', json: false },
  active: { column: 'active', json: false },
  expiresAt: { column: 'expires_at', json: false },
  limit: { column: '"limit"', json: false },
  limitReset: { column: 'limit_reset', json: false },
  rateLimit: { column: 'rate_limit', json: true },
  models: { column: 'models', json: true },
};

/** Ids are positive safe integers; anything else (NaN, 1.5, -1, 2^60) names no key, without a query. */
function isKeyId(id: unknown): id is number {
  return typeof id === 'number' && Number.isSafeInteger(id) && id > 0;
}

/** PostgreSQL text cannot hold U+0000: no stored record has such an id, handle or name. */
function isStorableText(value: unknown): value is string {
  return typeof value === 'string' && !value.includes('\u0000');
}

/** The `bigint` a hold id stands for, or `null` when it is not one this store handed out (so it names no hold). */
function holdNumber(holdId: string | null): string | null {
  if (holdId === null || !/^[1-9][0-9]{0,18}$/.test(holdId) || BigInt(holdId) > MAX_BIGINT) return null;
  return holdId;
}

/** A `jsonb` parameter: `pg` would send a JS array as a PostgreSQL array, so values go as JSON text. */
function json(value: unknown): string | null {
  return value === null ? null : JSON.stringify(value);
}

/**
 * A {@link KeyStore} on PostgreSQL (with `pg`): the durable system of record for accounts, keys,
 * holds, the ledger and usage aggregates. Several gateway processes share one database and its
 * limits exactly: every operation is one SQL statement, and those that change several rows call a
 * PL/pgSQL function that locks them (accounts first, in id order, then keys and holds), so each is
 * atomic, one round trip, and never deadlocks with another.
 *
 * The tables are created by {@link PostgresKeyStore.migrate}, which you call explicitly (at
 * startup, or from a deploy step): nothing is created on import or construction. The `schema`
 * option keeps several gateways (or test runs) apart in one database.
 *
 * When the database fails, operations reject (the middleware answers 503 `store_unavailable`);
 * with `connectionString`, a statement is cancelled after `statementTimeoutMs` and a connection
 * waited for at most `connectionTimeoutMs`, so an operation never hangs.
 *
 * @example
 * ```ts
 * import { PostgresKeyStore } from 'modelswitch-keys/postgres';
 * import { keysRouter, modelSwitchAuth } from 'modelswitch-keys';
 *
 * const store = new PostgresKeyStore({ connectionString: process.env.DATABASE_URL });
 * await store.migrate();
 * app.use('/api', keysRouter(store));
 * app.use('/v1', modelSwitchAuth(store));
 * ```
 */
export class PostgresKeyStore implements KeyStore {
  /** The schema of the store's tables. */
  readonly schema: string;
  private readonly options: ResolvedPostgresOptions;
  private readonly pool: PostgresPool;
  /** Whether the pool is the store's own (made from `connectionString`, ended by `close()`). */
  private readonly ownsPool: boolean;
  private readonly sql: Statements;
  private hitsSinceSweep = 0;
  /** The counter sweep running in the background, if any: `close()` waits for it. */
  private sweeping: Promise<void> | undefined;
  private closing: Promise<void> | undefined;

  constructor(options: PostgresKeyStoreOptions) {
    this.options = resolvePostgresOptions(options);
    this.schema = this.options.schema;
    this.sql = statements(quoteIdentifier(this.schema));
    const { connection } = this.options;
    if ('pool' in connection) {
      this.pool = connection.pool;
      this.ownsPool = false;
    } else {
      const pool = new pg.Pool({
        connectionString: connection.connectionString,
        max: this.options.maxConnections,
        connectionTimeoutMillis: this.options.connectionTimeoutMs,
        statement_timeout: this.options.statementTimeoutMs,
        query_timeout: this.options.statementTimeoutMs + POSTGRES_CLIENT_TIMEOUT_MARGIN_MS,
        keepAlive: true,
        application_name: APPLICATION_NAME,
      });
      // An idle connection the server closed (a restart, an admin) emits 'error' on the pool, which
      // would end the process unheard; the pool drops that connection and the next operation opens
      // a new one. Errors of operations reject the operation itself.
      pool.on('error', () => {});
      this.pool = pool;
      this.ownsPool = true;
    }
  }

  /**
   * Creates the schema and brings its tables up to this version of the package, recording each
   * step in `<schema>.migrations`. Run it explicitly, at startup or in a deploy step: the store
   * never changes the database on import or construction. Safe to run again (nothing to do) and
   * from several processes at once (an advisory lock makes the others wait; each step runs once).
   * It runs in one transaction, without a statement timeout: all or nothing.
   *
   * @example
   * ```ts
   * const { applied, version } = await store.migrate();
   * console.log(`schema ${store.schema} at version ${version}; applied ${applied.length} step(s)`);
   * ```
   */
  async migrate(): Promise<PostgresMigrationResult> {
    const { connection } = this.options;
    if ('pool' in connection) {
      const client = await connection.pool.connect();
      try {
        return await runMigrations(client, this.schema);
      } finally {
        client.release();
      }
    }
    // A connection of its own, without the pool's client-side timeout: a waiting migration (another
    // process holds the lock) or a long one must not be cut off half-way through the wait.
    const client = new pg.Client({
      connectionString: connection.connectionString,
      connectionTimeoutMillis: this.options.connectionTimeoutMs,
      application_name: APPLICATION_NAME,
    });
    client.on('error', () => {});
    await client.connect();
    try {
      return await runMigrations(client, this.schema);
    } finally {
      await client.end().catch(() => {});
    }
  }

  async createAccount(account: AccountRecord): Promise<AccountRecord> {
    checkNewAccount(account);
    // One statement: the account and, for a balance other than 0, its opening entry and reference.
    const { rows } = await this.pool.query(this.sql.createAccount, [
      account.id,
      account.balance,
      account.isFreeTier,
      account.createdAt,
      OPENING_REFERENCE,
    ]);
    return toAccount(rows[0] as AccountRow);
  }

  async getAccount(id: string): Promise<AccountRecord | null> {
    if (!isStorableText(id)) return null;
    const { rows } = await this.pool.query(this.sql.getAccount, [id]);
    return rows[0] ? toAccount(rows[0] as AccountRow) : null;
  }

  async changeBalance(change: BalanceChange): Promise<BalanceChangeResult | null> {
    checkBalanceChange(change);
    if (!isStorableText(change.accountId)) return null;
    let rows: unknown[];
    try {
      ({ rows } = await this.pool.query(this.sql.changeBalance, [
        change.accountId,
        change.type,
        change.amount,
        change.reference,
        change.note,
        change.now,
        MAX_USD,
        this.trimBefore(change.now),
        LEDGER_TRIM_PER_WRITE,
      ]));
    } catch (error) {
      // The function refused a balance beyond ±MAX_USD, changing nothing: the contract's TypeError.
      if ((error as { code?: unknown }).code === BALANCE_OUT_OF_RANGE) throw new TypeError((error as Error).message);
      throw error;
    }
    const row = rows[0] as { applied: boolean; account: AccountRow; entry: LedgerRow } | undefined;
    if (!row) return null;
    return { account: toAccount(row.account), entry: toEntry(row.entry), applied: row.applied };
  }

  async insertKey(key: NewKeyRecord): Promise<KeyRecord> {
    // The identity allocates ids atomically across connections; the UNIQUE handle rejects duplicates.
    const { rows } = await this.pool.query(this.sql.insertKey, [
      key.handle,
      key.type,
      key.accountId,
      key.name,
      key.prefix,
      key.hash,
      key.active,
      key.createdAt,
      key.expiresAt,
      key.lastUsedAt,
      key.usage,
      key.usagePeriod,
      key.reserved,
      key.limit,
      key.limitReset,
      json(key.rateLimit),
      json(key.models),
      key.previousHash,
      key.previousKeyExpiresAt,
    ]);
    return toKey(rows[0] as KeyRow);
  }

  async getKey(id: number): Promise<KeyRecord | null> {
    if (!isKeyId(id)) return null;
    const { rows } = await this.pool.query(this.sql.getKey, [id]);
    return rows[0] ? toKey(rows[0] as KeyRow) : null;
  }

  async getKeyByHandle(handle: string): Promise<KeyRecord | null> {
    if (!isStorableText(handle)) return null;
    const { rows } = await this.pool.query(this.sql.getKeyByHandle, [handle]);
    return rows[0] ? toKey(rows[0] as KeyRow) : null;
  }

  async listKeys(accountId: string, page: KeyPageRequest): Promise<KeyPage> {
    if (!isStorableText(accountId)) return { keys: [], hasMore: false };
    // One row more than asked tells whether another page exists.
    const { rows } = await this.pool.query(this.sql.listKeys, [accountId, page.type, page.after ?? 0, page.limit + 1]);
    return { keys: (rows.slice(0, page.limit) as KeyRow[]).map(toKey), hasMore: rows.length > page.limit };
  }

  async updateKey(id: number, changes: KeyChanges): Promise<KeyRecord | null> {
    if (!isKeyId(id)) return null;
    const sets: string[] = [];
    const values: unknown[] = [id];
    for (const [field, { column, json: asJson }] of Object.entries(CHANGE_COLUMNS) as Array<
      [keyof KeyChanges, { column: string; json: boolean }]
    >) {
      const value = changes[field];
      if (value === undefined) continue;
      values.push(asJson ? json(value) : value);
      sets.push(`${column} = $${values.length}`);
    }
    if (sets.length === 0) return this.getKey(id);
    const { rows } = await this.pool.query(`UPDATE ${this.sql.schema}.keys SET ${sets.join(', ')} WHERE id = $1 RETURNING *`, values);
    return rows[0] ? toKey(rows[0] as KeyRow) : null;
  }

  async deleteKey(id: number): Promise<boolean> {
    if (!isKeyId(id)) return false;
    const { rowCount } = await this.pool.query(this.sql.deleteKey, [id]);
    return rowCount === 1;
  }

  async touchKey(id: number, at: number): Promise<void> {
    if (!isKeyId(id) || !Number.isFinite(at)) return;
    await this.pool.query(this.sql.touchKey, [id, at]);
  }

  async rotateKey(rotation: KeyRotation): Promise<KeyRecord | null> {
    checkRotation(rotation);
    if (!isKeyId(rotation.id)) return null;
    // One UPDATE: every SET expression reads the row as it was, so the current hash becomes the previous one.
    const { rows } = await this.pool.query(this.sql.rotateKey, [rotation.id, rotation.hash, rotation.previousKeyExpiresAt, rotation.now]);
    return rows[0] ? toKey(rows[0] as KeyRow) : null;
  }

  async reserveSpend(reservation: SpendReservation): Promise<ReservationResult> {
    checkReservation(reservation);
    if (!isKeyId(reservation.keyId)) return { ok: false, reason: 'key_not_found' };
    if (!isStorableText(reservation.accountId)) return { ok: false, reason: 'account_not_found' };
    const { rows } = await this.pool.query(this.sql.reserveSpend, [
      reservation.keyId,
      reservation.accountId,
      reservation.amount,
      reservation.period,
      reservation.now,
      reservation.expiresAt,
    ]);
    const row = rows[0] as { reason: Exclude<ReservationResult, { ok: true }>['reason'] | null; hold_id: string | null };
    return row.reason === null ? { ok: true, holdId: String(row.hold_id) } : { ok: false, reason: row.reason };
  }

  async settleSpend(settlement: SpendSettlement): Promise<LedgerEntry | null> {
    checkSettlement(settlement);
    if (!isKeyId(settlement.keyId)) throw new TypeError('settleSpend: keyId must be a positive integer');
    const { usage } = settlement;
    const { rows } = await this.pool.query(this.sql.settleSpend, [
      settlement.keyId,
      settlement.accountId,
      holdNumber(settlement.holdId),
      settlement.cost,
      settlement.period,
      settlement.now,
      settlementWritesEntry(settlement),
      usage?.model ?? null,
      usage?.promptTokens ?? null,
      usage?.completionTokens ?? null,
      usage?.requestId ?? null,
      usage?.upstreamId ?? null,
      utcDay(settlement.now),
      usage?.model ?? UNKNOWN_MODEL,
      this.trimBefore(settlement.now),
      LEDGER_TRIM_PER_WRITE,
    ]);
    return rows[0] ? toEntry(rows[0] as LedgerRow) : null;
  }

  async extendHold(holdId: string, accountId: string, expiresAt: number): Promise<boolean> {
    checkHoldDeadline(expiresAt);
    const id = holdNumber(typeof holdId === 'string' ? holdId : null);
    if (id === null || !isStorableText(accountId)) return false;
    const { rowCount } = await this.pool.query(this.sql.extendHold, [id, accountId, expiresAt]);
    return rowCount === 1;
  }

  async releaseExpiredHolds(now: number, limit: number = DEFAULT_HOLD_SWEEP_LIMIT): Promise<number> {
    checkHoldSweep(now, limit);
    const { rows } = await this.pool.query(this.sql.releaseExpiredHolds, [now, Math.min(limit, 2 ** 31 - 1)]);
    return (rows[0] as { released: number }).released;
  }

  async listLedger(accountId: string, query: LedgerQuery): Promise<LedgerPage> {
    checkLedgerQuery(query);
    if (!isStorableText(accountId)) return { entries: [], hasMore: false };
    // Newest first along the account's primary key; one row more than asked tells whether another page exists.
    const { rows } = await this.pool.query(this.sql.listLedger, [
      accountId,
      query.before ?? null,
      query.keyId ?? null,
      query.type ?? null,
      query.limit + 1,
    ]);
    return { entries: (rows.slice(0, query.limit) as LedgerRow[]).map(toEntry), hasMore: rows.length > query.limit };
  }

  async findUsageEntry(accountId: string, id: string): Promise<LedgerEntry | null> {
    if (!isStorableText(accountId) || !isStorableText(id)) return null;
    const { rows } = await this.pool.query(this.sql.findUsageEntry, [accountId, id]);
    return rows[0] ? toEntry(rows[0] as LedgerRow) : null;
  }

  async getUsage(accountId: string, range: UsageRange): Promise<UsageRow[]> {
    checkUsageRange(range);
    if (!isStorableText(accountId)) return [];
    const { rows } = await this.pool.query(this.sql.getUsage, [accountId, range.from, range.to]);
    return (rows as UsageDailyRow[]).map(toUsageRow);
  }

  async trimLedger(before: number): Promise<number> {
    checkTrimBefore(before);
    // Batches, each one statement within the statement timeout, so a large backlog never holds one long transaction.
    let trimmed = 0;
    let from: string | null = null;
    do {
      const { rows } = await this.pool.query(this.sql.trimLedger, [before, from, TRIM_BATCH_ACCOUNTS, TRIM_BATCH_ENTRIES]);
      const batch = rows[0] as { trimmed: string; next_account: string | null };
      trimmed += Number(batch.trimmed);
      from = batch.next_account;
    } while (from !== null);
    return trimmed;
  }

  async hitCounter(name: string, windowMs: number, now: number, amount = DEFAULT_COUNTER_AMOUNT): Promise<CounterState> {
    checkCounterHit(windowMs, now, amount);
    const windowStart = now - (now % windowMs);
    const resetAt = windowStart + windowMs;
    // One upsert: concurrent hits on every connection and process never read the same old count.
    const { rows } = await this.pool.query(this.sql.hitCounter, [name, windowStart, amount, resetAt]);
    if (++this.hitsSinceSweep >= COUNTER_SWEEP_EVERY) this.sweepCounters(now);
    return { count: (rows[0] as { count: number }).count, resetAt };
  }

  /**
   * Ends the store's own pool (made from `connectionString`), after the counter sweep running in
   * the background, if any; calling it again waits for the same end. A pool given as `pool` is
   * yours to end.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.sweeping;
      if (this.ownsPool) await this.pool.end();
    })();
    return this.closing;
  }

  /** The time before which a ledger write at `now` trims the account's entries. */
  private trimBefore(now: number): number {
    return retentionCutoff(now, this.options.ledgerRetentionDays);
  }

  /** Deletes a batch of windows that ended before `now` (less the grace), in the background, one sweep at a time. */
  private sweepCounters(now: number): void {
    this.hitsSinceSweep = 0;
    if (this.sweeping) return;
    this.sweeping = this.pool
      .query(this.sql.sweepCounters, [now - COUNTER_GRACE_MS, COUNTER_SWEEP_ROWS])
      .then(
        () => {},
        // A failed sweep is retried by the next one; the hit itself already succeeded.
        () => {},
      )
      .finally(() => {
        this.sweeping = undefined;
      });
  }
}

/** The store's SQL for schema `s` (quoted), built once per store. */
type Statements = ReturnType<typeof statements>;

/** Rounds a parameter to the 10 decimals every store keeps for USD. */
const usd = (parameter: string) => `round(${parameter}::numeric, 10)`;

function statements(s: string) {
  return {
    schema: s,
    createAccount: `WITH account AS (
        INSERT INTO ${s}.accounts (id, balance, reserved, is_free_tier, created_at) VALUES ($1, ${usd('$2')}, 0, $3, $4) RETURNING *
      ), opening AS (
        INSERT INTO ${s}.ledger (account_id, type, amount, balance_after, reference, created_at)
        SELECT id, CASE WHEN balance > 0 THEN 'credit' ELSE 'adjustment' END, balance, balance, $5, created_at
        FROM account WHERE balance <> 0
        RETURNING *
      ), reference AS (
        INSERT INTO ${s}.ledger_references (account_id, reference, entry_id, type, amount, balance_after, note, created_at)
        SELECT account_id, reference, id, type, amount, balance_after, note, created_at FROM opening
      )
      SELECT * FROM account`,
    getAccount: `SELECT * FROM ${s}.accounts WHERE id = $1`,
    changeBalance: `SELECT * FROM ${s}.change_balance($1, $2, ${usd('$3')}, $4, $5, $6, $7, $8, $9)`,
    insertKey: `INSERT INTO ${s}.keys (handle, type, account_id, name, prefix, hash, active, created_at, expires_at, last_used_at,
        usage, usage_period, reserved, "limit", limit_reset, rate_limit, models, previous_hash, previous_key_expires_at)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, ${usd('$11')}, $12, ${usd('$13')}, ${usd('$14')}, $15, $16, $17, $18, $19)
      RETURNING *`,
    getKey: `SELECT * FROM ${s}.keys WHERE id = $1`,
    getKeyByHandle: `SELECT * FROM ${s}.keys WHERE handle = $1`,
    listKeys: `SELECT * FROM ${s}.keys WHERE account_id = $1 AND type = $2 AND id > $3 ORDER BY id LIMIT $4`,
    deleteKey: `DELETE FROM ${s}.keys WHERE id = $1`,
    touchKey: `UPDATE ${s}.keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)`,
    rotateKey: `UPDATE ${s}.keys SET
        previous_hash = CASE WHEN $3::double precision > $4::double precision THEN hash END,
        previous_key_expires_at = CASE WHEN $3::double precision > $4::double precision THEN $3::double precision END,
        hash = $2
      WHERE id = $1 RETURNING *`,
    reserveSpend: `SELECT * FROM ${s}.reserve_spend($1, $2, ${usd('$3')}, $4, $5, $6)`,
    settleSpend: `SELECT * FROM ${s}.settle_spend($1, $2, $3, ${usd('$4')}, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
    extendHold: `UPDATE ${s}.holds SET expires_at = $3 WHERE id = $1 AND account_id = $2`,
    releaseExpiredHolds: `SELECT ${s}.release_expired_holds($1, $2) AS released`,
    listLedger: `SELECT * FROM ${s}.ledger
      WHERE account_id = $1 AND ($2::bigint IS NULL OR id < $2) AND ($3::bigint IS NULL OR key_id = $3) AND ($4::text IS NULL OR type = $4)
      ORDER BY id DESC LIMIT $5`,
    // The request id first, then the upstream id, each from its own index.
    findUsageEntry: `SELECT * FROM (
        (SELECT *, 0 AS rank FROM ${s}.ledger WHERE account_id = $1 AND request_id = $2 AND type = 'usage' LIMIT 1)
        UNION ALL
        (SELECT *, 1 AS rank FROM ${s}.ledger WHERE account_id = $1 AND upstream_id = $2 AND type = 'usage' ORDER BY id LIMIT 1)
      ) found ORDER BY rank LIMIT 1`,
    getUsage: `SELECT day, key_id, model, requests, prompt_tokens, completion_tokens, cost FROM ${s}.usage_daily
      WHERE account_id = $1 AND day >= $2 AND day <= $3`,
    trimLedger: `SELECT * FROM ${s}.trim_ledger($1, $2, $3, $4)`,
    hitCounter: `INSERT INTO ${s}.counters (name, window_start, count, reset_at) VALUES ($1, $2, $3, $4)
      ON CONFLICT (name, window_start) DO UPDATE SET count = counters.count + EXCLUDED.count
      RETURNING count`,
    sweepCounters: `DELETE FROM ${s}.counters WHERE ctid = ANY (ARRAY (
        SELECT ctid FROM ${s}.counters WHERE reset_at < $1 LIMIT $2))`,
  };
}
