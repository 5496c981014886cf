import type { IncomingMessage, ServerResponse } from 'node:http';
import { KEY_LENGTH, type ParsedApiKey, hasKeyShape, hasValidChecksum, keyParts } from '../keys/api-key.js';
import type { KeyType } from '../store/types.js';
import { readBearerToken } from '../http/bearer.js';
import { MISSING_OR_INVALID_HEADER, ModelSwitchError, answerWithoutStack, authenticationError, invalidApiKey } from '../errors/errors.js';
import type { KeyHasher } from '../keys/hashing.js';
import { intervalToMs, rateLimitExceeded } from './rate-limit.js';
import type { RateLimitHeaderWriter } from './rate-limit-headers.js';
import { limitPeriod, usageInPeriod } from '../store/spend-rules.js';
import type { Logger } from '../log.js';
import { StoreGuard } from '../store/guard.js';
import type { ResolvedAuthOptions } from './options.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import type { AccountRecord, Awaitable, CounterState, KeyRecord, KeyStore, RateLimitSetting } from '../store/types.js';

/** A verified key as the middleware hands it on: the record without its hashes. */
export type AuthenticatedKey = Omit<KeyRecord, 'hash' | 'previousHash'>;

/** What `req.modelSwitch` holds after authentication; read fresh from the store for this request. */
export interface ModelSwitchContext {
  key: AuthenticatedKey;
  account: AccountRecord;
  /** The key's USD usage in its current limit period. */
  usage: number;
  /** The key's current limit period (see `KeyRecord.usagePeriod`). */
  period: string | null;
  /** The rate limit in force for this key (its own, or the host default), or `null` for none. */
  rateLimit: RateLimitSetting | null;
}

/** A request after `modelSwitchAuth` (or `keysRouter`) let it through. */
export type AuthenticatedRequest = IncomingMessage & { modelSwitch: ModelSwitchContext };

const TYPE_MISMATCH: Record<KeyType, string> = {
  proxy: 'This endpoint needs a proxy key (ms-). Billing keys (mk-) only work with the management API (/api).',
  billing: 'This endpoint needs a billing key (mk-). Proxy keys (ms-) only work with the inference API (/v1).',
};
/** Write `lastUsedAt` at most this often per key, so the hot path stays read-only. */
const TOUCH_INTERVAL_MS = 60_000;
/** At most one log line a minute about verifications refused for scrypt load. */
const BUSY_LOG_INTERVAL_MS = 60_000;

/** Checks a request's key and rate limit: the hot path of DESIGN.md. One per factory call. */
export class Authenticator {
  readonly keyType: KeyType;
  readonly guard: StoreGuard;
  readonly now: () => number;
  private readonly hasher: KeyHasher;
  private readonly defaultRateLimit: Readonly<RateLimitSetting> | null;
  /** Writes the rate-limit headers the factory's `standardHeaders` and `legacyHeaders` chose (`null`: none). */
  private readonly rateLimitHeaders: RateLimitHeaderWriter | null;
  /** The host's logger, safe to call (see `hostLogger`): the factories log through it too. */
  readonly logger: Logger;
  /** The host's metrics, or `null`. */
  readonly metrics: GatewayMetrics | null;
  /** When this process last wrote each key's lastUsedAt. */
  private readonly touchedAt = new Map<number, number>();
  /** Keys admitted on the async path, by handle: what `admitSeen` reads and counts in one go. */
  private readonly seen = new Map<string, SeenKey>();
  /** Each key's last counter name: the same string every request, so the store's lookup hashes it once. */
  private readonly counterNames = new Map<number, { windowMs: number; name: string }>();
  /** `intervalToMs` of each rate limit interval seen (`null`: unreadable). */
  private readonly windows = new Map<string, number | null>();
  /** When a refusal for scrypt load (`verification_busy`) was last logged. */
  private busyLoggedAt = Number.NEGATIVE_INFINITY;

  /** `options`: resolved once by the factory (`resolveAuthOptions`), so nothing here checks them again. */
  constructor(
    readonly store: KeyStore,
    options: ResolvedAuthOptions,
  ) {
    this.keyType = options.keyType;
    this.guard = new StoreGuard(store, options);
    this.hasher = options.hasher;
    this.now = options.now;
    this.logger = options.logger;
    this.defaultRateLimit = options.defaultRateLimit;
    this.metrics = options.metrics;
    this.metrics?.watchQueue(options.hasher);
    this.rateLimitHeaders = options.rateLimitHeaders;
  }

