/**
 * A custom KeyStore on PostgreSQL, written against the package's public `KeyStore` interface
 * only: the template for "bring your own store". It passes the same conformance suite as the
 * shipped stores (`test/stores/postgres-store.test.ts`), and several gateway processes can share
 * it: every atomic operation is one SQL statement or one transaction with row locks.
 *
 * ```ts
 * import pg from 'pg';
 * const store = new PostgresKeyStore(new pg.Pool({ connectionString: process.env.DATABASE_URL }));
 * await store.migrate();
 * app.use('/api', keysRouter(store));
 * app.use('/v1', modelSwitchAuth(store));
 * ```
 */
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type {
  AccountRecord,
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
  NewKeyRecord,
  ReservationResult,
  SpendReservation,
  SpendSettlement,
  UsageRow,
} from '../src/index.js';

/** Options of {@link PostgresKeyStore}. */
export interface PostgresKeyStoreOptions {
  /** The schema holding the tables (created by `migrate()`). Default `modelswitch`. */
  schema?: string;
}

interface KeyRow {
  id: string;
  handle: string;
  type: KeyRecord['type'];
  account_id: string;
  name: string;
  prefix: string;
  hash: string;
  active: boolean;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  usage: number;
  usage_period: string | null;
  reserved: number;
  limit: number | null;
  limit_reset: KeyRecord['limitReset'];
  rate_limit: KeyRecord['rateLimit'];
  models: KeyRecord['models'];
  previous_hash: string | null;
  previous_key_expires_at: string | null;
}

interface AccountRow {
  id: string;
  balance: number;
  reserved: number;
  is_free_tier: boolean;
  created_at: string;
}

/** Which column each changeable key field lives in. */
const CHANGE_COLUMNS = {
  name: 'name',
  active: 'active',
  expiresAt: 'expires_at',
  limit: '"limit"',
  limitReset: 'limit_reset',
  rateLimit: 'rate_limit',
  models: 'models',
} as const;

/** The answer of the members this example has no tables for yet (the ledger and hold deadlines). */
function notYet(): Promise<never> {
  return Promise.reject(new Error('not implemented in the PostgreSQL example yet'));
}

/** The start of a hold id here: the amount held and a random id follow (`amount:1.5:<uuid>`), carried to the settlement (no hold table yet). */
const HOLD_PREFIX = 'amount:';

/** The largest magnitude (USD) of a balance or amount this store accepts, as the shipped stores do. */
const MAX_USD = 1e12;

/**
 * Refuses (TypeError, nothing written) an amount that is not a finite number within the range:
 * NaN would pass every comparison, and a poisoned row would refuse or admit requests for good.
 */
function checkUsd(value: unknown, what: string, min: number): void {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > MAX_USD) {
    throw new TypeError(`PostgresKeyStore: ${what} must be a finite number between ${min} and ${MAX_USD}`);
  }
}

/**
 * Whether limit period `a` comes strictly before `b` under the same reset rule: periods of one rule
 * (`2026-11-22`, `2026-W47`, `2026-11`) have one length and sort as strings; others do not compare.
 */
function isEarlierPeriod(a: string | null, b: string | null): boolean {
  return a !== null && b !== null && a.length === b.length && a < b;
}

/**
 * Keys, accounts and rate-limit counters in three PostgreSQL tables.
 *
 * @example
 * ```ts
 * import pg from 'pg';
 * import { keyStoreSuite } from 'modelswitch-keys/testing';
 * const store = new PostgresKeyStore(new pg.Pool({ connectionString: process.env.DATABASE_URL }));
 * await store.migrate();
 * keyStoreSuite({ it, createStore: () => store, disposeStore: () => {} });
 * ```
 */
export class PostgresKeyStore implements KeyStore {
  private readonly schema: string;

