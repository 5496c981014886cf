import { randomBytes } from 'node:crypto';
import pg from 'pg';

/**
 * Where the PostgreSQL tests find their server. Unset: they are skipped with a visible reason,
 * except under CI=true, where a missing server must fail the run instead of passing silently.
 */
export const DATABASE_URL = process.env.DATABASE_URL;
/**
 * The URL for a suite to make its store with while it is being collected: vitest runs a skipped
 * `describe`'s body too, so without DATABASE_URL the store is made (it connects only on its first
 * query, which a skipped suite never makes) with this placeholder instead of failing the file.
 */
export const COLLECTED_DATABASE_URL = DATABASE_URL ?? 'postgres://skipped.invalid/skipped';

export const postgresSkipReason = DATABASE_URL
  ? undefined
  : 'DATABASE_URL is not set: skipping the PostgreSQL store tests (see "Testing with Redis and PostgreSQL" in docs/development.md)';

if (!DATABASE_URL) {
  if (process.env.CI === 'true') throw new Error('DATABASE_URL must be set when CI=true: the PostgreSQL tests cannot be skipped in CI');
  console.warn(postgresSkipReason);
}

/** A schema of its own for one test file or run, so runs sharing a database never see each other's rows. */
export function testSchema(): string {
  return `ms_test_${randomBytes(6).toString('hex')}`;
}

/** Drops `schema` and everything in it. */
export async function dropSchema(url: string, schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await client.end();
  }
}