  /**
   * Verifies the request's key and counts it against the key's rate limit. Sets `RateLimit-*`
   * headers; throws a `ModelSwitchError` (401/403/429/503) when the request does not pass.
   *
   * One path for every store: the hot path's store calls may answer at once or with a promise
   * (`Awaitable`). When a key is already in the verified-key cache and the store answers at once
   * (an in-process store such as `MemoryKeyStore`), this answers synchronously, without a promise.
   * Otherwise it returns a promise; for a key admitted before on a store that answers promises it
   * reads the key and the account and hits the counter in parallel (one store round trip).
   */
  admit(req: IncomingMessage, res: ServerResponse): ModelSwitchContext | Promise<ModelSwitchContext> {
    const metrics = this.metrics;
    if (metrics === null) return this.admitKey(req, res);
    const started = performance.now();
    const done = (outcome: string) => metrics.authentication((performance.now() - started) / 1000, outcome);
    let admitted: ModelSwitchContext | Promise<ModelSwitchContext>;
    try {
      admitted = this.admitKey(req, res);
    } catch (error) {
      done(outcomeOf(error));
      throw error;
    }
    if (!(admitted instanceof Promise)) {
      done('ok');
      return admitted;
    }
    return admitted.then(
      (context) => {
        done('ok');
        return context;
      },
      (error: unknown) => {
        done(outcomeOf(error));
        throw error;
      },
    );
  }

  /** {@link admit} without its timing. */
  private admitKey(req: IncomingMessage, res: ServerResponse): ModelSwitchContext | Promise<ModelSwitchContext> {
    const token = presentedToken(req);
    // Only the length before the cache (one SHA-256), so nothing longer is ever hashed: a key found
    // there passed the shape and checksum checks when it verified. Any other key is checked for both
    // before the store is read.
    if (token.length !== KEY_LENGTH) throw invalidApiKey();
    const verifiedHash = this.hasher.verifiedHash(token);
    if (verifiedHash === undefined && !(hasKeyShape(token) && hasValidChecksum(token))) throw invalidApiKey();
    const parsed = keyParts(token);
    if (parsed.type !== this.keyType) throw authenticationError('wrong_key_type', TYPE_MISMATCH[this.keyType], true);
    // `seen` fills only on a store that answers promises: an in-process store never looks it up.
    if (verifiedHash !== undefined && this.seen.size > 0) {
      const seen = this.seen.get(parsed.handle);
      // Only for the very key that verified (never a guess at its handle): a guess must not count
      // against the key's rate limit.
      if (seen !== undefined && verifiedHash === seen.hash) return this.admitSeen(parsed, seen, res, verifiedHash);
    }
    // What a store call throws is a store failure (503), like a rejection.
    let found: Awaitable<Readonly<KeyRecord> | null>;
    try {
      found = this.store.getKeyByHandle(parsed.handle);
    } catch (error) {
      throw this.guard.fail('getKeyByHandle', error);
    }
    if (isPending(found)) return this.admitAsync(parsed, res, this.guard.watch('getKeyByHandle', found), verifiedHash, true);
    const record = found;
    if (!record || record.type !== parsed.type) throw invalidApiKey();
    // Not verified yet (a cold key, or a guess), or the previous secret of a rotation (its deadline
    // is checked there): asynchronously. `verifiedHash === undefined` too: a broken store's record
    // without a hash must not pass for one the key verified against.
    if (verifiedHash === undefined || verifiedHash !== record.hash) return this.admitAsync(parsed, res, record, verifiedHash, false);
    const now = this.now();
    this.checkUsable(record, now);
    let read: Awaitable<Readonly<AccountRecord> | null>;
    try {
      read = this.store.getAccount(record.accountId);
    } catch (error) {
      throw this.guard.fail('getAccount', error);
    }
    const rateLimit = record.rateLimit ?? this.defaultRateLimit;
    const windowMs = this.windowOf(record.id, rateLimit);
    if (isPending(read)) return this.finish(record, this.guard.watch('getAccount', read), rateLimit, windowMs, res, now);
    const account = existing(read);
    if (rateLimit !== null && windowMs !== null) {
      let counter: Awaitable<CounterState>;
      try {
        counter = this.store.hitCounter(this.counterName(record.id, windowMs), windowMs, now);
      } catch (error) {
        throw this.guard.fail('hitCounter', error);
      }
      if (isPending(counter)) {
        return this.guard.watch('hitCounter', counter).then((state) => {
          this.applyCounter(rateLimit, windowMs, state, res, now);
          return this.context(record, account, now);
        });
      }
      this.applyCounter(rateLimit, windowMs, counter, res, now);
    }
    this.guard.succeeded();
    return this.context(record, account, now);
  }

