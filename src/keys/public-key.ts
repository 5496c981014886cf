import { limitPeriod, usageInPeriod } from '../store/spend-rules.js';
import type { KeyRecord, LimitReset, RateLimitSetting } from '../store/types.js';

/** A key as the management API shows it: never the hash, the handle or the key value. */
export interface PublicKey {
  id: number;
  name: string;
  prefix: string;
  active: boolean;
  createdAt: string;
  expiresAt: string | null;
  lastUsedAt: string | null;
  /** USD spent in the current limit period. */
  usage: number;
  limit: number | null;
  limitReset: LimitReset | null;
  rateLimit: RateLimitSetting | null;
  /** The models the key may call (exact names, or prefixes ending in `*`), or `null` for every model. */
  models: string[] | null;
}

/** ISO 8601 in UTC, without milliseconds when they are zero (`2024-01-15T10:00:00Z`, as the docs show). */
export function isoTime(epochMs: number): string {
  return new Date(epochMs).toISOString().replace('.000Z', 'Z');
}

/**
 * The public view of a key record at time `now` (usage of the current period).
 *
 * @example
 * ```ts
 * publicKey(record, Date.now()); // { id: 1, name: 'Production', prefix: 'ms-abc1', active: true, … }
 * ```
 */
export function publicKey(record: KeyRecord, now: number): PublicKey {
  return {
    id: record.id,
    name: record.name,
    prefix: record.prefix,
    active: record.active,
    createdAt: isoTime(record.createdAt),
    expiresAt: record.expiresAt === null ? null : isoTime(record.expiresAt),
    lastUsedAt: record.lastUsedAt === null ? null : isoTime(record.lastUsedAt),
    usage: usageInPeriod(record, limitPeriod(record.limitReset, now)),
    limit: record.limit,
    limitReset: record.limitReset,
    rateLimit: record.rateLimit,
    models: record.models === null ? null : [...record.models],
  };
}
