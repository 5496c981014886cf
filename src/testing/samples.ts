import { randomBytes } from 'node:crypto';
import { generateApiKey } from '../keys/api-key.js';
import type { AccountRecord, NewKeyRecord } from '../store/types.js';

/** A random account id, so tests sharing a backend never collide. */
export function randomAccountId(): string {
  return `test_${randomBytes(9).toString('base64url')}`;
}

/**
 * Two fresh account ids that start with `:` and `::`, which Keyv's serializer escapes (it doubles a
 * leading colon): a store must name and find their records like any other.
 */
export function colonAccountIds(): string[] {
  return [`:${randomAccountId()}`, `::${randomAccountId()}`];
}

/**
 * An account record for store tests: a random id, 100 USD, nothing reserved.
 *
 * @example
 * ```ts
 * const owner = await store.createAccount(sampleAccount({ balance: 5 }));
 * ```
 */
export function sampleAccount(overrides: Partial<AccountRecord> = {}): AccountRecord {
  return { id: randomAccountId(), balance: 100, reserved: 0, isFreeTier: false, createdAt: 1_700_000_000_000, ...overrides };
}

/**
 * A key record ready for `insertKey`: a fresh random handle and prefix, a placeholder hash (no
 * scrypt: store tests need records, not verifiable keys), no limits, every model allowed, no previous secret.
 *
 * @example
 * ```ts
 * const key = await store.insertKey(sampleKeyRecord(owner.id, { limit: 10 }));
 * ```
 */
export function sampleKeyRecord(accountIdValue: string, overrides: Partial<NewKeyRecord> = {}): NewKeyRecord {
  const generated = generateApiKey(overrides.type ?? 'proxy');
  return {
    handle: generated.handle,
    type: generated.type,
    accountId: accountIdValue,
    name: 'conformance',
    prefix: generated.prefix,
    hash: 'c2NyeXB0-not-a-real-hash',
    active: true,
    createdAt: 1_700_000_000_000,
    expiresAt: null,
    lastUsedAt: null,
    usage: 0,
    usagePeriod: null,
    reserved: 0,
    limit: null,
    limitReset: null,
    rateLimit: null,
    models: null,
    previousHash: null,
    previousKeyExpiresAt: null,
    ...overrides,
  };
}
