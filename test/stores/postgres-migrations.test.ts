import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { type Migration, quoteIdentifier, runMigrations } from '../../src/store/postgres/migrations.js';
import { PostgresKeyStore } from '../../src/store/postgres/index.js';
import { sampleAccount } from '../../src/testing/index.js';
import { DATABASE_URL, dropSchema, postgresSkipReason, testSchema } from './postgres-env.js';

const TABLES = ['accounts', 'counters', 'holds', 'keys', 'ledger', 'ledger_references', 'migrations', 'usage_daily'];

describe.skipIf(!DATABASE_URL)(`PostgresKeyStore migrations${postgresSkipReason ? ` (${postgresSkipReason})` : ''}`, () => {
  const url = DATABASE_URL as string;
  const schemas: string[] = [];
  const pool = new pg.Pool({ connectionString: url, max: 4 });

  /** A fresh schema name, dropped after the file. */
  function freshSchema(): string {
    const schema = testSchema();
    schemas.push(schema);
    return schema;
  }

  async function tablesOf(schema: string): Promise<string[]> {
    const { rows } = await pool.query<{ table_name: string }>(
      'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name',
      [schema],
    );
    return rows.map((row) => row.table_name);
  }

  async function recordedSteps(schema: string): Promise<Array<{ version: number; name: string }>> {
    const { rows } = await pool.query(`SELECT version, name FROM ${quoteIdentifier(schema)}.migrations ORDER BY version`);
    return rows;
  }

  async function schemaExists(schema: string): Promise<boolean> {
    const { rowCount } = await pool.query('SELECT 1 FROM information_schema.schemata WHERE schema_name = $1', [schema]);
    return rowCount === 1;
  }

  afterAll(async () => {
    for (const schema of schemas) await dropSchema(url, schema);
    await pool.end();
  });

  it('creates nothing on construction; migrate() creates the schema and every table once, and again changes nothing', async () => {
    const schema = freshSchema();
    const store = new PostgresKeyStore({ connectionString: url, schema });
    try {
      expect(await schemaExists(schema)).toBe(false);
      const first = await store.migrate();
      expect(first).toEqual({ applied: [{ version: 1, name: expect.any(String) }], version: 1 });
      expect(await tablesOf(schema)).toEqual(TABLES);
      expect(await store.migrate()).toEqual({ applied: [], version: 1 });
      expect(await recordedSteps(schema)).toEqual(first.applied);
      // The tables work.
      const account = await store.createAccount(sampleAccount({ balance: 3 }));
      expect(await store.getAccount(account.id)).toEqual(account);
    } finally {
      // Closing twice (an app's shutdown path and a test's) ends the store's own pool once.
      await Promise.all([store.close(), store.close()]);
    }
  });

  it('eight stores migrating one fresh schema at once apply each step once (the others wait on the advisory lock)', async () => {
    const schema = freshSchema();
    const stores = Array.from({ length: 8 }, () => new PostgresKeyStore({ connectionString: url, schema }));
    try {
      const results = await Promise.all(stores.map((store) => store.migrate()));
      expect(results.filter((result) => result.applied.length === 1)).toHaveLength(1);
      expect(results.map((result) => result.version)).toEqual(Array.from({ length: 8 }, () => 1));
      expect(await recordedSteps(schema)).toHaveLength(1);
    } finally {
      await Promise.all(stores.map((store) => store.close()));
    }
  });

  it('keeps schemas apart: two stores in one database never see each other’s rows', async () => {
    const [one, two] = [freshSchema(), freshSchema()].map((schema) => new PostgresKeyStore({ connectionString: url, schema })) as [
      PostgresKeyStore,
      PostgresKeyStore,
    ];
    try {
      await Promise.all([one.migrate(), two.migrate()]);
      const account = await one.createAccount(sampleAccount({ balance: 1 }));
      expect(await one.getAccount(account.id)).toEqual(account);
      expect(await two.getAccount(account.id)).toBeNull();
      expect(await two.listLedger(account.id, { limit: 10 })).toEqual({ entries: [], hasMore: false });
    } finally {
      await Promise.all([one.close(), two.close()]);
    }
  });

  it('applies only the steps not recorded yet, in version order, and records each', async () => {
    const schema = freshSchema();
    const client = await pool.connect();
    const s = quoteIdentifier(schema);
    const one: Migration = { version: 1, name: 'one', sql: (q) => `CREATE TABLE ${q}.one (id int)` };
    const two: Migration = { version: 2, name: 'two', sql: (q) => `CREATE TABLE ${q}.two (id int)` };
    const three: Migration = { version: 3, name: 'three', sql: (q) => `ALTER TABLE ${q}.two ADD COLUMN name text` };
    try {
      expect(await runMigrations(client, schema, [one])).toEqual({ applied: [{ version: 1, name: 'one' }], version: 1 });
      expect(await runMigrations(client, schema, [three, one, two])).toEqual({
        applied: [
          { version: 2, name: 'two' },
          { version: 3, name: 'three' },
        ],
        version: 3,
      });
      expect(await recordedSteps(schema)).toEqual([
        { version: 1, name: 'one' },
        { version: 2, name: 'two' },
        { version: 3, name: 'three' },
      ]);
      await client.query(`INSERT INTO ${s}.two (id, name) VALUES (1, 'x')`);
    } finally {
      client.release();
    }
  });

  it('leaves the schema as it was when a step fails: all or nothing', async () => {
    const schema = freshSchema();
    const client = await pool.connect();
    const one: Migration = { version: 1, name: 'one', sql: (q) => `CREATE TABLE ${q}.one (id int)` };
    const broken: Migration = { version: 2, name: 'broken', sql: (q) => `CREATE TABLE ${q}.two (id int); SELECT 1 / 0` };
    try {
      await expect(runMigrations(client, schema, [one, broken])).rejects.toThrow(/division by zero/);
      expect(await schemaExists(schema)).toBe(false);
      await runMigrations(client, schema, [one]);
      await expect(runMigrations(client, schema, [one, broken])).rejects.toThrow(/division by zero/);
      expect(await tablesOf(schema)).toEqual(['migrations', 'one']);
      expect(await recordedSteps(schema)).toEqual([{ version: 1, name: 'one' }]);
      // The connection is usable again (the failed transaction was rolled back).
      expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
    } finally {
      client.release();
    }
  });

  it('leaves a schema that a newer version of the package migrated alone', async () => {
    const schema = freshSchema();
    const store = new PostgresKeyStore({ connectionString: url, schema });
    try {
      await store.migrate();
      await pool.query(`INSERT INTO ${quoteIdentifier(schema)}.migrations (version, name) VALUES (99, 'from the future')`);
      expect(await store.migrate()).toEqual({ applied: [], version: 99 });
    } finally {
      await store.close();
    }
  });

  it('works on a pool of the host’s own, which close() leaves open', async () => {
    const schema = freshSchema();
    const own = new pg.Pool({ connectionString: url, max: 2 });
    const store = new PostgresKeyStore({ pool: own, schema });
    try {
      expect((await store.migrate()).version).toBe(1);
      const account = await store.createAccount(sampleAccount({ balance: 2 }));
      expect(await store.getAccount(account.id)).toEqual(account);
      await store.close();
      await store.close();
      expect((await own.query('SELECT 1 AS still_open')).rows).toEqual([{ still_open: 1 }]);
    } finally {
      await own.end();
    }
  });
});
