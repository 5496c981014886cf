import { randomBytes } from 'node:crypto';
import {
  DEFAULT_ACCOUNT_BALANCE,
  DEFAULT_ACCOUNT_IS_FREE_TIER,
  DEFAULT_BALANCE_LOW_THRESHOLD,
  DEFAULT_ROTATION_GRACE_PERIOD_MS,
  MAX_ROTATION_GRACE_PERIOD_MS,
} from '../defaults.js';
import { ConfigurationError } from '../errors/configuration-error.js';
import {
  EventDispatcher,
  type EventHandler,
  type ModelSwitchActor,
  type ModelSwitchEvent,
  crossesBelow,
  isBalanceLowThreshold,
} from '../events/events.js';
import { type Logger, hostLogger } from '../log.js';
import type { BalanceChange, BalanceChangeResult, KeyRotation, KeyType } from '../store/types.js';
import { generateApiKey, keyWithHandle } from './api-key.js';
import { type KeyHasher, defaultKeyHasher } from './hashing.js';
import { MAX_NOTE_LENGTH, MAX_REFERENCE_LENGTH, MAX_USD, limitPeriod, roundUsd } from '../store/spend-rules.js';
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
 * Creates an account, the owner of keys and of a USD balance. A starting balance other than 0 is the
 * account's first ledger entry (a `credit`, or an `adjustment` if negative, reference `opening`),
 * written by the store in the same step. Throws a TypeError for an `id` that is not 1–128 characters
 * of letters, digits, `_ . : @ -` (a leading `:` is fine), or a `balance` that is not finite or
 * beyond ±1e12 USD.
 *
 * @example
 * ```ts
 * const account = await createAccount(store, { balance: 10 });
 * const { key } = await issueKey(store, { accountId: account.id, type: 'billing', name: 'admin' });
 * ```
 */
export async function createAccount(store: KeyStore, input: NewAccountInput = {}): Promise<AccountRecord> {
  const balance = input.balance ?? DEFAULT_ACCOUNT_BALANCE;
  if (!isUsd(balance)) throw new TypeError(`createAccount: balance must be a finite number between -${MAX_USD} and ${MAX_USD}`);
  if (input.id !== undefined && (typeof input.id !== 'string' || !/^[\w.:@-]{1,128}$/.test(input.id))) {
    throw new TypeError('createAccount: id must be 1–128 characters of letters, digits, _ . : @ -');
  }
  return store.createAccount({
    id: input.id ?? `acct_${randomBytes(12).toString('base64url')}`,
    balance,
    reserved: 0,
    isFreeTier: input.isFreeTier ?? DEFAULT_ACCOUNT_IS_FREE_TIER,
    createdAt: input.now ?? Date.now(),
  });
}

/** Whether `value` is a USD amount stores accept: finite, at most {@link MAX_USD} either way. */
function isUsd(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && Math.abs(value) <= MAX_USD;
}

/** Options of {@link creditBalance}. */
export interface CreditOptions {
  /**
   * What makes the credit idempotent (1–200 characters, unique per account): the payment's or
   * webhook event's id. A reference already in the account's ledger credits nothing and answers the
   * first entry. Default: a random reference, so a call without one is NOT idempotent (a retry pays twice).
   */
  reference?: string;
  /** Free text kept on the entry (at most 1000 characters). */
  note?: string | null;
  /** The entry's time (epoch ms). Default now. */
  now?: number;
  /**
   * Receives `account.credited` (actor `host`) once the credit is applied (not for a reference
   * already credited), on a later turn than the answer; what it throws is logged through `logger`.
   */
  onEvent?: EventHandler;
  /** Where a failing `onEvent` is reported. Default `console`. */
  logger?: Logger;
}

/** Options of {@link adjustBalance}: like {@link CreditOptions}, but the reference is required. */
export interface AdjustmentOptions {
  /** What makes the correction idempotent (1–200 characters, unique per account), e.g. a ticket id. */
  reference: string;
  /** Why: free text kept on the entry (at most 1000 characters). */
  note?: string | null;
  /** The entry's time (epoch ms). Default now. */
  now?: number;
  /**
   * Receives `account.balance_low` (actor `host`) when the correction takes the balance from at
   * least `balanceLowThreshold` to below it, on a later turn than the answer; what it throws is
   * logged through `logger`.
   */
  onEvent?: EventHandler;
  /** USD: see `onEvent`. Default {@link DEFAULT_BALANCE_LOW_THRESHOLD} ($1). */
  balanceLowThreshold?: number;
  /** Where a failing `onEvent` is reported. Default `console`. */
  logger?: Logger;
}

