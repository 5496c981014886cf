import type { AccountRecord, KeyRecord } from '../types.js';

/**
 * How rows arrive from `pg`: `bigint` and `numeric` columns as strings (they may not fit a double;
 * ours are ids, epoch ms and USD rounded to 10 decimals, which do), `jsonb` parsed.
 */
export interface KeyRow {
  id: string;
  handle: string;
  type: KeyRecord['type'];
  account_id: string;
  name: string;
  prefix: string;
  hash: string;
  active: boolean;
  created_at: string;
  expires_at: string | null;
  last_used_at: string | null;
  usage: string;
  usage_period: string | null;
  reserved: string;
  limit: string | null;
  limit_reset: KeyRecord['limitReset'];
  rate_limit: KeyRecord['rateLimit'];
}

export interface AccountRow {
  id: string;
  balance: string;
  reserved: string;
  is_free_tier: boolean;
  created_at: string;
}

function nullableNumber(value: string | null): number | null {
  return value === null ? null : Number(value);
}

export function toAccount(row: AccountRow): AccountRecord {
  return {
    id: row.id,
    balance: Number(row.balance),
    reserved: Number(row.reserved),
    isFreeTier: row.is_free_tier,
    createdAt: Number(row.created_at),
  };
}

export function toKey(row: KeyRow): KeyRecord {
  return {
    id: Number(row.id),
    handle: row.handle,
    type: row.type,
    accountId: row.account_id,
    name: row.name,
    prefix: row.prefix,
    hash: row.hash,
    active: row.active,
    createdAt: Number(row.created_at),
    expiresAt: nullableNumber(row.expires_at),
    lastUsedAt: nullableNumber(row.last_used_at),
    usage: Number(row.usage),
    usagePeriod: row.usage_period,
    reserved: Number(row.reserved),
    limit: nullableNumber(row.limit),
    limitReset: row.limit_reset,
    rateLimit: row.rate_limit,
  };
}
