import { randomBytes } from 'node:crypto';
import type { KeyType } from '../store/types.js';
import { generateApiKey } from './api-key.js';
import { type KeyHasher, defaultKeyHasher } from './hashing.js';
import { MAX_USD, limitPeriod } from '../store/spend-rules.js';
import type { AccountRecord, KeyRecord, KeyStore, LimitReset, NewKeyRecord, RateLimitSetting } from '../store/types.js';

/** What {@link createAccount} takes; all optional. */
export interface NewAccountInput {
  /** Your own account id (e.g. your user id). Default: a random `acct_…` id. */
  id?: string;
  /** Starting balance in USD. Default 0. */
  balance?: number;
  /** Shown as `is_free_tier` by `GET /v1/auth/key`. Default false. */
  isFreeTier?: boolean;
  /** Creation time. Default now. */
  now?: number;
}

/**
 * Creates an account, the owner of keys and of a USD balance. Throws a TypeError for an `id` that is
 * not 1–128 characters of letters, digits, `_ . : @ -` (a leading `:` is fine), or a `balance` that
 * is not finite or beyond ±1e12 USD.
 *
 * @example
 * ```ts
 * const account = await createAccount(store, { balance: 10 });
 * const { key } = await issueKey(store, { accountId: account.id, type: 'billing', name: 'admin' });
 * ```
 */
export async function createAccount(store: KeyStore, input: NewAccountInput = {}): Promise<AccountRecord> {
  const balance = input.balance ?? 0;
  if (!isUsd(balance)) throw new TypeError(`createAccount: balance must be a finite number between -${MAX_USD} and ${MAX_USD}`);
  if (input.id !== undefined && (typeof input.id !== 'string' || !/^[\w.:@-]{1,128}$/.test(input.id))) {
    throw new TypeError('createAccount: id must be 1–128 characters of letters, digits, _ . : @ -');
  }
  return store.createAccount({
    id: input.id ?? `acct_${randomBytes(12).toString('base64url')}`,
    balance,
    reserved: 0,
    isFreeTier: input.isFreeTier ?? false,
    createdAt: input.now ?? Date.now(),
  });
}

/** Whether `value` is a USD amount stores accept: finite, at most {@link MAX_USD} either way. */
function isUsd(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && Math.abs(value) <= MAX_USD;
}

/**
 * Adds USD to an account's balance (negative to debit), atomically. Returns the account, or `null`
 * for an unknown id. Throws a TypeError for an amount that is not finite or beyond ±1e12 USD
 * (`MAX_USD`); the store refuses (rejects, changing nothing) a balance that would leave that range.
 *
 * @example
 * ```ts
 * await creditBalance(store, account.id, 25); // after a payment clears
 * ```
 */
export async function creditBalance(store: KeyStore, accountId: string, amountUsd: number): Promise<AccountRecord | null> {
  if (!isUsd(amountUsd)) throw new TypeError(`creditBalance: amountUsd must be a finite number between -${MAX_USD} and ${MAX_USD}`);
  return store.adjustBalance(accountId, amountUsd);
}

/** What {@link issueKey} takes. */
export interface IssueKeyInput {
  accountId: string;
  /** `proxy` (`ms-`, for `/v1`) or `billing` (`mk-`, for `/api`). */
  type: KeyType;
  /** 1–100 characters (Unicode code points). */
  name: string;
  /** Epoch ms, or `null`/omitted for never. */
  expiresAt?: number | null;
  /** USD spend cap per period, or `null`/omitted for none. */
  limit?: number | null;
  limitReset?: LimitReset | null;
  /** `null`/omitted uses the host's default. */
  rateLimit?: RateLimitSetting | null;
}

/** A key just issued: the record and the full key value, which exists nowhere else. */
export interface IssuedKey {
  record: KeyRecord;
  /** The full key. Show it once and forget it: only its scrypt hash is stored. */
  key: string;
}

/**
 * Issues a key: generates it, hashes it with scrypt and stores the record. The full key is in the
 * answer only. Use it to make an account's first billing key, since `/api/keys` needs one.
 *
 * @example
 * ```ts
 * const { key } = await issueKey(store, { accountId, type: 'billing', name: 'ops' });
 * console.log(`MODELSWITCH_BILLING_KEY=${key}`); // shown once
 * ```
 */
export async function issueKey(store: KeyStore, input: IssueKeyInput, options: PrepareKeyOptions = {}): Promise<IssuedKey> {
  const prepared = await prepareKey(input, options);
  return { record: await store.insertKey(prepared.record), key: prepared.key };
}

/** A key generated and hashed but not stored yet (the first half of {@link issueKey}). */
export interface PreparedKey {
  record: NewKeyRecord;
  key: string;
}

/** Options of {@link prepareKey} (and {@link issueKey}). */
export interface PrepareKeyOptions {
  /** The hasher (its queue and parameters). Default: the process-wide one the factories share. */
  hasher?: KeyHasher;
  /** Creation time (epoch ms). Default now. */
  now?: number;
  /**
   * Count the hash against the hasher's `maxHashesPerAccount` for `input.accountId` and its
   * `maxQueuedHashes`, rejecting past them with 429 `rate_limit_exceeded` or 503 `server_busy`, as
   * `keysRouter` does for keys created over HTTP. Default false: a host's own calls wait their turn
   * and are never refused.
   */
  boundedPerAccount?: boolean;
}

/**
 * Generates and hashes a key without storing it, for callers that store it themselves.
 *
 * @example
 * ```ts
 * const { record, key } = await prepareKey({ accountId, type: 'proxy', name: 'ci' });
 * await store.insertKey(record);
 * ```
 */
export async function prepareKey(input: IssueKeyInput, options: PrepareKeyOptions = {}): Promise<PreparedKey> {
  // Characters are code points, as the HTTP validation counts them: an emoji is one, not two.
  const nameLength = typeof input.name === 'string' ? [...input.name].length : 0;
  if (nameLength < 1 || nameLength > 100) throw new TypeError('issueKey: name must be 1–100 characters');
  if (input.type !== 'proxy' && input.type !== 'billing') throw new TypeError("issueKey: type must be 'proxy' or 'billing'");
  const generated = generateApiKey(input.type);
  const hasher = options.hasher ?? defaultKeyHasher();
  const hash = await hasher.hash(generated.value, options.boundedPerAccount === true ? { account: input.accountId } : {});
  const limitReset = input.limitReset ?? null;
  const now = options.now ?? Date.now();
  const record: NewKeyRecord = {
    handle: generated.handle,
    type: input.type,
    accountId: input.accountId,
    name: input.name,
    prefix: generated.prefix,
    hash,
    active: true,
    createdAt: now,
    expiresAt: input.expiresAt ?? null,
    lastUsedAt: null,
    usage: 0,
    usagePeriod: limitPeriod(limitReset, now),
    reserved: 0,
    limit: input.limit ?? null,
    limitReset,
    rateLimit: input.rateLimit ?? null,
  };
  return { record, key: generated.value };
}