  /**
   * The rest of `admit` once the key's record is on its way (`found`): verifies it (scrypt unless
   * `verifiedHash` matches), then reads the account and hits the counter in parallel. `remember`:
   * the store answered with a promise, so the key's next request may take `admitSeen`. `counted`:
   * the hit `admitSeen` already made, used instead of a second one when it went to this record's
   * counter (a request is counted once).
   */
  private async admitAsync(
    parsed: ParsedApiKey,
    res: ServerResponse,
    found: Awaitable<Readonly<KeyRecord> | null>,
    verifiedHash: string | undefined,
    remember: boolean,
    counted?: CountedHit,
  ): Promise<ModelSwitchContext> {
    const record = await this.verifiedRecord(parsed, await found, verifiedHash);
    const now = this.now();
    this.checkUsable(record, now);
    const rateLimit = record.rateLimit ?? this.defaultRateLimit;
    const windowMs = this.windowOf(record.id, rateLimit);
    const alreadyCounted =
      counted !== undefined && rateLimit !== null && counted.keyId === record.id && counted.windowMs === windowMs ? counted : undefined;
    if (alreadyCounted !== undefined && rateLimit !== null)
      this.applyCounter(rateLimit, alreadyCounted.windowMs, alreadyCounted.counter, res, now);
    const [account] = await Promise.all([
      this.accountOf(record),
      alreadyCounted === undefined ? this.hitRateLimit(record.id, rateLimit, windowMs, res, now) : undefined,
    ]);
    if (remember) this.remember(parsed.handle, record, windowMs);
    return this.context(record, account, now);
  }

  /** The end of `admit` for a store that answered the key at once but the account with a promise. */
  private async finish(
    record: Readonly<KeyRecord>,
    account: Promise<Readonly<AccountRecord> | null>,
    rateLimit: Readonly<RateLimitSetting> | null,
    windowMs: number | null,
    res: ServerResponse,
    now: number,
  ): Promise<ModelSwitchContext> {
    const [read] = await Promise.all([account, this.hitRateLimit(record.id, rateLimit, windowMs, res, now)]);
    return this.context(record, existing(read), now);
  }

  /**
   * A key this process admitted before, on a store that answers promises: reads the key and the
   * account and counts the hit all at once (one store round trip instead of two), with the account
   * and the rate-limit window the key had last time; the fresh record then confirms them. When the
   * key changed in a way only the full path handles (deleted, re-created, new hash), takes it.
   */
  private async admitSeen(parsed: ParsedApiKey, seen: SeenKey, res: ServerResponse, verifiedHash: string): Promise<ModelSwitchContext> {
    const now = this.now();
    const { keyId, accountId, windowMs: seenWindow } = seen;
    const [record, account, counter] = await Promise.all([
      this.guard.run('getKeyByHandle', () => this.store.getKeyByHandle(parsed.handle)),
      this.guard.run('getAccount', () => this.store.getAccount(accountId)),
      seenWindow === null
        ? null
        : this.guard.run('hitCounter', () => this.store.hitCounter(this.counterName(keyId, seenWindow), seenWindow, now)),
    ]);
    if (!record || record.id !== keyId || record.hash !== seen.hash || record.accountId !== accountId || record.type !== parsed.type) {
      this.seen.delete(parsed.handle);
      const fresh = this.guard.run('getKeyByHandle', () => this.store.getKeyByHandle(parsed.handle));
      const counted = seenWindow === null || counter === null ? undefined : { keyId, windowMs: seenWindow, counter };
      return this.admitAsync(parsed, res, fresh, verifiedHash, true, counted);
    }
    this.checkUsable(record, now);
    const owner = existing(account);
    const rateLimit = record.rateLimit ?? this.defaultRateLimit;
    const windowMs = this.windowOf(record.id, rateLimit);
    if (windowMs !== seenWindow) {
      // The key's rate-limit window changed since: count this request in the new window (the hit
      // above went to the old window's counter, which nothing reads any more).
      this.remember(parsed.handle, record, windowMs);
      await this.hitRateLimit(record.id, rateLimit, windowMs, res, now);
    } else if (rateLimit !== null && windowMs !== null && counter !== null) {
      this.applyCounter(rateLimit, windowMs, counter, res, now);
    }
    return this.context(record, owner, now);
  }

  /** Keeps what a key's next request needs to fetch its state in one round trip (see `admitSeen`). */
  private remember(handle: string, record: Readonly<KeyRecord>, windowMs: number | null): void {
    if (this.seen.size >= 100_000) this.seen.clear();
    this.seen.set(handle, { keyId: record.id, accountId: record.accountId, hash: record.hash, windowMs });
  }

