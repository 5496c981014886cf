import { describe, expect, it } from 'vitest';
import { ConfigurationError } from '../../src/index.js';
import { PG_MISSING_MESSAGE, loadPg } from '../../src/store/postgres/load-pg.js';
import {
  DEFAULT_POSTGRES_CONNECTION_TIMEOUT_MS,
  DEFAULT_POSTGRES_MAX_CONNECTIONS,
  DEFAULT_POSTGRES_SCHEMA,
  DEFAULT_POSTGRES_STATEMENT_TIMEOUT_MS,
} from '../../src/defaults.js';
import { type PostgresKeyStoreOptions, type PostgresPool, resolvePostgresOptions } from '../../src/store/postgres/options.js';
import { PostgresKeyStore } from '../../src/store/postgres/index.js';

const URL_WITH_PASSWORD = 'postgres://gateway:hunter2@db.internal:5432/keys';

/** What a resolve threw: its class, code and message. */
function refusal(options: unknown): { name: string; code: unknown; message: string } {
  try {
    resolvePostgresOptions(options as PostgresKeyStoreOptions);
  } catch (error) {
    const { name, code, message } = error as ConfigurationError;
    return { name, code, message };
  }
  throw new Error('resolvePostgresOptions accepted the options');
}

/** One case of the refusal table. */
function refused(options: unknown, message: string): [unknown, string] {
  return [options, message];
}

const fakePool: PostgresPool = {
  query: async () => ({ rows: [], rowCount: 0 }),
  connect: async () => ({ query: async () => ({ rows: [], rowCount: 0 }), release: () => {} }),
  end: async () => {},
};

describe('PostgresKeyStore options', () => {
  it('fills every default from its named constant', () => {
    expect(resolvePostgresOptions({ connectionString: URL_WITH_PASSWORD })).toEqual({
      connection: { connectionString: URL_WITH_PASSWORD },
      schema: DEFAULT_POSTGRES_SCHEMA,
      maxConnections: DEFAULT_POSTGRES_MAX_CONNECTIONS,
      connectionTimeoutMs: DEFAULT_POSTGRES_CONNECTION_TIMEOUT_MS,
      statementTimeoutMs: DEFAULT_POSTGRES_STATEMENT_TIMEOUT_MS,
      ledgerRetentionDays: 400,
    });
    expect([DEFAULT_POSTGRES_SCHEMA, DEFAULT_POSTGRES_MAX_CONNECTIONS, DEFAULT_POSTGRES_CONNECTION_TIMEOUT_MS]).toEqual([
      'modelswitch',
      10,
      5000,
    ]);
  });

  it('keeps what it is given, and a pool of the host’s own as it is', () => {
    expect(
      resolvePostgresOptions({
        pool: fakePool,
        schema: 'gateway_2',
        maxConnections: 3,
        connectionTimeoutMs: 100,
        statementTimeoutMs: 200,
        ledgerRetentionDays: Number.POSITIVE_INFINITY,
      }),
    ).toEqual({
      connection: { pool: fakePool },
      schema: 'gateway_2',
      maxConnections: 3,
      connectionTimeoutMs: 100,
      statementTimeoutMs: 200,
      ledgerRetentionDays: Number.POSITIVE_INFINITY,
    });
  });

  it.each<[unknown, string]>([
    [undefined, 'pass options, e.g. new PostgresKeyStore({ connectionString: process.env.DATABASE_URL })'],
    [{}, 'give exactly one of connectionString (the store makes its own pool) and pool (a pg.Pool of yours)'],
    [
      { connectionString: URL_WITH_PASSWORD, pool: fakePool },
      'give exactly one of connectionString (the store makes its own pool) and pool (a pg.Pool of yours)',
    ],
    [{ connectionString: '  ' }, 'connectionString must be a non-empty string such as postgres://user@host:5432/database'],
    [{ pool: { query: () => {} } }, 'pool must be a pg.Pool (an object with query() and connect())'],
    [{ connectionString: URL_WITH_PASSWORD, scheme: 'x' }, 'unknown option "scheme"'],
    ...['Gateway', 'gate-way', '1gateway', 'pg_gateway', 'a'.repeat(64), '', 'gateway"; DROP TABLE x; --'].map((schema) =>
      refused(
        { connectionString: URL_WITH_PASSWORD, schema },
        'schema must be a lowercase SQL identifier: a letter or _, then letters, digits or _, at most 63 characters, not starting with pg_',
      ),
    ),
    ...[0, -1, 1.5, 1001, Number.NaN, '10'].map((maxConnections) =>
      refused({ connectionString: URL_WITH_PASSWORD, maxConnections }, 'maxConnections must be an integer from 1 to 1000'),
    ),
    ...[0, 2 ** 31, Number.POSITIVE_INFINITY].map((connectionTimeoutMs) =>
      refused({ connectionString: URL_WITH_PASSWORD, connectionTimeoutMs }, 'connectionTimeoutMs must be an integer from 1 to 2147483647'),
    ),
    [
      { connectionString: URL_WITH_PASSWORD, statementTimeoutMs: 2 ** 31 - 1 },
      'statementTimeoutMs must be an integer from 1 to 2147482647',
    ],
    ...[0, -1, Number.NaN, '400'].map((ledgerRetentionDays) =>
      refused(
        { connectionString: URL_WITH_PASSWORD, ledgerRetentionDays },
        'ledgerRetentionDays must be a positive number of days (Infinity keeps every entry)',
      ),
    ),
  ])('refuses %j with a ConfigurationError that says how to fix it, without the connection string', (options, message) => {
    expect(refusal(options)).toEqual({ name: 'ConfigurationError', code: 'ERR_MS_OPTION', message: `PostgresKeyStore: ${message}` });
    expect(refusal(options).message).not.toContain('hunter2');
  });

  it('checks its options when constructed, before opening any connection', () => {
    expect(() => new PostgresKeyStore({ connectionString: URL_WITH_PASSWORD, schema: 'Bad' })).toThrow(ConfigurationError);
    // A valid configuration opens nothing yet: an unreachable host is only found by the first operation.
    const store = new PostgresKeyStore({ connectionString: 'postgres://nobody@127.0.0.1:1/none' });
    expect(store.schema).toBe('modelswitch');
    return store.close();
  });
});

