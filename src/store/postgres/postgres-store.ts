import { checkBalanceDelta, checkBalanceResult, checkCounterHit, checkReservation, checkSettlement, MAX_USD } from '../spend-rules.js';
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
import { loadPg } from './load-pg.js';
import { type PostgresMigrationResult, quoteIdentifier, runMigrations } from './migrations.js';
import {
  POSTGRES_CLIENT_TIMEOUT_MARGIN_MS,
  type PostgresKeyStoreOptions,
  type PostgresPool,
  type ResolvedPostgresOptions,
  resolvePostgresOptions,
} from './options.js';
import { type AccountRow, type KeyRow, toAccount, toKey } from './rows.js';

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

/** Which column each field `updateKey` may change lives in, and how its value is written. */
const CHANGE_COLUMNS: Record<keyof KeyChanges, { column: string; json?: true }> = {
  name: { column: 'name' },
  active: { column: 'active' },
  expiresAt: { column: 'expires_at' },
  limit: { column: '"limit"' },
  limitReset: { column: 'limit_reset' },
  rateLimit: { column: 'rate_limit', json: true },
};

/** Ids are positive safe integers; anything else (NaN, 1.5, -1, 2^60) names no key, without a query. */
function isKeyId(id: unknown): id is number {
  return typeof id === 'number' && Number.isSafeInteger(id) && id > 0;
}

/** PostgreSQL text cannot hold U+0000: no stored record has such an id, handle or name. */
function isStorableText(value: unknown): value is string {
  return typeof value === 'string' && !value.includes('\u0000');
}

/**
 * A {@link KeyStore} on PostgreSQL (with `pg`): the durable system of record for accounts, keys and
 * their spend. Several gateway processes share one database and its limits exactly: every atomic
 * operation is one SQL statement or one transaction with row locks.
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
    const { rows } = await this.pool.query(this.sql.createAccount, [
      account.id,
      account.balance,
      account.reserved,
      account.isFreeTier,
      account.createdAt,
    ]);
    return toAccount(rows[0] as AccountRow);
  }

  async getAccount(id: string): Promise<AccountRecord | null> {
    if (!isStorableText(id)) return null;
    const { rows } = await this.pool.query(this.sql.getAccount, [id]);
    return rows[0] ? toAccount(rows[0] as AccountRow) : null;
  }

  async adjustBalance(accountId: string, delta: number): Promise<AccountRecord | null> {
    checkBalanceDelta(delta);
    if (!isStorableText(accountId)) return null;
    // A balance beyond ±MAX_USD is refused in the same statement, so nothing is written.
    const { rows } = await this.pool.query(this.sql.adjustBalance, [accountId, delta, MAX_USD]);
    if (rows[0]) return toAccount(rows[0] as AccountRow);
    if ((await this.getAccount(accountId)) === null) return null;
    checkBalanceResult(Number.POSITIVE_INFINITY);
    return null;
  }

  async insertKey(key: NewKeyRecord): Promise<KeyRecord> {
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
      [keyof KeyChanges, { column: string; json?: true }]
    >) {
      const value = changes[field];
      if (value === undefined) continue;
      values.push(asJson ? json(value) : value);
      sets.push(`${column} = $${values.length}`);
    }
    if (sets.length === 0) return this.getKey(id);
    const { rows } = await this.pool.query(`UPDATE ${this.sql.s}.keys SET ${sets.join(', ')} WHERE id = $1 RETURNING *`, values);
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

  async reserveSpend(reservation: SpendReservation): Promise<ReservationResult> {
    checkReservation(reservation);
    if (!isKeyId(reservation.keyId)) return { ok: false, reason: 'key_not_found' };
    const { rows } = await this.pool.query(this.sql.reserveSpend, [
      reservation.keyId,
      reservation.accountId,
      reservation.amount,
      reservation.period,
    ]);
    const reason = (rows[0] as { reason: string | null }).reason;
    return reason === null ? { ok: true } : { ok: false, reason: reason as Exclude<ReservationResult, { ok: true }>['reason'] };
  }

  async settleSpend(settlement: SpendSettlement): Promise<void> {
    checkSettlement(settlement);
    const { keyId, accountId, reserved, cost, period, now } = settlement;
    await this.pool.query(this.sql.settleSpend, [isKeyId(keyId) ? keyId : 0, accountId, reserved, cost, period, now]);
  }

  async hitCounter(name: string, windowMs: number, now: number, amount = 1): Promise<CounterState> {
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
   * the background, if any. A pool given as `pool` is yours to end.
   */
  async close(): Promise<void> {
    await this.sweeping;
    if (this.ownsPool) await this.pool.end();
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

/** A `jsonb` parameter: `pg` would send a JS array as a PostgreSQL array, so objects go as JSON text. */
function json(value: unknown): string | null {
  return value === null ? null : JSON.stringify(value);
}

/** The store's SQL for schema `s` (quoted), built once per store. */
type Statements = ReturnType<typeof statements>;

/** Rounds a parameter to the 10 decimals every store keeps for USD. */
const USD = (parameter: string) => `round(${parameter}::numeric, 10)`;

function statements(s: string) {
  return {
    s,
    createAccount: `INSERT INTO ${s}.accounts (id, balance, reserved, is_free_tier, created_at)
      VALUES ($1, ${USD('$2')}, ${USD('$3')}, $4, $5) RETURNING *`,
    getAccount: `SELECT * FROM ${s}.accounts WHERE id = $1`,
    adjustBalance: `UPDATE ${s}.accounts SET balance = balance + ${USD('$2')}
      WHERE id = $1 AND abs(balance + ${USD('$2')}) <= $3 RETURNING *`,
    insertKey: `INSERT INTO ${s}.keys (handle, type, account_id, name, prefix, hash, active, created_at, expires_at, last_used_at,
        usage, usage_period, reserved, "limit", limit_reset, rate_limit)
      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, ${USD('$11')}, $12, ${USD('$13')}, $14, $15, $16) RETURNING *`,
    getKey: `SELECT * FROM ${s}.keys WHERE id = $1`,
    getKeyByHandle: `SELECT * FROM ${s}.keys WHERE handle = $1`,
    listKeys: `SELECT * FROM ${s}.keys WHERE account_id = $1 AND type = $2 AND id > $3 ORDER BY id LIMIT $4`,
    deleteKey: `DELETE FROM ${s}.keys WHERE id = $1`,
    touchKey: `UPDATE ${s}.keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)`,
    reserveSpend: `SELECT ${s}.reserve_spend($1, $2, ${USD('$3')}, $4) AS reason`,
    settleSpend: `SELECT ${s}.settle_spend($1, $2, ${USD('$3')}, ${USD('$4')}, $5, $6)`,
    hitCounter: `INSERT INTO ${s}.counters (name, window_start, count, reset_at) VALUES ($1, $2, $3, $4)
      ON CONFLICT (name, window_start) DO UPDATE SET count = counters.count + EXCLUDED.count
      RETURNING count`,
    sweepCounters: `DELETE FROM ${s}.counters WHERE ctid = ANY (ARRAY (
        SELECT ctid FROM ${s}.counters WHERE reset_at < $1 LIMIT $2))`,
  };
}
