import { createRequire } from 'node:module';
import type pg from 'pg';
import { ConfigurationError } from '../../errors/configuration-error.js';

/** What `PostgresKeyStore` takes from the `pg` package: its pool and client classes. */
export type PgModule = Pick<typeof pg, 'Pool' | 'Client'>;

/** The message of the error thrown when `pg` cannot be found, with the command that fixes it. */
export const PG_MISSING_MESSAGE =
  "modelswitch-keys/postgres needs the 'pg' package, an optional peer dependency that is not installed: run `npm install pg`";

/**
 * Loads `pg` with `load` (the `require` of this module by default). `pg` is an optional peer
 * dependency: the main entry never loads it, and this entry says how to install it instead of
 * failing with a bare "Cannot find module". Only a missing `pg` itself is turned into the
 * ConfigurationError; any other failure (a broken install, a missing dependency of `pg`) passes as is.
 *
 * @example
 * ```ts
 * const { Pool } = loadPg();
 * ```
 */
export function loadPg(load: (id: string) => unknown = createRequire(import.meta.url)): PgModule {
  let loaded: unknown;
  try {
    loaded = load('pg');
  } catch (error) {
    if (isMissing(error, 'pg')) throw new ConfigurationError('ERR_MS_STORE', PG_MISSING_MESSAGE);
    throw error;
  }
  const module = loaded as Partial<PgModule> | null;
  if (typeof module?.Pool !== 'function' || typeof module.Client !== 'function') {
    throw new ConfigurationError(
      'ERR_MS_STORE',
      "modelswitch-keys/postgres: the installed 'pg' package has no Pool or Client class: run `npm install pg@8`",
    );
  }
  return module as PgModule;
}

/** Whether `error` says that module `id` itself (not something it requires) cannot be found. */
function isMissing(error: unknown, id: string): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown };
  return (
    (code === 'MODULE_NOT_FOUND' || code === 'ERR_MODULE_NOT_FOUND') &&
    typeof message === 'string' &&
    (message.includes(`'${id}'`) || message.includes(`"${id}"`))
  );
}
