import type { AccountRecord, KeyRecord, LedgerEntry, LedgerEntryType, UsageRow } from '../types.js';

/*
 * Rows as `pg` answers them: `bigint` and `numeric` columns as strings (they may not fit a double;
 * ours are ids, token counts and USD rounded to 10 decimals, which do), `double precision` times
 * as numbers, `jsonb` parsed. A row built by `to_jsonb` has numbers where a plain row has strings:
 * `Number()` reads either.
 */

type Numeric = string | number;

export interface KeyRow {
  id: Numeric;
  handle: string;
  type: KeyRecord['type'];
  account_id: string;
  name: string;
  prefix: string;
  hash: string;
  previous_hash: string | null;
  previous_key_expires_at: number | null;
  active: boolean;
  created_at: number;
  expires_at: number | null;
  last_used_at: number | null;
  usage: Numeric;
  usage_period: string | null;
  reserved: Numeric;
  limit: Numeric | null;
  limit_reset: KeyRecord['limitReset'];
  rate_limit: KeyRecord['rateLimit'];
  models: string[] | null;
}

export interface AccountRow {
  id: string;
  balance: Numeric;
  reserved: Numeric;
  is_free_tier: boolean;
  created_at: number;
}

export interface LedgerRow {
  id: Numeric;
  account_id: string;
  type: LedgerEntryType;
  amount: Numeric;
  balance_after: Numeric;
  key_id: Numeric | null;
  model: string | null;
  prompt_tokens: Numeric | null;
  completion_tokens: Numeric | null;
  request_id: string | null;
  upstream_id: string | null;
  reference: string | null;
  note: string | null;
  created_at: number;
}

export interface UsageDailyRow {
  day: string;
  key_id: Numeric;
  model: string;
  requests: Numeric;
  prompt_tokens: Numeric;
  completion_tokens: Numeric;
  cost: Numeric;
}

function nullableNumber(value: Numeric | null): number | null {
  return value === null ? null : Number(value);
}

export function toAccount(row: AccountRow): AccountRecord {
  return {
    id: row.id,
    balance: Number(row.balance),
    reserved: Number(row.reserved),
    isFreeTier: row.is_free_tier,
    createdAt: row.created_at,
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
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    lastUsedAt: row.last_used_at,
    usage: Number(row.usage),
    usagePeriod: row.usage_period,
    reserved: Number(row.reserved),
    limit: nullableNumber(row.limit),
    limitReset: row.limit_reset,
    rateLimit: row.rate_limit,
    models: row.models,
    previousHash: row.previous_hash,
    previousKeyExpiresAt: row.previous_key_expires_at,
  };
}

export function toEntry(row: LedgerRow): LedgerEntry {
  return {
    id: Number(row.id),
    accountId: row.account_id,
    type: row.type,
    amount: Number(row.amount),
    balanceAfter: Number(row.balance_after),
    keyId: nullableNumber(row.key_id),
    model: row.model,
    promptTokens: nullableNumber(row.prompt_tokens),
    completionTokens: nullableNumber(row.completion_tokens),
    requestId: row.request_id,
    upstreamId: row.upstream_id,
    reference: row.reference,
    note: row.note,
    createdAt: row.created_at,
  };
}

export function toUsageRow(row: UsageDailyRow): UsageRow {
  return {
    date: row.day,
    keyId: Number(row.key_id),
    model: row.model,
    requests: Number(row.requests),
    promptTokens: Number(row.prompt_tokens),
    completionTokens: Number(row.completion_tokens),
    cost: Number(row.cost),
  };
}
