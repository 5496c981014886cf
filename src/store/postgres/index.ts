/**
 * `modelswitch-keys/postgres`: the PostgreSQL store. Needs the `pg` package (an optional peer
 * dependency): importing this entry without it throws a ConfigurationError that says `npm install pg`.
 */
export { PostgresKeyStore } from './postgres-store.js';
export type { PostgresMigrationResult } from './migrations.js';
export type { PostgresKeyStoreOptions, PostgresPool, PostgresPoolClient, PostgresQueryResult } from './options.js';
