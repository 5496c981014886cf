import type { PostgresPoolClient } from './options.js';

/**
 * One step of the store's schema. `sql` builds the step's statements for a schema name that is
 * already checked and quoted (`"modelswitch"`). A released step is never changed: a new need is a
 * new step with the next version.
 */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: (schema: string) => string;
}

/** What `migrate()` did: the steps it applied now (none when the schema was up to date) and the schema's version after it. */
export interface PostgresMigrationResult {
  applied: Array<{ version: number; name: string }>;
  version: number;
}

/** The table that records which steps ran, inside the store's schema. */
const MIGRATIONS_TABLE = 'migrations';

/**
 * The first half of the advisory lock's key (the second is the schema's name): `migrate()` calls
 * for the same schema wait for each other, other schemas and other applications' locks are left alone.
 */
const LOCK_NAMESPACE = 'modelswitch-keys migrate';

/**
 * The store's schema, step by step.
 *
 * Money is `numeric` (exact decimal sums: a balance replays from its ledger to the last digit),
 * rounded to 10 decimals as every store rounds USD. Times are epoch milliseconds in `bigint`.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'accounts, keys, rate-limit counters',
    sql: (s) => `
      CREATE TABLE ${s}.accounts (
        id text PRIMARY KEY,
        balance numeric NOT NULL,
        reserved numeric NOT NULL,
        is_free_tier boolean NOT NULL,
        created_at bigint NOT NULL
      );
      CREATE TABLE ${s}.keys (
        -- An identity never hands out a value twice, even to inserts that roll back, across every connection.
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
        usage numeric NOT NULL,
        usage_period text,
        reserved numeric NOT NULL,
        "limit" numeric,
        limit_reset text,
        rate_limit jsonb
      );
      -- listKeys reads one account's keys of one type in id order from this index, never the table.
      CREATE INDEX keys_by_account ON ${s}.keys (account_id, type, id);
      -- One row per counter and window. Unlogged: no WAL for the busiest write of the hot path; a
      -- crash of the server empties it, which restarts the rate-limit windows (nothing else is lost).
      CREATE UNLOGGED TABLE ${s}.counters (
        name text NOT NULL,
        window_start bigint NOT NULL,
        count double precision NOT NULL,
        reset_at bigint NOT NULL,
        PRIMARY KEY (name, window_start)
      );
      -- The sweep of ended windows finds them here.
      CREATE INDEX counters_by_reset ON ${s}.counters (reset_at);

      -- Whether limit period a comes strictly before b under the same reset rule: periods of one rule
      -- have one length and sort as strings byte by byte ('2026-11-21' < '2026-11-22').
      CREATE FUNCTION ${s}.is_earlier_period(a text, b text) RETURNS boolean
      LANGUAGE sql IMMUTABLE AS $$
        SELECT a IS NOT NULL AND b IS NOT NULL AND length(a) = length(b) AND a COLLATE "C" < b COLLATE "C"
      $$;

      -- Every function that changes an account and a key locks the account's row first, then the
      -- key's: one order everywhere, so two of them never wait for each other (no deadlock).
      CREATE FUNCTION ${s}.reserve_spend(p_key_id bigint, p_account_id text, p_amount numeric, p_period text) RETURNS text
      LANGUAGE plpgsql AS $$
      DECLARE
        a ${s}.accounts;
        k ${s}.keys;
        keep boolean;
        used numeric;
        available numeric;
      BEGIN
        SELECT * INTO a FROM ${s}.accounts WHERE id = p_account_id FOR UPDATE;
        SELECT * INTO k FROM ${s}.keys WHERE id = p_key_id FOR UPDATE;
        IF k.id IS NULL THEN RETURN 'key_not_found'; END IF;
        IF a.id IS NULL THEN RETURN 'account_not_found'; END IF;
        -- A later period already stored (another instance's clock ran ahead) keeps its usage and counts it.
        keep := k.usage_period IS NOT DISTINCT FROM p_period OR ${s}.is_earlier_period(p_period, k.usage_period);
        used := CASE WHEN keep THEN k.usage ELSE 0 END;
        IF k."limit" IS NOT NULL AND (used + k.reserved >= k."limit" OR used + k.reserved + p_amount > k."limit" + 1e-12) THEN
          RETURN 'spend_limit_reached';
        END IF;
        available := a.balance - a.reserved;
        IF available <= 0 OR available + 1e-12 < p_amount THEN RETURN 'insufficient_balance'; END IF;
        UPDATE ${s}.keys SET usage = used, usage_period = CASE WHEN keep THEN usage_period ELSE p_period END,
          reserved = reserved + p_amount WHERE id = k.id;
        UPDATE ${s}.accounts SET reserved = reserved + p_amount WHERE id = a.id;
        RETURN NULL;
      END
      $$;

      CREATE FUNCTION ${s}.settle_spend(p_key_id bigint, p_account_id text, p_reserved numeric, p_cost numeric, p_period text, p_now bigint)
      RETURNS void LANGUAGE plpgsql AS $$
      BEGIN
        UPDATE ${s}.accounts SET reserved = greatest(0, reserved - p_reserved), balance = balance - p_cost WHERE id = p_account_id;
        -- Every SET expression reads the row as it was before this UPDATE.
        UPDATE ${s}.keys SET
          reserved = greatest(0, reserved - p_reserved),
          usage = CASE
            WHEN usage_period IS NOT DISTINCT FROM p_period THEN usage + p_cost
            WHEN ${s}.is_earlier_period(usage_period, p_period) THEN p_cost
            ELSE usage END,
          usage_period = CASE WHEN ${s}.is_earlier_period(usage_period, p_period) THEN p_period ELSE usage_period END,
          last_used_at = greatest(coalesce(last_used_at, 0), p_now)
        WHERE id = p_key_id;
      END
      $$;`,
  },
];

/**
 * Brings `schema` up to the newest of `migrations` on `client`, in one transaction under an
 * advisory lock: two processes migrating at once run each step once (the second waits, then finds
 * nothing to do), and a step that fails leaves the schema as it was. Steps already recorded are
 * skipped, so running it again changes nothing. A schema newer than `migrations` (a newer version
 * of the package migrated it) is left alone.
 */
