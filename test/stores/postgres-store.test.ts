import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { PostgresKeyStore } from '../../examples/postgres-store.js';
import { keyStoreSuite } from '../../src/testing/index.js';

const DATABASE_URL = process.env.DATABASE_URL;
const skipReason = DATABASE_URL
  ? undefined
  : 'DATABASE_URL is not set: skipping the PostgreSQL example store (see "Testing with Redis and PostgreSQL" in README.md)';
if (!DATABASE_URL) {
  if (process.env.CI === 'true') throw new Error('DATABASE_URL must be set when CI=true: the PostgreSQL tests cannot be skipped in CI');
  console.warn(skipReason);
}

describe.skipIf(!DATABASE_URL)(`examples/postgres-store.ts${skipReason ? ` (${skipReason})` : ''}`, () => {
  // One schema per run, dropped afterwards, so runs never see each other's rows.
  const schema = `ms_test_${randomBytes(6).toString('hex')}`;
  const pool = new pg.Pool({ connectionString: DATABASE_URL, max: 10 });
  const store = new PostgresKeyStore(pool, { schema });

  beforeAll(() => store.migrate());
  afterAll(async () => {
    await pool.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await store.close();
  });

  // The example has no ledger or hold tables yet (the shipped PostgreSQL store brings them): those groups are listed as skipped.
  keyStoreSuite({ it, createStore: () => store, disposeStore: () => {}, skip: { ledger: true, holds: true } });
});
