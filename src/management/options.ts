import { type AuthOptions, type ResolvedAuthOptions, resolveAuthOptions } from '../auth/options.js';
import { DEFAULT_KEYS_MAX_BODY_BYTES } from '../defaults.js';
import { ConfigurationError } from '../errors/configuration-error.js';

/** Options of `keysRouter`. Every field is optional; `undefined` means the default. */
export interface KeysRouterOptions extends Omit<AuthOptions, 'keyType'> {
  /** Largest accepted JSON body in bytes; larger answers 413. Default {@link DEFAULT_KEYS_MAX_BODY_BYTES} (16384). */
  maxBodyBytes?: number;
}

/** {@link KeysRouterOptions} after {@link resolveKeysRouterOptions}: every field present and checked. */
export interface ResolvedKeysRouterOptions {
  readonly maxBodyBytes: number;
  /** The authentication options, always for billing keys (`mk-`). */
  readonly auth: ResolvedAuthOptions & { readonly keyType: 'billing' };
}

/**
 * Checks `keysRouter`'s options once, at creation, and answers them complete: every default
 * applied from its named constant in `defaults.ts`. Never changes the caller's object. Throws a
 * `ConfigurationError` `ERR_MS_OPTION` whose message says how to fix the option.
 *
 * @example
 * ```ts
 * const resolved = resolveKeysRouterOptions({ storeTimeoutMs: 500 });
 * resolved.maxBodyBytes; // 16384
 * resolved.auth.keyType; // 'billing'
 * ```
 */
export function resolveKeysRouterOptions(options: KeysRouterOptions | undefined): ResolvedKeysRouterOptions {
  if (options === undefined) options = {};
  if (typeof options !== 'object' || options === null) {
    throw new ConfigurationError('ERR_MS_OPTION', 'keysRouter: options must be an object, e.g. { maxBodyBytes: 16384 }, or left out');
  }
  const { maxBodyBytes: bodyLimit, ...auth } = options;
  const maxBodyBytes = bodyLimit ?? DEFAULT_KEYS_MAX_BODY_BYTES;
  if (!Number.isSafeInteger(maxBodyBytes) || maxBodyBytes < 1) {
    throw new ConfigurationError(
      'ERR_MS_OPTION',
      `keysRouter: options.maxBodyBytes must be a positive integer number of bytes, e.g. ${DEFAULT_KEYS_MAX_BODY_BYTES}`,
    );
  }
  return { maxBodyBytes, auth: { ...resolveAuthOptions({ ...auth, keyType: 'billing' }, 'keysRouter'), keyType: 'billing' } };
}