export async function runMigrations(
  client: Pick<PostgresPoolClient, 'query'>,
  schema: string,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<PostgresMigrationResult> {
  const s = quoteIdentifier(schema);
  await client.query('BEGIN');
  try {
    // A large table may take a while to change: no statement timeout inside the migration.
    await client.query('SET LOCAL statement_timeout = 0');
    await client.query('SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))', [LOCK_NAMESPACE, schema]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${s}.${MIGRATIONS_TABLE} (
         version integer PRIMARY KEY,
         name text NOT NULL,
         applied_at timestamptz NOT NULL DEFAULT now()
       )`,
    );
    const { rows } = await client.query(`SELECT coalesce(max(version), 0) AS version FROM ${s}.${MIGRATIONS_TABLE}`);
    const current = Number((rows[0] as { version: number | string }).version);
    const applied: PostgresMigrationResult['applied'] = [];
    for (const migration of [...migrations].sort((a, b) => a.version - b.version)) {
      if (migration.version <= current) continue;
      await client.query(migration.sql(s));
      await client.query(`INSERT INTO ${s}.${MIGRATIONS_TABLE} (version, name) VALUES ($1, $2)`, [migration.version, migration.name]);
      applied.push({ version: migration.version, name: migration.name });
    }
    await client.query('COMMIT');
    return { applied, version: Math.max(current, ...applied.map((step) => step.version)) };
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  }
}

/** `"name"`: a checked identifier (lowercase letters, digits, `_`), quoted so that reserved words such as `user` work too. */
export function quoteIdentifier(name: string): string {
  return `"${name}"`;
}