  constructor(
    private readonly pool: pg.Pool,
    options: PostgresKeyStoreOptions = {},
  ) {
    this.schema = options.schema ?? 'modelswitch';
    // The schema name is spliced into SQL, so only plain identifiers are accepted.
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(this.schema)) throw new TypeError('PostgresKeyStore: schema must be a lowercase SQL identifier');
  }

  /** Creates the schema and tables if they do not exist. Run once at startup (or in your migrations). */
  async migrate(): Promise<void> {
    const s = this.schema;
    await this.pool.query(`
      CREATE SCHEMA IF NOT EXISTS ${s};
      CREATE TABLE IF NOT EXISTS ${s}.accounts (
        id text PRIMARY KEY,
        balance double precision NOT NULL,
        reserved double precision NOT NULL DEFAULT 0,
        is_free_tier boolean NOT NULL,
        created_at bigint NOT NULL
      );
      CREATE TABLE IF NOT EXISTS ${s}.keys (
        id bigserial PRIMARY KEY,
        handle text NOT NULL UNIQUE,
        type text NOT NULL,
        account_id text NOT NULL,
        name text NOT NULL,
        prefix text NOT NULL,
        hash text NOT NULL,
        active boolean NOT NULL,
        created_at bigint NOT NULL,
        expires_at bigint,
        last_used_at bigint,
        usage double precision NOT NULL,
        usage_period text,
        reserved double precision NOT NULL,
        "limit" double precision,
        limit_reset text,
        rate_limit jsonb,
        models jsonb,
        previous_hash text,
        previous_key_expires_at bigint
      );
      ALTER TABLE ${s}.keys ADD COLUMN IF NOT EXISTS models jsonb;
      ALTER TABLE ${s}.keys ADD COLUMN IF NOT EXISTS previous_hash text;
      ALTER TABLE ${s}.keys ADD COLUMN IF NOT EXISTS previous_key_expires_at bigint;
      -- Listing an account's keys reads this index only, never the whole table.
      CREATE INDEX IF NOT EXISTS keys_by_account ON ${s}.keys (account_id, type, id);
      CREATE TABLE IF NOT EXISTS ${s}.counters (
        name text NOT NULL,
        window_start bigint NOT NULL,
        count bigint NOT NULL,
        reset_at bigint NOT NULL,
        PRIMARY KEY (name, window_start)
      );`);
  }

  async createAccount(account: AccountRecord): Promise<AccountRecord> {
    checkUsd(account.balance, 'createAccount balance', -MAX_USD);
    if (account.reserved !== 0) throw new TypeError('PostgresKeyStore: createAccount reserved must be 0');
    // The primary key rejects a duplicate id.
    const { rows } = await this.pool.query<AccountRow>(
      `INSERT INTO ${this.schema}.accounts (id, balance, reserved, is_free_tier, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING *`,
      [account.id, account.balance, account.reserved, account.isFreeTier, account.createdAt],
    );
    return toAccount(rows[0] as AccountRow);
  }

  async getAccount(id: string): Promise<AccountRecord | null> {
    const { rows } = await this.pool.query<AccountRow>(`SELECT * FROM ${this.schema}.accounts WHERE id = $1`, [id]);
    return rows[0] ? toAccount(rows[0]) : null;
  }

  changeBalance(): Promise<BalanceChangeResult | null> {
    return notYet();
  }

  async insertKey(key: NewKeyRecord): Promise<KeyRecord> {
    // bigserial allocates ids atomically across connections; the UNIQUE handle rejects duplicates.
    const { rows } = await this.pool.query<KeyRow>(
      `INSERT INTO ${this.schema}.keys (handle, type, account_id, name, prefix, hash, active, created_at, expires_at, last_used_at,
         usage, usage_period, reserved, "limit", limit_reset, rate_limit, models, previous_hash, previous_key_expires_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) RETURNING *`,
      [
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
        key.rateLimit === null ? null : JSON.stringify(key.rateLimit),
        key.models === null ? null : JSON.stringify(key.models),
        key.previousHash,
        key.previousKeyExpiresAt,
      ],
    );
    return toKey(rows[0] as KeyRow);
  }

  async getKey(id: number): Promise<KeyRecord | null> {
    const { rows } = await this.pool.query<KeyRow>(`SELECT * FROM ${this.schema}.keys WHERE id = $1`, [id]);
    return rows[0] ? toKey(rows[0]) : null;
  }

  async getKeyByHandle(handle: string): Promise<KeyRecord | null> {
    const { rows } = await this.pool.query<KeyRow>(`SELECT * FROM ${this.schema}.keys WHERE handle = $1`, [handle]);
    return rows[0] ? toKey(rows[0]) : null;
  }

  async listKeys(accountId: string, page: KeyPageRequest): Promise<KeyPage> {
    // One row more than asked tells whether another page exists.
    const { rows } = await this.pool.query<KeyRow>(
      `SELECT * FROM ${this.schema}.keys WHERE account_id = $1 AND type = $2 AND id > $3 ORDER BY id LIMIT $4`,
      [accountId, page.type, page.after ?? 0, page.limit + 1],
    );
    return { keys: rows.slice(0, page.limit).map(toKey), hasMore: rows.length > page.limit };
  }

  async updateKey(id: number, changes: KeyChanges): Promise<KeyRecord | null> {
    const sets: string[] = [];
    const values: unknown[] = [id];
    for (const [field, column] of Object.entries(CHANGE_COLUMNS) as Array<[keyof KeyChanges, string]>) {
      const value = changes[field];
      if (value === undefined) continue;
      values.push((field === 'rateLimit' || field === 'models') && value !== null ? JSON.stringify(value) : value);
      sets.push(`${column} = $${values.length}`);
    }
    if (sets.length === 0) return this.getKey(id);
    const { rows } = await this.pool.query<KeyRow>(`UPDATE ${this.schema}.keys SET ${sets.join(', ')} WHERE id = $1 RETURNING *`, values);
    return rows[0] ? toKey(rows[0]) : null;
  }

  async deleteKey(id: number): Promise<boolean> {
    const { rowCount } = await this.pool.query(`DELETE FROM ${this.schema}.keys WHERE id = $1`, [id]);
    return rowCount === 1;
  }

  async touchKey(id: number, at: number): Promise<void> {
    await this.pool.query(
      `UPDATE ${this.schema}.keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)`,
      [id, at],
    );
  }

  async rotateKey(rotation: KeyRotation): Promise<KeyRecord | null> {
    const { id, hash, previousKeyExpiresAt, now } = rotation;
    if (typeof hash !== 'string' || hash === '') throw new TypeError('PostgresKeyStore: rotateKey hash must be a non-empty string');
    if (!Number.isFinite(now) || (previousKeyExpiresAt !== null && !Number.isFinite(previousKeyExpiresAt))) {
      throw new TypeError('PostgresKeyStore: rotateKey times must be finite');
    }
    const grace = previousKeyExpiresAt !== null && previousKeyExpiresAt > now;
    // One UPDATE: the SET expressions read the row as it was, so previous_hash gets the old hash.
    const { rows } = await this.pool.query<KeyRow>(
      `UPDATE ${this.schema}.keys SET previous_hash = CASE WHEN $3 THEN hash ELSE NULL END, hash = $2, previous_key_expires_at = $4
       WHERE id = $1 RETURNING *`,
      [id, hash, grace, grace ? previousKeyExpiresAt : null],
    );
    return rows[0] ? toKey(rows[0]) : null;
  }

  async reserveSpend(reservation: SpendReservation): Promise<ReservationResult> {
    checkUsd(reservation.amount, 'reserveSpend amount', 0);
    if (!Number.isFinite(reservation.now) || !Number.isFinite(reservation.expiresAt) || reservation.expiresAt <= reservation.now) {
      throw new TypeError('PostgresKeyStore: reserveSpend needs a finite now and an expiresAt after it');
    }
    return this.transaction(async (client) => {
      // Row locks, key first then account (as in settleSpend), serialize reservations on the same
      // key or account across every connection and process.
      const keyRows = await client.query<KeyRow>(`SELECT * FROM ${this.schema}.keys WHERE id = $1 FOR UPDATE`, [reservation.keyId]);
      const key = keyRows.rows[0];
      if (!key) return { ok: false, reason: 'key_not_found' } as const;
      const accountRows = await client.query<AccountRow>(`SELECT * FROM ${this.schema}.accounts WHERE id = $1 FOR UPDATE`, [
        reservation.accountId,
      ]);
      const account = accountRows.rows[0];
      if (!account) return { ok: false, reason: 'account_not_found' } as const;
      // A later period already stored (another instance's clock ran ahead) keeps its usage and counts it.
      const keep = key.usage_period === reservation.period || isEarlierPeriod(reservation.period, key.usage_period);
      const usage = keep ? key.usage : 0;
      if (key.limit !== null && (usage + key.reserved >= key.limit || usage + key.reserved + reservation.amount > key.limit + 1e-12)) {
        return { ok: false, reason: 'spend_limit_reached' } as const;
      }
      const available = account.balance - account.reserved;
      if (available <= 0 || available + 1e-12 < reservation.amount) return { ok: false, reason: 'insufficient_balance' } as const;
      await client.query(
        `UPDATE ${this.schema}.keys SET usage = $2, usage_period = $3, reserved = round((reserved + $4)::numeric, 10)::double precision WHERE id = $1`,
        [key.id, usage, keep ? key.usage_period : reservation.period, reservation.amount],
      );
      await client.query(
        `UPDATE ${this.schema}.accounts SET reserved = round((reserved + $2)::numeric, 10)::double precision WHERE id = $1`,
        [account.id, reservation.amount],
      );
      return { ok: true, holdId: `${HOLD_PREFIX}${reservation.amount}:${randomUUID()}` } as const;
    });
  }

  async settleSpend(settlement: SpendSettlement): Promise<LedgerEntry | null> {
    const { keyId, accountId, holdId, cost, period, now } = settlement;
    if (holdId !== null && typeof holdId !== 'string') throw new TypeError('PostgresKeyStore: settleSpend holdId must be a string or null');
    const reserved = holdId?.startsWith(HOLD_PREFIX) ? Number(holdId.slice(HOLD_PREFIX.length).split(':')[0]) : 0;
    checkUsd(reserved, 'settleSpend reserved', 0);
    checkUsd(cost, 'settleSpend cost', 0);
    if (!Number.isFinite(now)) throw new TypeError('PostgresKeyStore: settleSpend now must be a finite number');
    // The stored period is "earlier" than the settlement's when both are set, have the same length
    // (same reset rule) and sort before it byte by byte (COLLATE "C"). When the stored period is
    // later (or another rule's), newer requests own its usage: only the reservation is released.
    const earlier = `(usage_period IS NOT NULL AND $4::text IS NOT NULL AND length(usage_period) = length($4::text)
      AND usage_period COLLATE "C" < $4::text COLLATE "C")`;
    await this.transaction(async (client) => {
      // Each UPDATE is atomic on its row; the transaction makes key and account change together.
      // Every SET expression reads the row as it was before this UPDATE.
      await client.query(
        `UPDATE ${this.schema}.keys SET
           reserved = greatest(0, round((reserved - $2)::numeric, 10))::double precision,
           usage = CASE
             WHEN usage_period IS NOT DISTINCT FROM $4::text THEN round((usage + $3)::numeric, 10)::double precision
             WHEN ${earlier} THEN round(($3)::numeric, 10)::double precision
             ELSE usage END,
           usage_period = CASE WHEN ${earlier} THEN $4::text ELSE usage_period END,
           last_used_at = greatest(coalesce(last_used_at, 0), $5)
         WHERE id = $1`,
        [keyId, reserved, cost, period, now],
      );
      await client.query(
        `UPDATE ${this.schema}.accounts SET
           reserved = greatest(0, round((reserved - $2)::numeric, 10))::double precision,
           balance = round((balance - $3)::numeric, 10)::double precision
         WHERE id = $1`,
        [accountId, reserved, cost],
      );
    });
    return null;
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

  async hitCounter(name: string, windowMs: number, now: number, amount = 1): Promise<CounterState> {
    if (!Number.isFinite(amount) || amount < 0) throw new TypeError('PostgresKeyStore: hitCounter amount must be a finite number ≥ 0');
    if (!Number.isFinite(windowMs) || windowMs <= 0 || !Number.isFinite(now)) {
      throw new TypeError('PostgresKeyStore: hitCounter windowMs must be > 0 and now finite');
    }
    const windowStart = now - (now % windowMs);
    const resetAt = windowStart + windowMs;
    // An upsert is one atomic statement: concurrent hits never read the same old count.
    const { rows } = await this.pool.query<{ count: string }>(
      `INSERT INTO ${this.schema}.counters (name, window_start, count, reset_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (name, window_start) DO UPDATE SET count = ${this.schema}.counters.count + EXCLUDED.count
       RETURNING count`,
      [name, windowStart, amount, resetAt],
    );
    return { count: Number(rows[0]?.count), resetAt };
  }

  /**
   * Deletes counters whose window ended before `before` (epoch ms). Run it now and then (e.g. hourly);
   * the gateway never needs old windows.
   */
  async deleteExpiredCounters(before: number): Promise<number> {
    const { rowCount } = await this.pool.query(`DELETE FROM ${this.schema}.counters WHERE reset_at < $1`, [before]);
    return rowCount ?? 0;
  }

  /** Closes the pool. */
  async close(): Promise<void> {
    await this.pool.end();
  }

  private async transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      throw error;
    } finally {
      client.release();
    }
  }
}

function toAccount(row: AccountRow): AccountRecord {
  return { id: row.id, balance: row.balance, reserved: row.reserved, isFreeTier: row.is_free_tier, createdAt: Number(row.created_at) };
}

/** pg returns bigint columns as strings (they may exceed 2^53); ours are ids and epoch ms, which fit. */
function nullableNumber(value: string | null): number | null {
  return value === null ? null : Number(value);
}

function toKey(row: KeyRow): KeyRecord {
  return {
    id: Number(row.id),
    handle: row.handle,
    type: row.type,
    accountId: row.account_id,
    name: row.name,
    prefix: row.prefix,
    hash: row.hash,
    active: row.active,
    createdAt: Number(row.created_at),
    expiresAt: nullableNumber(row.expires_at),
    lastUsedAt: nullableNumber(row.last_used_at),
    usage: row.usage,
    usagePeriod: row.usage_period,
    reserved: row.reserved,
    limit: row.limit,
    limitReset: row.limit_reset,
    rateLimit: row.rate_limit,
    models: row.models,
    previousHash: row.previous_hash,
    previousKeyExpiresAt: nullableNumber(row.previous_key_expires_at),
  };
}
