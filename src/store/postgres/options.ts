import {
  DEFAULT_LEDGER_RETENTION_DAYS,
  DEFAULT_POSTGRES_CONNECTION_TIMEOUT_MS,
  DEFAULT_POSTGRES_MAX_CONNECTIONS,
  DEFAULT_POSTGRES_SCHEMA,
  DEFAULT_POSTGRES_STATEMENT_TIMEOUT_MS,
} from '../../defaults.js';
import { ConfigurationError } from '../../errors/configuration-error.js';
import { isRetentionDays } from '../spend-rules.js';

/**
 * How much longer than `statementTimeoutMs` the client waits for an answer before it gives up on the
 * connection. The server's timeout fires first, so a statement the client gave up on has been
 * cancelled, not committed behind its back; the client's own timeout only ends waits on a server
 * that stopped answering at all.
 */
export const POSTGRES_CLIENT_TIMEOUT_MARGIN_MS = 1000;
/** The largest timeout Node's timers take (2^31 − 1 ms, about 24.8 days). */
const MAX_TIMEOUT_MS = 2_147_483_647;

/**
 * The result of one statement, as `pg` answers it (the part the store reads).
 *
 * @example
 * ```ts
 * const { rows, rowCount }: PostgresQueryResult = await pool.query('SELECT 1 AS one');
 * ```
 */
export interface PostgresQueryResult {
  rows: unknown[];
  rowCount: number | null;
}

/**
 * A connection taken from a pool (`pg.PoolClient` is one), used by `migrate()` for its transaction.
 *
 * @example
 * ```ts
 * const client: PostgresPoolClient = await pool.connect();
 * try { await client.query('SELECT 1'); } finally { client.release(); }
 * ```
 */
export interface PostgresPoolClient {
  query(text: string, values?: unknown[]): Promise<PostgresQueryResult>;
  release(error?: Error | boolean): void;
}

/**
 * What the store needs of a connection pool: a `pg.Pool` is one. The store runs every operation
 * with `query` (one statement each), and `migrate()` takes one connection for its transaction.
 *
 * @example
 * ```ts
 * import pg from 'pg';
 * const pool: PostgresPool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
 * ```
 */
export interface PostgresPool {
  query(text: string, values?: unknown[]): Promise<PostgresQueryResult>;
  connect(): Promise<PostgresPoolClient>;
  end(): Promise<void>;
}

/**
 * Options of `PostgresKeyStore`. Give exactly one of `connectionString` (the store makes, tunes
 * and closes its own pool) or `pool` (yours: the store uses it as it is and never closes it);
 * every other field is optional (`undefined` means the default).
 *
 * @example
 * ```ts
 * const options: PostgresKeyStoreOptions = { connectionString: process.env.DATABASE_URL, schema: 'gateway_eu' };
 * const store = new PostgresKeyStore(options);
 * ```
 */
export interface PostgresKeyStoreOptions {
  /** `postgres://user:password@host:5432/database`: the store makes its own `pg.Pool`. Never logged or put in an error. */
  connectionString?: string;
  /**
   * A pool of your own (a `pg.Pool`), shared with the rest of your app. The store does not change
   * its settings or listen to its events: give it a `statement_timeout`, a `query_timeout` and a
   * `connectionTimeoutMillis` (see `statementTimeoutMs`) and an `'error'` listener yourself.
   */
  pool?: PostgresPool;
  /**
   * The schema of the store's tables: a lowercase SQL identifier (`[a-z_][a-z0-9_]*`, at most 63
   * characters, not starting with `pg_`), so several gateways or test runs can share one database.
   * `migrate()` creates it. Default `modelswitch`.
   */
  schema?: string;
  /** With `connectionString`: the most connections the store's pool opens. Default 10. */
  maxConnections?: number;
  /** With `connectionString`: how long an operation waits for a connection before it rejects. Default 5000 ms. */
  connectionTimeoutMs?: number;
  /**
   * With `connectionString`: the server cancels a statement (lock waits included) that runs
   * longer, and the client gives up on an answer 1 s after that (a server that stopped answering),
   * so an operation rejects instead of hanging. Default 5000 ms.
   */
  statementTimeoutMs?: number;
  /**
   * Days a ledger entry is kept: each write to an account's ledger trims a few of its entries
   * older than this, and `trimLedger` trims them all. Balances, keys, usage aggregates and the
   * idempotency of top-up references are kept for good. `Infinity` keeps every entry. Default 400.
   */
  ledgerRetentionDays?: number;
}