  /**
   * The key's record once its secret is verified (`record`: what the store answered for its handle;
   * `verifiedHash`: the hash the key verified against, if cached); throws 401.
   *
   * During a rotation's grace period the record holds two hashes: the current secret's and the
   * previous one's, which passes only while the clock is before `previousKeyExpiresAt` (checked here,
   * after scrypt, on every request: the verified-key cache remembers which hash a key matched, never
   * that it may pass). A rotated-out secret is still recognised (cached here, or matched against
   * `previousHash` by scrypt once), so its holders are refused without scrypt work and without
   * spending the handle's wrong-secret turns, which would lock the new secret out of processes that
   * have not cached it yet.
   */
  private async verifiedRecord(
    parsed: ParsedApiKey,
    record: Readonly<KeyRecord> | null,
    verifiedHash: string | undefined,
  ): Promise<Readonly<KeyRecord>> {
    if (!record || record.type !== parsed.type) throw invalidApiKey();
    const previous = record.previousHash;
    // A key that verified before is never run through scrypt again: its cached hash either is one the
    // record holds, or the key's secret was rotated since (a key value's hash never changes otherwise)
    // and it is refused below. `matched !== undefined`: a broken store's record without a hash must
    // not match a key that matched nothing.
    const matched = verifiedHash ?? (await this.verify(parsed, record.hash, previous));
    if (matched !== undefined && matched === record.hash) return record;
    if (matched !== undefined && matched === previous && this.now() < (record.previousKeyExpiresAt ?? Number.NEGATIVE_INFINITY)) {
      return record;
    }
    throw invalidApiKey();
  }

  /**
   * scrypt through the hasher: which of the record's hashes the key matches (the current one first).
   * A verification refused because too many already wait for scrypt (`maxQueuedVerifications`)
   * answers 503 `verification_busy`; the first one of each minute is logged.
   */
  private async verify(parsed: ParsedApiKey, hash: string, previousHash: string | null): Promise<string | undefined> {
    try {
      // The hasher skips a `null` previous hash.
      return await this.hasher.matchingHash(parsed.value, [hash, previousHash], parsed.handle);
    } catch (error) {
      if (error instanceof ModelSwitchError && error.code === 'verification_busy') {
        const now = this.now();
        if (!(now - this.busyLoggedAt < BUSY_LOG_INTERVAL_MS)) {
          this.busyLoggedAt = now;
          this.logger.warn(
            'modelswitch-keys: too many key verifications are waiting for scrypt; new ones are refused with 503 verification_busy until the queue drains (KeyHasher maxQueuedVerifications)',
          );
        }
      }
      throw error;
    }
  }

  /** Throws 401 for an expired key, 403 for a deactivated one; writes `lastUsedAt` at most once a minute. */
  private checkUsable(record: Readonly<KeyRecord>, now: number): void {
    if (record.expiresAt !== null && now >= record.expiresAt) {
      throw authenticationError('expired_api_key', 'API key has expired', true);
    }
    if (!record.active) throw answerWithoutStack('key_deactivated', 'API key has been deactivated');
    const touched = this.touchedAt.get(record.id);
    if (
      (record.lastUsedAt === null || now - record.lastUsedAt >= TOUCH_INTERVAL_MS) &&
      (touched === undefined || now - touched >= TOUCH_INTERVAL_MS)
    ) {
      // A burst of requests all read the same old lastUsedAt: write it once per key and minute.
      if (this.touchedAt.size >= 100_000) this.touchedAt.clear();
      this.touchedAt.set(record.id, now);
      const id = record.id;
      this.guard
        .run('touchKey', () => this.store.touchKey(id, now))
        .catch(() => {
          // Already logged by the guard; a missed lastUsedAt update must not fail the request.
        });
    }
  }

  private async accountOf(record: Readonly<KeyRecord>): Promise<AccountRecord> {
    return existing(await this.guard.run('getAccount', () => this.store.getAccount(record.accountId)));
  }