/**
 * Credits USD to an account (a top-up): the balance and its `credit` ledger entry change in one
 * atomic step. Idempotent by `reference`: the same reference again credits nothing and answers
 * `applied: false` with the first entry, so a payment webhook delivered twice pays once. Without a
 * `reference` a random one is made and the call is not idempotent. Answers `null` for an unknown
 * account. Throws a TypeError for an amount that is not a finite number above 0 and at most 1e12
 * USD, a bad reference or note, or a balance that would pass 1e12 (nothing is changed).
 *
 * @example
 * ```ts
 * // A payment webhook: Stripe may deliver the same event more than once.
 * app.post('/webhooks/stripe', express.json(), async (req, res) => {
 *   const event = req.body; // verify the signature first
 *   if (event.type === 'checkout.session.completed') {
 *     const session = event.data.object;
 *     await creditBalance(store, session.client_reference_id, session.amount_total / 100, {
 *       reference: event.id,
 *       note: 'Stripe checkout',
 *     });
 *   }
 *   res.sendStatus(200);
 * });
 * ```
 */
export async function creditBalance(
  store: KeyStore,
  accountId: string,
  amountUsd: number,
  options: CreditOptions = {},
): Promise<BalanceChangeResult | null> {
  if (!isUsd(amountUsd) || amountUsd <= 0) {
    throw new TypeError(`creditBalance: amountUsd must be a finite number above 0 and at most ${MAX_USD}`);
  }
  const reference = options.reference ?? `credit_${randomBytes(12).toString('base64url')}`;
  const events = dispatcherOf('creditBalance', options);
  const result = await store.changeBalance(balanceChange('creditBalance', accountId, 'credit', amountUsd, { ...options, reference }));
  const event = result === null ? null : creditedEvent(result, reference, 'host');
  if (event !== null) events?.afterResponse(undefined, event);
  return result;
}

/**
 * The `account.credited` event of a credit of `reference` made by `actor`, or `null` when it credited nothing (a
 * reference already in the ledger). `creditBalance` reports it as `host`, the CLI as `cli`.
 */
export function creditedEvent(result: BalanceChangeResult, reference: string, actor: ModelSwitchActor): ModelSwitchEvent | null {
  if (!result.applied) return null;
  const { entry, account } = result;
  return {
    type: 'account.credited',
    accountId: entry.accountId,
    keyId: null,
    actor,
    time: entry.createdAt,
    amount: entry.amount,
    balance: account.balance,
    reference,
  };
}

/**
 * Corrects an account's balance by `amountUsd` (either sign, not 0): the balance and its
 * `adjustment` ledger entry change in one atomic step, idempotent by the required `reference` (the
 * same reference again changes nothing and answers `applied: false` with the first entry). Answers
 * `null` for an unknown account. Throws a TypeError for an amount that is 0, not finite or beyond
 * ±1e12 USD, a bad reference or note, or a balance that would leave ±1e12 (nothing is changed).
 *
 * @example
 * ```ts
 * await adjustBalance(store, accountId, -4.5, { reference: 'ticket-812', note: 'refund of a duplicate top-up' });
 * ```
 */
export async function adjustBalance(
  store: KeyStore,
  accountId: string,
  amountUsd: number,
  options: AdjustmentOptions,
): Promise<BalanceChangeResult | null> {
  if (!isUsd(amountUsd) || amountUsd === 0) {
    throw new TypeError(`adjustBalance: amountUsd must be a finite number other than 0, between -${MAX_USD} and ${MAX_USD}`);
  }
  const events = dispatcherOf('adjustBalance', options ?? {});
  const threshold = options?.balanceLowThreshold ?? DEFAULT_BALANCE_LOW_THRESHOLD;
  if (!isBalanceLowThreshold(threshold)) {
    throw new ConfigurationError(
      'ERR_MS_OPTION',
      `adjustBalance: options.balanceLowThreshold must be a number of USD from 0 to ${MAX_USD}, e.g. ${DEFAULT_BALANCE_LOW_THRESHOLD}`,
    );
  }
  const result = await store.changeBalance(balanceChange('adjustBalance', accountId, 'adjustment', amountUsd, options ?? {}));
  if (result?.applied === true) {
    const { entry } = result;
    if (crossesBelow(roundUsd(entry.balanceAfter - entry.amount), entry.balanceAfter, threshold)) {
      events?.afterResponse(undefined, {
        type: 'account.balance_low',
        accountId: entry.accountId,
        keyId: null,
        actor: 'host',
        time: entry.createdAt,
        balance: entry.balanceAfter,
        threshold,
      });
    }
  }
  return result;
}

/** The dispatcher of a helper's `onEvent`, or `undefined` without one; a bad `onEvent` or `logger` throws a ConfigurationError. */
function dispatcherOf(helper: string, options: { onEvent?: EventHandler; logger?: Logger }): EventDispatcher | undefined {
  const { onEvent, logger } = options;
  if (onEvent !== undefined && typeof onEvent !== 'function') {
    throw new ConfigurationError('ERR_MS_OPTION', `${helper}: options.onEvent must be a function (event) => void, or left out`);
  }
  if (logger !== undefined && (typeof logger !== 'object' || logger === null || typeof logger.error !== 'function')) {
    throw new ConfigurationError(
      'ERR_MS_OPTION',
      `${helper}: options.logger must be an object with warn(message) and error(message), like console`,
    );
  }
  return onEvent === undefined ? undefined : new EventDispatcher(onEvent, hostLogger(logger));
}