/** {@link PostgresKeyStoreOptions} after {@link resolvePostgresOptions}: checked, every default filled in. */
export interface ResolvedPostgresOptions {
  /** Where the pool comes from: the store's own (made from the connection string) or the caller's. */
  readonly connection: { readonly connectionString: string } | { readonly pool: PostgresPool };
  readonly schema: string;
  readonly maxConnections: number;
  readonly connectionTimeoutMs: number;
  readonly statementTimeoutMs: number;
  readonly ledgerRetentionDays: number;
}

/** What {@link resolvePostgresOptions} reads: every field of the options. */
const KNOWN_OPTIONS = new Set([
  'connectionString',
  'pool',
  'schema',
  'maxConnections',
  'connectionTimeoutMs',
  'statementTimeoutMs',
  'ledgerRetentionDays',
]);

/**
 * Checks `PostgresKeyStore`'s options once and fills in the defaults. Throws a ConfigurationError
 * (`ERR_MS_OPTION`) that says how to fix the first mistake; never echoes the connection string,
 * which may hold a password.
 *
 * @example
 * ```ts
 * resolvePostgresOptions({ connectionString: 'postgres://localhost/gateway' }).schema; // 'modelswitch'
 * ```
 */
export function resolvePostgresOptions(options: PostgresKeyStoreOptions): ResolvedPostgresOptions {
  if (typeof options !== 'object' || options === null) {
    throw optionError('pass options, e.g. new PostgresKeyStore({ connectionString: process.env.DATABASE_URL })');
  }
  for (const name of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(name)) throw optionError(`unknown option ${JSON.stringify(name).slice(0, 60)}`);
  }
  const { connectionString, pool } = options;
  if ((connectionString === undefined) === (pool === undefined)) {
    throw optionError('give exactly one of connectionString (the store makes its own pool) and pool (a pg.Pool of yours)');
  }
  let connection: ResolvedPostgresOptions['connection'];
  if (pool !== undefined) {
    if (typeof pool !== 'object' || pool === null || typeof pool.query !== 'function' || typeof pool.connect !== 'function') {
      throw optionError('pool must be a pg.Pool (an object with query() and connect())');
    }
    connection = { pool };
  } else {
    if (typeof connectionString !== 'string' || connectionString.trim() === '') {
      throw optionError('connectionString must be a non-empty string such as postgres://user@host:5432/database');
    }
    connection = { connectionString };
  }
  const schema = options.schema ?? DEFAULT_POSTGRES_SCHEMA;
  if (typeof schema !== 'string' || !/^[a-z_][a-z0-9_]{0,62}$/.test(schema) || schema.startsWith('pg_')) {
    throw optionError(
      'schema must be a lowercase SQL identifier: a letter or _, then letters, digits or _, at most 63 characters, not starting with pg_',
    );
  }
  const ledgerRetentionDays = options.ledgerRetentionDays ?? DEFAULT_LEDGER_RETENTION_DAYS;
  if (!isRetentionDays(ledgerRetentionDays))
    throw optionError('ledgerRetentionDays must be a positive number of days (Infinity keeps every entry)');
  return {
    connection,
    schema,
    maxConnections: positiveInteger(options.maxConnections, DEFAULT_POSTGRES_MAX_CONNECTIONS, 'maxConnections', 1000),
    connectionTimeoutMs: positiveInteger(
      options.connectionTimeoutMs,
      DEFAULT_POSTGRES_CONNECTION_TIMEOUT_MS,
      'connectionTimeoutMs',
      MAX_TIMEOUT_MS,
    ),
    statementTimeoutMs: positiveInteger(
      options.statementTimeoutMs,
      DEFAULT_POSTGRES_STATEMENT_TIMEOUT_MS,
      'statementTimeoutMs',
      MAX_TIMEOUT_MS - POSTGRES_CLIENT_TIMEOUT_MARGIN_MS,
    ),
    ledgerRetentionDays,
  };
}

function positiveInteger(value: unknown, fallback: number, name: string, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > max) {
    throw optionError(`${name} must be an integer from 1 to ${max}`);
  }
  return value;
}

function optionError(message: string): ConfigurationError {
  return new ConfigurationError('ERR_MS_OPTION', `PostgresKeyStore: ${message}`);
}
