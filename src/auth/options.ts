import { DEFAULT_KEY_TYPE, DEFAULT_RATE_LIMIT } from '../defaults.js';
import { ConfigurationError } from '../errors/configuration-error.js';
import type { EventHandler } from '../events/events.js';
import { type KeyHasher, defaultKeyHasher } from '../keys/hashing.js';
import { type ResolvedStoreGuardOptions, type StoreGuardOptions, resolveStoreGuardOptions } from '../store/guard.js';
import type { KeyType, RateLimitSetting } from '../store/types.js';
import { intervalToMs } from './rate-limit.js';

/** Options of the authenticating factories. Every field is optional; `undefined` means the default. */
export interface AuthOptions extends StoreGuardOptions {
  /** Which key type this route takes. `modelSwitchAuth` defaults to `proxy` (`ms-`). */
  keyType?: KeyType;
  /** Hashing, verified-key cache and scrypt concurrency. Default: one process-wide `KeyHasher`. */
  hasher?: KeyHasher;
  /** Rate limit for keys without their own `rateLimit`; `null` for none. Default {@link DEFAULT_RATE_LIMIT}: 1000 per `10s`. */
  defaultRateLimit?: RateLimitSetting | null;
  /** Clock in epoch ms, injectable for tests. Default `Date.now`. */
  now?: () => number;
  /**
   * Receives what happens to keys and balances through this factory (`key.created`,
   * `key.limit_reached`, `account.balance_low`, …; see `ModelSwitchEvent`), after the answer was
   * sent; what it throws is logged and changes nothing. Default: none. `modelSwitchAuth` changes no
   * key or balance, so it has none of its own to report.
   */
  onEvent?: EventHandler;
}

/** {@link AuthOptions} after {@link resolveAuthOptions}: every field present, checked, and frozen where the middleware shares it. */
export interface ResolvedAuthOptions extends ResolvedStoreGuardOptions {
  readonly keyType: KeyType;
  readonly hasher: KeyHasher;
  /** Frozen: every request's `req.modelSwitch.rateLimit` may be this one object. */
  readonly defaultRateLimit: Readonly<RateLimitSetting> | null;
  readonly now: () => number;
  /** The host's handler, or `undefined` for none. */
  readonly onEvent: EventHandler | undefined;
}

/**
 * Checks the authentication options of a factory once, at creation, and answers them complete:
 * every default applied from its named constant in `defaults.ts`. Never changes the caller's
 * object. Throws a `ConfigurationError` `ERR_MS_OPTION` that names `factory` and says how to fix
 * the option.
 *
 * @example
 * ```ts
 * const resolved = resolveAuthOptions({ storeTimeoutMs: 500 }, 'modelSwitchAuth');
 * resolved.keyType; // 'proxy'
 * resolved.defaultRateLimit; // { requests: 1000, interval: '10s' }
 * ```
 */
export function resolveAuthOptions(options: AuthOptions | undefined, factory: string): ResolvedAuthOptions {
  if (options === undefined) options = {};
  if (typeof options !== 'object' || options === null) {
    throw optionError(factory, 'options must be an object, e.g. { storeTimeoutMs: 2000 }, or left out');
  }
  const keyType = options.keyType ?? DEFAULT_KEY_TYPE;
  if (keyType !== 'proxy' && keyType !== 'billing') {
    throw optionError(factory, "options.keyType must be 'proxy' (ms- keys, the inference API) or 'billing' (mk- keys)");
  }
  const hasher = options.hasher ?? defaultKeyHasher();
  if (!isKeyHasher(hasher)) throw optionError(factory, 'options.hasher must be a KeyHasher, e.g. new KeyHasher({ cacheSize: 50_000 })');
  const now = options.now ?? Date.now;
  if (typeof now !== 'function') throw optionError(factory, 'options.now must be a function answering epoch ms, like Date.now');
  const { onEvent } = options;
  if (onEvent !== undefined && typeof onEvent !== 'function') {
    throw optionError(factory, 'options.onEvent must be a function (event) => void, e.g. (event) => auditLog.info(event), or left out');
  }
  return {
    ...resolveStoreGuardOptions(options, factory),
    keyType,
    hasher,
    defaultRateLimit: resolveDefaultRateLimit(options.defaultRateLimit, factory),
    now,
    onEvent,
  };
}

function resolveDefaultRateLimit(setting: RateLimitSetting | null | undefined, factory: string): Readonly<RateLimitSetting> | null {
  if (setting === null) return null;
  const limit: Readonly<RateLimitSetting> = setting ?? DEFAULT_RATE_LIMIT;
  if (
    typeof limit !== 'object' ||
    !Number.isInteger(limit.requests) ||
    limit.requests < 1 ||
    typeof limit.interval !== 'string' ||
    intervalToMs(limit.interval) === null ||
    (limit.tokens !== undefined && (!Number.isInteger(limit.tokens) || limit.tokens < 1))
  ) {
    throw optionError(
      factory,
      'options.defaultRateLimit needs an integer requests ≥ 1 and an interval like "10s", "1m", "1h" or "1d" (at most 366 days), and tokens, if set, an integer ≥ 1, e.g. { requests: 1000, interval: "10s" }, or null for none',
    );
  }
  return Object.freeze({ ...limit });
}

/** Duck-typed rather than `instanceof`: the ESM and CommonJS builds each have their own `KeyHasher` class. */
function isKeyHasher(value: unknown): value is KeyHasher {
  const hasher = value as Partial<Record<'verify' | 'verifiedHash' | 'hash', unknown>> | null;
  return (
    typeof hasher === 'object' &&
    hasher !== null &&
    typeof hasher.verify === 'function' &&
    typeof hasher.verifiedHash === 'function' &&
    typeof hasher.hash === 'function'
  );
}

function optionError(factory: string, message: string): ConfigurationError {
  return new ConfigurationError('ERR_MS_OPTION', `${factory}: ${message}`);
}
