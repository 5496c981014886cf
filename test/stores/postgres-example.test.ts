import { afterAll, describe, expect, it } from 'vitest';
import { exampleStore } from '../../examples/example-store.js';
import { PostgresKeyStore } from '../../src/store/postgres/index.js';
import { sampleAccount } from '../../src/testing/index.js';
import { startExample, stopExample } from '../example-runner.js';
import { DATABASE_URL, dropSchema, postgresSkipReason, testSchema } from './postgres-env.js';

describe.skipIf(!DATABASE_URL)(`the example on PostgreSQL${postgresSkipReason ? ` (${postgresSkipReason})` : ''}`, () => {
  const url = DATABASE_URL as string;
  const schemas: string[] = [];
  afterAll(async () => {
    for (const schema of schemas) await dropSchema(url, schema);
  });

  it('picks PostgreSQL when DATABASE_URL is set (before REDIS_URL), migrates it, and never prints the password', async () => {
    const schema = testSchema();
    schemas.push(schema);
    const withPassword = new URL(url);
    withPassword.password = 'not-to-be-printed';
    const { store, description } = await exampleStore({
      DATABASE_URL: withPassword.href,
      DATABASE_SCHEMA: schema,
      REDIS_URL: 'redis://127.0.0.1:1',
    });
    try {
      expect(store).toBeInstanceOf(PostgresKeyStore);
      expect(description).toBe(
        `key store: PostgreSQL at ${withPassword.host}${withPassword.pathname}, schema ${schema} at version 1 (keys, balances and the ledger are durable)`,
      );
      expect(description).not.toContain('not-to-be-printed');
      // Migrated: the tables are there.
      const account = await store.createAccount(sampleAccount({ balance: 1 }));
      expect(await store.getAccount(account.id)).toEqual(account);
    } finally {
      await store.close?.();
    }
  });

  it('npm run example with DATABASE_URL keeps its keys across a restart', async () => {
    const schema = testSchema();
    schemas.push(schema);
    const env = { DATABASE_URL: url, DATABASE_SCHEMA: schema };
    const first = startExample(env);
    const { url: firstUrl, billingKey } = await first.ready;
    expect(first.output()).toContain(
      `key store: PostgreSQL at ${new URL(url).host}${new URL(url).pathname}, schema ${schema} at version 1`,
    );
    const created = await fetch(`${firstUrl}/api/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${billingKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'survives a restart' }),
    });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: number };
    expect(await stopExample(first)).toBe(0);

    const second = startExample(env);
    const { url: secondUrl } = await second.ready;
    try {
      const listed = await fetch(`${secondUrl}/api/keys`, { headers: { authorization: `Bearer ${billingKey}` } });
      expect(listed.status).toBe(200);
      expect(((await listed.json()) as { keys: Array<{ id: number; name: string }> }).keys.map((key) => [key.id, key.name])).toEqual([
        [id, 'survives a restart'],
      ]);
    } finally {
      expect(await stopExample(second)).toBe(0);
    }
  }, 60_000);
});