describe('loading pg', () => {
  /** An error as Node's require throws it for a module it cannot find. */
  function notFound(id: string): Error {
    return Object.assign(
      new Error(`Cannot find module '${id}'\nRequire stack:\n- /app/node_modules/modelswitch-keys/dist/postgres/index.cjs`),
      {
        code: 'MODULE_NOT_FOUND',
      },
    );
  }

  it('answers the pg module when it is installed', () => {
    const Pool = class {};
    const Client = class {};
    expect(loadPg(() => ({ Pool, Client }))).toEqual({ Pool, Client });
  });

  it('says `npm install pg` (ConfigurationError ERR_MS_STORE) when pg is not installed', () => {
    let thrown: unknown;
    try {
      loadPg(() => {
        throw notFound('pg');
      });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ConfigurationError);
    expect({ code: (thrown as ConfigurationError).code, message: (thrown as Error).message }).toEqual({
      code: 'ERR_MS_STORE',
      message: PG_MISSING_MESSAGE,
    });
    expect(PG_MISSING_MESSAGE).toContain('npm install pg');
  });

  it('passes any other failure on as it is: a dependency of pg missing, pg throwing while it loads', () => {
    const missingDependency = notFound('pg-connection-string');
    expect(() =>
      loadPg(() => {
        throw missingDependency;
      }),
    ).toThrow(missingDependency);
    const broken = new SyntaxError('Unexpected token');
    expect(() =>
      loadPg(() => {
        throw broken;
      }),
    ).toThrow(broken);
  });

  it('refuses a pg without Pool and Client (not the pg it needs)', () => {
    expect(() => loadPg(() => ({ default: {} }))).toThrow(
      new ConfigurationError(
        'ERR_MS_STORE',
        "modelswitch-keys/postgres: the installed 'pg' package has no Pool or Client class: run `npm install pg@8`",
      ),
    );
  });
});