  private context(record: Readonly<KeyRecord>, account: AccountRecord, now: number): ModelSwitchContext {
    // The host gets its own copy of the key, field by field rather than a rest spread, as this runs
    // on every request.
    const ownLimit = record.rateLimit === null ? null : { ...record.rateLimit };
    const key: AuthenticatedKey = {
      id: record.id,
      handle: record.handle,
      type: record.type,
      accountId: record.accountId,
      name: record.name,
      prefix: record.prefix,
      active: record.active,
      createdAt: record.createdAt,
      expiresAt: record.expiresAt,
      lastUsedAt: record.lastUsedAt,
      usage: record.usage,
      usagePeriod: record.usagePeriod,
      reserved: record.reserved,
      limit: record.limit,
      limitReset: record.limitReset,
      rateLimit: ownLimit,
      models: record.models === null ? null : [...record.models],
      previousKeyExpiresAt: record.previousKeyExpiresAt,
    };
    const period = limitPeriod(record.limitReset, now);
    return { key, account, usage: usageInPeriod(record, period), period, rateLimit: ownLimit ?? this.defaultRateLimit };
  }

  /** Counts a hit in the window `windowOf` gave for `limit` (none when either is null). */
  private async hitRateLimit(
    keyId: number,
    limit: RateLimitSetting | null,
    windowMs: number | null,
    res: ServerResponse,
    now: number,
  ): Promise<void> {
    if (limit === null || windowMs === null) return;
    const counter = await this.guard.run('hitCounter', () => this.store.hitCounter(this.counterName(keyId, windowMs), windowMs, now));
    this.applyCounter(limit, windowMs, counter, res, now);
  }

  /** The store counter of a key's rate-limit window: `requests:<key id>:<window ms>`. */
  private counterName(keyId: number, windowMs: number): string {
    const known = this.counterNames.get(keyId);
    if (known !== undefined && known.windowMs === windowMs) return known.name;
    if (this.counterNames.size >= 100_000) this.counterNames.clear();
    const name = `requests:${keyId}:${windowMs}`;
    this.counterNames.set(keyId, { windowMs, name });
    return name;
  }

  /** The window of `limit` in ms, or `null` for no limit (logged when the interval is unreadable). */
  private windowOf(keyId: number, limit: RateLimitSetting | null): number | null {
    if (limit === null) return null;
    let windowMs = this.windows.get(limit.interval);
    if (windowMs === undefined) {
      windowMs = intervalToMs(limit.interval);
      // Intervals are few ("10s", "1m"…); the bound only guards against a store full of odd ones.
      if (this.windows.size >= 1000) this.windows.clear();
      this.windows.set(limit.interval, windowMs);
    }
    if (windowMs === null) {
      this.logger.warn(`modelswitch-keys: key ${keyId} has an unreadable rate limit interval; not rate limiting it`);
    }
    return windowMs;
  }

  /** Sets the `RateLimit-*` headers from the counter after this request's hit; throws 429 when over. */
  private applyCounter(limit: RateLimitSetting, windowMs: number, counter: CounterState, res: ServerResponse, now: number): void {
    this.rateLimitHeaders?.(res, limit, windowMs, counter.count, counter.resetAt, now);
    if (counter.count > limit.requests) {
      throw rateLimitExceeded(
        `Rate limit exceeded: ${limit.requests} requests per ${limit.interval} for this key. Retry after the window resets.`,
        counter.resetAt,
        now,
      );
    }
  }
}

/** A hit `admitSeen` counted before it found the key changed: its counter's key id and window, and the state it answered. */
interface CountedHit {
  readonly keyId: number;
  readonly windowMs: number;
  readonly counter: CounterState;
}

/** What the last admitted request of a key showed (see `Authenticator.admitSeen`). */
interface SeenKey {
  keyId: number;
  accountId: string;
  /** The stored hash the key verified against. */
  hash: string;
  /** The rate-limit window counted (`null`: none). */
  windowMs: number | null;
}

/** The request's Bearer token; throws 401 when there is none or the header is not a Bearer one. */
function presentedToken(req: IncomingMessage): string {
  const credentials = readBearerToken(req);
  if (credentials.kind === 'invalid') {
    throw authenticationError('invalid_api_key', MISSING_OR_INVALID_HEADER, credentials.presented);
  }
  return credentials.token;
}

/** Whether a store call answered a promise (any thenable) rather than the value itself. */
function isPending<T>(answer: Awaitable<T>): answer is Promise<T> {
  return typeof (answer as { then?: unknown } | null)?.then === 'function';
}

/**
 * The key's account, or a 401: a key whose account is gone cannot be used, like an unknown key.
 * Falsy rather than `null` only: a store answering `undefined` must not let the key through.
 */
function existing<T extends Readonly<AccountRecord>>(account: T | null | undefined): T {
  if (!account) throw invalidApiKey();
  return account;
}

/** The metrics outcome of a refused authentication: its error code (anything else is a bug, `internal_error`). */
function outcomeOf(error: unknown): string {
  return error instanceof ModelSwitchError ? error.code : 'internal_error';
}