/** The store's balance change, its reference and note checked here so the error names the helper. */
function balanceChange(
  helper: string,
  accountId: string,
  type: BalanceChange['type'],
  amount: number,
  options: { reference?: string; note?: string | null; now?: number },
): BalanceChange {
  const { reference, note = null, now = Date.now() } = options;
  if (typeof reference !== 'string' || reference.length === 0 || reference.length > MAX_REFERENCE_LENGTH) {
    throw new TypeError(`${helper}: reference must be a string of 1–${MAX_REFERENCE_LENGTH} characters`);
  }
  if (note !== null && (typeof note !== 'string' || note.length > MAX_NOTE_LENGTH)) {
    throw new TypeError(`${helper}: note must be null or a string of at most ${MAX_NOTE_LENGTH} characters`);
  }
  return { accountId, type, amount, reference, note, now };
}

/** Options of {@link prepareRotation}. */
export interface RotationOptions {
  /** Hashes the new secret. Default: the process-wide `KeyHasher`. */
  hasher?: KeyHasher;
  /** The rotation's time (epoch ms). Default now. */
  now?: number;
  /** How long the current secret keeps working, 0 to 7 days in ms. Default 0: it stops at once. */
  gracePeriodMs?: number;
  /**
   * Count the hash against the hasher's `maxHashesPerAccount` for the record's `accountId` and its
   * `maxQueuedHashes`, rejecting past them with 429 `rate_limit_exceeded` or 503 `server_busy`, as
   * `POST /api/keys/:id/rotate` does. Default false: a host's own calls wait their turn.
   */
  boundedPerAccount?: boolean;
}

/** A rotation ready for `store.rotateKey`, and the new key value, which exists nowhere else. */
export interface PreparedRotation {
  /** The new full key: same handle (and prefix), new secret and checksum. Show it once. */
  key: string;
  /** What `store.rotateKey` takes: the new secret's hash and until when the current secret works. */
  rotation: KeyRotation;
}

/**
 * Makes a key's new secret: the same handle (the prefix identifies the key record, not the secret),
 * a new random secret and checksum, its scrypt hash, and the previous secret's deadline
 * (`now + gracePeriodMs`, or none for 0). Store it with `store.rotateKey(rotation)`, which swaps the
 * hashes atomically. Throws a TypeError for a grace period that is not 0–7 days. `POST
 * /api/keys/:id/rotate` is this plus `rotateKey`.
 *
 * @example
 * ```ts
 * const { key, rotation } = await prepareRotation(record, { gracePeriodMs: 3_600_000 });
 * const rotated = await store.rotateKey(rotation); // null if the key was deleted meanwhile
 * console.log(key, rotated?.previousKeyExpiresAt); // the old secret works for one more hour
 * ```
 */
export async function prepareRotation(
  record: Pick<KeyRecord, 'id' | 'type' | 'handle'> & Partial<Pick<KeyRecord, 'accountId'>>,
  options: RotationOptions = {},
): Promise<PreparedRotation> {
  const grace = options.gracePeriodMs ?? DEFAULT_ROTATION_GRACE_PERIOD_MS;
  if (typeof grace !== 'number' || !Number.isFinite(grace) || grace < 0 || grace > MAX_ROTATION_GRACE_PERIOD_MS) {
    throw new TypeError(`prepareRotation: gracePeriodMs must be a number of ms from 0 to ${MAX_ROTATION_GRACE_PERIOD_MS} (7 days)`);
  }
  const now = options.now ?? Date.now();
  const generated = keyWithHandle(record.type, record.handle);
  const bounded = options.boundedPerAccount === true;
  if (bounded && typeof record.accountId !== 'string')
    throw new TypeError("prepareRotation: boundedPerAccount needs the record's accountId");
  const hash = await (options.hasher ?? defaultKeyHasher()).hash(generated.value, bounded ? { account: record.accountId as string } : {});
  return {
    key: generated.value,
    rotation: { id: record.id, hash, previousKeyExpiresAt: grace > 0 ? now + grace : null, now },
  };
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
  /**
   * The models a proxy key may call: exact names or prefixes ending in `*` (`['gpt-4o-mini', 'claude-*']`);
   * `null`/omitted allows every model.
   */
  models?: string[] | null;
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
    models: input.models == null ? null : [...input.models],
    previousHash: null,
    previousKeyExpiresAt: null,
  };
  return { record, key: generated.value };
}
