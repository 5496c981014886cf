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

/**
 * What `migrate()` did: the steps it applied now (none when the schema was up to date) and the
 * schema's version after it.
 *
 * @example
 * ```ts
 * const result: PostgresMigrationResult = await store.migrate();
 * // { applied: [{ version: 1, name: 'accounts, keys, …' }], version: 1 } the first time, then { applied: [], version: 1 }
 * ```
 */
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
    name: 'accounts, keys, rate-limit counters, spend holds, ledger, usage aggregates',
    sql: (s) => `
      CREATE TABLE ${s}.accounts (
        id text PRIMARY KEY,
        balance numeric NOT NULL,
        reserved numeric NOT NULL,
        is_free_tier boolean NOT NULL,
        created_at double precision NOT NULL
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
        previous_hash text,
        previous_key_expires_at double precision,
        active boolean NOT NULL,
        created_at double precision NOT NULL,
        expires_at double precision,
        last_used_at double precision,
        usage numeric NOT NULL,
        usage_period text,
        reserved numeric NOT NULL,
        "limit" numeric,
        limit_reset text,
        rate_limit jsonb,
        models jsonb
      );
      -- listKeys reads one account's keys of one type in id order from this index.
      CREATE INDEX keys_by_account ON ${s}.keys (account_id, type, id);

      -- One row per counter and window. Unlogged: no WAL for the busiest write of the hot path; a
      -- crash of the server empties it, which restarts the rate-limit windows (nothing else is lost).
      CREATE UNLOGGED TABLE ${s}.counters (
        name text NOT NULL,
        window_start double precision NOT NULL,
        count double precision NOT NULL,
        reset_at double precision NOT NULL,
        PRIMARY KEY (name, window_start)
      );
      -- The sweep of ended windows finds them here.
      CREATE INDEX counters_by_reset ON ${s}.counters (reset_at);

      -- Spend held by requests in flight, until settled or released past its deadline.
      CREATE TABLE ${s}.holds (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key_id bigint NOT NULL,
        account_id text NOT NULL,
        amount numeric NOT NULL,
        expires_at double precision NOT NULL
      );
      -- A reservation releases its account's expired holds; the sweeper finds any account's.
      CREATE INDEX holds_by_account ON ${s}.holds (account_id, expires_at);
      CREATE INDEX holds_by_deadline ON ${s}.holds (expires_at);

      -- Every change of a balance. The primary key is the per-account index: listing and trimming
      -- read one account's entries in id order and never another account's.
      CREATE TABLE ${s}.ledger (
        id bigint GENERATED ALWAYS AS IDENTITY,
        account_id text NOT NULL,
        type text NOT NULL,
        amount numeric NOT NULL,
        balance_after numeric NOT NULL,
        key_id bigint,
        model text,
        prompt_tokens bigint,
        completion_tokens bigint,
        request_id text,
        upstream_id text,
        reference text,
        note text,
        created_at double precision NOT NULL,
        PRIMARY KEY (account_id, id)
      );
      -- findUsageEntry and the idempotency of settlements: a request is written once per account.
      CREATE UNIQUE INDEX ledger_by_request ON ${s}.ledger (account_id, request_id) WHERE request_id IS NOT NULL;
      CREATE INDEX ledger_by_upstream ON ${s}.ledger (account_id, upstream_id) WHERE upstream_id IS NOT NULL;

      -- The references of credits and adjustments with their entry, kept when retention trims the
      -- entry: a payment delivered again a year later still pays nothing.
      CREATE TABLE ${s}.ledger_references (
        account_id text NOT NULL,
        reference text NOT NULL,
        entry_id bigint NOT NULL,
        type text NOT NULL,
        amount numeric NOT NULL,
        balance_after numeric NOT NULL,
        note text,
        created_at double precision NOT NULL,
        PRIMARY KEY (account_id, reference)
      );

      -- Usage counters per UTC day x key x model, written with each usage entry, never trimmed.
      CREATE TABLE ${s}.usage_daily (
        account_id text NOT NULL,
        day text COLLATE "C" NOT NULL,
        key_id bigint NOT NULL,
        model text NOT NULL,
        requests bigint NOT NULL,
        prompt_tokens bigint NOT NULL,
        completion_tokens bigint NOT NULL,
        cost numeric NOT NULL,
        PRIMARY KEY (account_id, day, key_id, model)
      );

      -- Whether limit period a comes strictly before b under the same reset rule: periods of one rule
      -- have one length and sort as strings byte by byte ('2026-11-21' < '2026-11-22').
      CREATE FUNCTION ${s}.is_earlier_period(a text, b text) RETURNS boolean
      LANGUAGE sql IMMUTABLE AS $$
        SELECT a IS NOT NULL AND b IS NOT NULL AND length(a) = length(b) AND a COLLATE "C" < b COLLATE "C"
      $$;

      /*
       * Locking, in every function below: first the rows of the accounts involved, in id order (one
       * SELECT ... ORDER BY id FOR UPDATE), then keys and holds, which belong to those accounts.
       * Account locks are always taken in ascending order, and a key or hold row is only ever
       * locked by a function that holds its account's lock (or by a one-row UPDATE that waits for
       * nothing else), so two calls never wait for each other in a circle: no deadlock. (A caller
       * that names keys with accounts they do not belong to, as the proxy never does, can break the
       * second half; PostgreSQL then detects the deadlock and fails one of the calls.)
       */

      -- Releases the holds among p_ids whose deadline is p_now or earlier, exactly once (a hold
      -- deleted, extended or released meanwhile is skipped), and answers how many. The caller holds
      -- the locks of the holds' accounts.
      CREATE FUNCTION ${s}.release_holds(p_ids bigint[], p_now double precision) RETURNS integer
      LANGUAGE plpgsql AS $$
      DECLARE
        released integer;
      BEGIN
        WITH gone AS (
          DELETE FROM ${s}.holds WHERE id = ANY (p_ids) AND expires_at <= p_now RETURNING key_id, account_id, amount
        ), by_key AS (
          UPDATE ${s}.keys k SET reserved = greatest(0, k.reserved - g.amount)
          FROM (SELECT key_id, sum(amount) AS amount FROM gone GROUP BY key_id) g WHERE k.id = g.key_id
        ), by_account AS (
          UPDATE ${s}.accounts a SET reserved = greatest(0, a.reserved - g.amount)
          FROM (SELECT account_id, sum(amount) AS amount FROM gone GROUP BY account_id) g WHERE a.id = g.account_id
        )
        SELECT count(*) INTO released FROM gone;
        RETURN released;
      END
      $$;

      -- Removes the oldest run of an account's entries (in id order) created before p_before, at
      -- most p_limit of them, and answers how many: the kept entries stay one unbroken run.
      CREATE FUNCTION ${s}.trim_account_ledger(p_account_id text, p_before double precision, p_limit integer) RETURNS integer
      LANGUAGE plpgsql AS $$
      DECLARE
        oldest double precision;
        trimmed integer;
      BEGIN
        -- One index probe when there is nothing to trim, as on most writes.
        SELECT created_at INTO oldest FROM ${s}.ledger WHERE account_id = p_account_id ORDER BY id LIMIT 1;
        IF oldest IS NULL OR oldest >= p_before THEN
          RETURN 0;
        END IF;
        DELETE FROM ${s}.ledger l USING (
          SELECT id, bool_and(created_at < p_before) OVER (ORDER BY id) AS in_old_run
          FROM (SELECT id, created_at FROM ${s}.ledger WHERE account_id = p_account_id ORDER BY id LIMIT p_limit) head
        ) o
        WHERE l.account_id = p_account_id AND l.id = o.id AND o.in_old_run;
        GET DIAGNOSTICS trimmed = ROW_COUNT;
        RETURN trimmed;
      END
      $$;

      CREATE FUNCTION ${s}.reserve_spend(
        p_key_id bigint, p_account_id text, p_amount numeric, p_period text, p_now double precision, p_expires_at double precision
      ) RETURNS TABLE (reason text, hold_id bigint)
      LANGUAGE plpgsql AS $$
      DECLARE
        key_account text;
        a ${s}.accounts;
        k ${s}.keys;
        keep boolean;
        used numeric;
        available numeric;
      BEGIN
        SELECT account_id INTO key_account FROM ${s}.keys WHERE id = p_key_id;
        PERFORM FROM ${s}.accounts WHERE id IN (p_account_id, key_account) ORDER BY id FOR UPDATE;
        -- First the expired holds of both accounts (one, as a rule): a dead gateway's hold pins nothing.
        PERFORM ${s}.release_holds(ARRAY (
          SELECT id FROM ${s}.holds WHERE account_id IN (p_account_id, key_account) AND expires_at <= p_now
        ), p_now);
        SELECT * INTO k FROM ${s}.keys WHERE id = p_key_id FOR UPDATE;
        IF NOT FOUND THEN
          RETURN QUERY SELECT 'key_not_found'::text, NULL::bigint;
          RETURN;
        END IF;
        SELECT * INTO a FROM ${s}.accounts WHERE id = p_account_id;
        IF NOT FOUND THEN
          RETURN QUERY SELECT 'account_not_found'::text, NULL::bigint;
          RETURN;
        END IF;
        -- A later period already stored (another instance's clock ran ahead) keeps its usage and counts it.
        keep := k.usage_period IS NOT DISTINCT FROM p_period OR ${s}.is_earlier_period(p_period, k.usage_period);
        used := CASE WHEN keep THEN k.usage ELSE 0 END;
        -- At the limit already (usage >= limit), even a request that reserves nothing is refused.
        IF k."limit" IS NOT NULL AND (used + k.reserved >= k."limit" OR used + k.reserved + p_amount > k."limit" + 1e-12) THEN
          RETURN QUERY SELECT 'spend_limit_reached'::text, NULL::bigint;
          RETURN;
        END IF;
        available := a.balance - a.reserved;
        IF available <= 0 OR available + 1e-12 < p_amount THEN
          RETURN QUERY SELECT 'insufficient_balance'::text, NULL::bigint;
          RETURN;
        END IF;
        UPDATE ${s}.keys SET usage = used, usage_period = CASE WHEN keep THEN usage_period ELSE p_period END,
          reserved = reserved + p_amount
        WHERE id = k.id;
        UPDATE ${s}.accounts SET reserved = reserved + p_amount WHERE id = a.id;
        RETURN QUERY INSERT INTO ${s}.holds (key_id, account_id, amount, expires_at)
          VALUES (k.id, a.id, p_amount, p_expires_at) RETURNING NULL::text, id;
      END
      $$;

      CREATE FUNCTION ${s}.settle_spend(
        p_key_id bigint, p_account_id text, p_hold_id bigint, p_cost numeric, p_period text, p_now double precision,
        p_write_entry boolean, p_model text, p_prompt_tokens bigint, p_completion_tokens bigint, p_request_id text,
        p_upstream_id text, p_day text, p_aggregate_model text, p_trim_before double precision, p_trim_limit integer
      ) RETURNS SETOF ${s}.ledger
      LANGUAGE plpgsql AS $$
      DECLARE
        key_account text;
        held ${s}.holds;
        new_balance numeric;
        written ${s}.ledger;
      BEGIN
        SELECT account_id INTO key_account FROM ${s}.keys WHERE id = p_key_id;
        PERFORM FROM ${s}.accounts WHERE id IN (p_account_id, key_account) ORDER BY id FOR UPDATE;
        -- A retry of a settlement already written (its first answer was lost) changes nothing.
        IF p_request_id IS NOT NULL THEN
          RETURN QUERY SELECT * FROM ${s}.ledger WHERE account_id = p_account_id AND request_id = p_request_id;
          IF FOUND THEN
            RETURN;
          END IF;
        END IF;
        -- A hold released before (expired, or settled already) is gone: it is not released again.
        -- Only the settling key's own hold in this account is released, never another's.
        DELETE FROM ${s}.holds WHERE id = p_hold_id AND key_id = p_key_id AND account_id = p_account_id RETURNING * INTO held;
        IF FOUND THEN
          UPDATE ${s}.keys SET reserved = greatest(0, reserved - held.amount) WHERE id = p_key_id;
          UPDATE ${s}.accounts SET reserved = greatest(0, reserved - held.amount) WHERE id = p_account_id;
        END IF;
        -- Every SET expression reads the row as it was before this UPDATE. A later period stored (or
        -- another reset rule's) belongs to newer requests: its usage stays.
        UPDATE ${s}.keys SET
          usage = CASE
            WHEN usage_period IS NOT DISTINCT FROM p_period THEN usage + p_cost
            WHEN ${s}.is_earlier_period(usage_period, p_period) THEN p_cost
            ELSE usage END,
          usage_period = CASE WHEN ${s}.is_earlier_period(usage_period, p_period) THEN p_period ELSE usage_period END,
          last_used_at = greatest(coalesce(last_used_at, 0), p_now)
        WHERE id = p_key_id;
        UPDATE ${s}.accounts SET balance = balance - p_cost WHERE id = p_account_id RETURNING balance INTO new_balance;
        IF NOT FOUND OR NOT p_write_entry THEN
          RETURN;
        END IF;
        INSERT INTO ${s}.ledger (account_id, type, amount, balance_after, key_id, model, prompt_tokens, completion_tokens,
          request_id, upstream_id, created_at)
        VALUES (p_account_id, 'usage', -p_cost, new_balance, p_key_id, p_model, p_prompt_tokens, p_completion_tokens,
          p_request_id, p_upstream_id, p_now)
        RETURNING * INTO written;
        INSERT INTO ${s}.usage_daily AS u (account_id, day, key_id, model, requests, prompt_tokens, completion_tokens, cost)
        VALUES (p_account_id, p_day, p_key_id, p_aggregate_model, 1, coalesce(p_prompt_tokens, 0), coalesce(p_completion_tokens, 0), p_cost)
        ON CONFLICT (account_id, day, key_id, model) DO UPDATE SET
          requests = u.requests + 1,
          prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
          completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
          cost = u.cost + EXCLUDED.cost;
        PERFORM ${s}.trim_account_ledger(p_account_id, p_trim_before, p_trim_limit);
        RETURN NEXT written;
      END
      $$;

      -- No row: no such account. A reference already in the account's ledger answers its first
      -- entry (from the reference index, which outlives the entry) and changes nothing.
      CREATE FUNCTION ${s}.change_balance(
        p_account_id text, p_type text, p_amount numeric, p_reference text, p_note text, p_now double precision,
        p_max_usd numeric, p_trim_before double precision, p_trim_limit integer
      ) RETURNS TABLE (applied boolean, account jsonb, entry jsonb)
      LANGUAGE plpgsql AS $$
      DECLARE
        a ${s}.accounts;
        known ${s}.ledger_references;
        written ${s}.ledger;
      BEGIN
        SELECT * INTO a FROM ${s}.accounts WHERE id = p_account_id FOR UPDATE;
        IF NOT FOUND THEN
          RETURN;
        END IF;
        SELECT * INTO known FROM ${s}.ledger_references WHERE account_id = p_account_id AND reference = p_reference;
        IF FOUND THEN
          RETURN QUERY SELECT false, to_jsonb(a), jsonb_build_object(
            'id', known.entry_id, 'account_id', known.account_id, 'type', known.type, 'amount', known.amount,
            'balance_after', known.balance_after, 'key_id', NULL, 'model', NULL, 'prompt_tokens', NULL,
            'completion_tokens', NULL, 'request_id', NULL, 'upstream_id', NULL, 'reference', known.reference,
            'note', known.note, 'created_at', known.created_at);
          RETURN;
        END IF;
        IF abs(a.balance + p_amount) > p_max_usd THEN
          RAISE EXCEPTION USING ERRCODE = 'MSK01',
            MESSAGE = format('changeBalance: the balance would leave the range -%s..%s USD', p_max_usd, p_max_usd);
        END IF;
        UPDATE ${s}.accounts SET balance = balance + p_amount WHERE id = p_account_id RETURNING * INTO a;
        INSERT INTO ${s}.ledger (account_id, type, amount, balance_after, reference, note, created_at)
        VALUES (p_account_id, p_type, p_amount, a.balance, p_reference, p_note, p_now)
        RETURNING * INTO written;
        INSERT INTO ${s}.ledger_references (account_id, reference, entry_id, type, amount, balance_after, note, created_at)
        VALUES (p_account_id, p_reference, written.id, p_type, p_amount, a.balance, p_note, p_now);
        PERFORM ${s}.trim_account_ledger(p_account_id, p_trim_before, p_trim_limit);
        RETURN QUERY SELECT true, to_jsonb(a), to_jsonb(written);
      END
      $$;

      -- Releases up to p_limit holds of any account past their deadline, each exactly once, and
      -- answers how many. The accounts of the whole batch are locked first, in id order.
      CREATE FUNCTION ${s}.release_expired_holds(p_now double precision, p_limit integer) RETURNS integer
      LANGUAGE plpgsql AS $$
      DECLARE
        due bigint[];
      BEGIN
        SELECT coalesce(array_agg(id), '{}') INTO due
        FROM (SELECT id FROM ${s}.holds WHERE expires_at <= p_now ORDER BY expires_at LIMIT p_limit) oldest;
        PERFORM FROM ${s}.accounts WHERE id IN (
          SELECT h.account_id FROM ${s}.holds h WHERE h.id = ANY (due)
          UNION SELECT k.account_id FROM ${s}.holds h JOIN ${s}.keys k ON k.id = h.key_id WHERE h.id = ANY (due)
        ) ORDER BY id FOR UPDATE;
        RETURN ${s}.release_holds(due, p_now);
      END
      $$;

      -- Retention for every account, in batches: from account p_from (inclusive, NULL: the first) on,
      -- at most p_accounts accounts and p_rows entries. Answers how many entries went, and the account
      -- to go on from (NULL when every account is done).
      CREATE FUNCTION ${s}.trim_ledger(p_before double precision, p_from text, p_accounts integer, p_rows integer)
      RETURNS TABLE (trimmed bigint, next_account text)
      LANGUAGE plpgsql AS $$
      DECLARE
        account text;
        visited integer := 0;
        budget integer := p_rows;
      BEGIN
        FOR account IN SELECT id FROM ${s}.accounts WHERE p_from IS NULL OR id >= p_from ORDER BY id LIMIT p_accounts + 1 LOOP
          visited := visited + 1;
          IF visited > p_accounts THEN
            RETURN QUERY SELECT (p_rows - budget)::bigint, account;
            RETURN;
          END IF;
          budget := budget - ${s}.trim_account_ledger(account, p_before, budget);
          -- Out of budget: this account may have more, so the next call starts with it again.
          IF budget <= 0 THEN
            RETURN QUERY SELECT (p_rows - budget)::bigint, account;
            RETURN;
          END IF;
        END LOOP;
        RETURN QUERY SELECT (p_rows - budget)::bigint, NULL::text;
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
 *
 * @example
 * ```ts
 * const client = await pool.connect();
 * try { await runMigrations(client, 'modelswitch'); } finally { client.release(); }
 * ```
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

/**
 * `"name"`: a checked identifier (lowercase letters, digits, `_`), quoted so that reserved words
 * such as `user` work too.
 *
 * @example
 * ```ts
 * `SELECT * FROM ${quoteIdentifier('user')}.accounts`; // SELECT * FROM "user".accounts
 * ```
 */
export function quoteIdentifier(name: string): string {
  return `"${name}"`;
}
