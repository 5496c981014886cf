import { afterAll, beforeAll, describe, it } from 'vitest';
import { PostgresKeyStore } from '../../src/store/postgres/index.js';
import { keyStoreSuite } from '../../src/testing/index.js';
import { COLLECTED_DATABASE_URL, DATABASE_URL, dropSchema, postgresSkipReason, testSchema } from './postgres-env.js';
import { checkDefaultRetention } from './retention.js';

describe.skipIf(!DATABASE_URL)(`PostgresKeyStore${postgresSkipReason ? ` (${postgresSkipReason})` : ''}`, () => {
  const url = COLLECTED_DATABASE_URL;
  const schema = testSchema();
  const store = new PostgresKeyStore({ connectionString: url, schema, maxConnections: 20 });

  beforeAll(() => store.migrate());
  afterAll(async () => {
    await store.close();
    await dropSchema(url, schema);
  });

  keyStoreSuite({ it, createStore: () => store, disposeStore: () => {} });

  it('keeps ledger entries 400 days by default, and trimming them moves no balance, key usage or usage aggregate', async () => {
    await checkDefaultRetention(store);
  });
});
