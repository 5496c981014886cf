import * as crypto from 'node:crypto';
import { createHash } from 'node:crypto';
import * as scryptModule from 'scrypt-kdf';
import {
  DEFAULT_FAILURE_TTL_MS,
  DEFAULT_HANDLE_FAILURE_LIMIT,
  DEFAULT_HANDLE_FAILURE_WINDOW_MS,
  DEFAULT_MAX_CONCURRENT_HASHES,
  DEFAULT_MAX_HASHES_PER_ACCOUNT,
  DEFAULT_MAX_QUEUED_HASHES,
  DEFAULT_MAX_QUEUED_VERIFICATIONS,
  DEFAULT_SCRYPT,
  DEFAULT_VERIFIED_KEY_CACHE_SIZE,
} from '../defaults.js';
import { ConfigurationError } from '../errors/configuration-error.js';
import { type ModelSwitchError, answerWithoutStack } from '../errors/errors.js';

// scrypt-kdf 4 is ESM with only a default export (a class with static kdf/verify), while its
// typings declare named exports: named imports are undefined at run time. Take the default
// when there is one, so both the real module and the typings' shape work.
const Scrypt: Pick<typeof scryptModule, 'kdf' | 'verify'> =
  (scryptModule as unknown as { default?: Pick<typeof scryptModule, 'kdf' | 'verify'> }).default ?? scryptModule;

/** scrypt cost parameters. The defaults (logN 15, r 8, p 1) take about 32 MiB and ~50–100 ms per hash. */
export interface ScryptParameters {
  /** log2 of the CPU/memory cost N. Default 15. */
  logN: number;
  /** Block size. Default 8. */
  r: number;
  /** Parallelisation. Default 1. */
  p: number;
}

/** Options of {@link KeyHasher}. Every field is optional; `undefined` means the default. */
export interface KeyHasherOptions {
  /** scrypt parameters for new hashes (old hashes keep the parameters they were made with). */
  scrypt?: Partial<ScryptParameters>;
  /** How many verified keys the in-process cache keeps (least recently used go first). Default 10,000. */
  cacheSize?: number;
  /** How many scrypt runs may be in flight at once; more wait their turn. Default 2. */
  maxConcurrentHashes?: number;
  /** How long a failed verification is remembered, so repeating it costs no scrypt. Default 60,000 ms. */
  failureTtlMs?: number;
  /**
   * How many scrypt runs per handle may end in a wrong secret within any `handleFailureWindowMs`,
   * spread evenly: one every `handleFailureWindowMs / handleFailureLimit` ms. In between, an
   * uncached key with that handle is refused without running scrypt. Keys already in the verified
   * cache are never affected. `null` turns the throttle off. Default 2 (one run every 30 s).
   */
  handleFailureLimit?: number | null;
  /** The window of `handleFailureLimit`. Default 60,000 ms. */
  handleFailureWindowMs?: number;
  /**
   * How many verifications may wait for a scrypt slot at once, besides the `maxConcurrentHashes`
   * running (hashes of new keys wait in a queue of their own, see `maxQueuedHashes`). Beyond it,
   * a verification that needs scrypt is refused at once (`verify` rejects with a 503
   * `verification_busy` {@link ModelSwitchError} carrying `Retry-After`), so a flood over many real
   * handles cannot queue unbounded work. Cached keys are never affected. `null`: no bound.
   * Default 256 (about 13–14 s of work at logN 15 on two slots).
   */
  maxQueuedVerifications?: number | null;
  /**
   * How many hashes of new keys one account may have running or waiting at once, when the hash is
   * made for an account (`hash(key, { account })`, as `keysRouter` does for `POST /keys`). Beyond
   * it, `hash` rejects at once with a 429 `rate_limit_exceeded` {@link ModelSwitchError} carrying
   * `Retry-After`, so one account creating keys in a loop cannot fill the queue. Default 4.
   */
  maxHashesPerAccount?: number;
  /**
   * How many hashes of new keys may wait for a scrypt slot at once (all accounts). Beyond it, a hash
   * made for an account rejects at once with a 503 `server_busy` carrying `Retry-After`; a hash made
   * for no account (the host's own `issueKey`) still waits. `null`: no bound. Default 32.
   */
  maxQueuedHashes?: number | null;
  /** Clock, injectable for tests. Default `Date.now`. */
  now?: () => number;
}

// One-shot `crypto.hash` (Node ≥ 20.12) skips the Hash object that `createHash` allocates.
const oneShotHash = (crypto as { hash?: (algorithm: string, data: string, encoding: 'base64') => string }).hash;

function fingerprint(key: string): string {
  return oneShotHash ? oneShotHash('sha256', key, 'base64') : createHash('sha256').update(key).digest('base64');
}

/** A turn of a handle's wrong-secret budget, given back if its key turns out right. */
interface FailureSlot {
  handle: string;
  /** When the handle's next run was allowed before this one took its turn (undefined: any time). */
  previous: number | undefined;
  /** When the next run is allowed now. */
  granted: number;
}

/** One cached value and whether it was read since the evictor last passed it. */
interface CacheEntry<V> {
  value: V;
  used: boolean;
}

/**
 * A map with a fixed bound that evicts entries not read recently first ("second chance", the CLOCK
 * approximation of least-recently-used): a hit only sets a flag, where a true LRU moves the entry
 * (a delete and an insert on every hit of the hot path).
 */
class BoundedCache<V> {
  private readonly entries = new Map<string, CacheEntry<V>>();
  constructor(private readonly bound: number) {}
  get(id: string): V | undefined {
    const entry = this.entries.get(id);
    if (entry === undefined) return undefined;
    entry.used = true;
    return entry.value;
  }
  set(id: string, value: V): void {
    const entry = this.entries.get(id);
    if (entry !== undefined) {
      entry.value = value;
      entry.used = true;
      return;
    }
    // Make room first, so the new entry is never the one evicted.
    if (this.entries.size >= this.bound) this.evictOne();
    this.entries.set(id, { value, used: false });
  }
  delete(id: string): void {
    this.entries.delete(id);
  }
  get size(): number {
    return this.entries.size;
  }
  /** Evicts the oldest entry not read since it was last passed; read ones move to the back, unflagged. */
  private evictOne(): void {
    for (const [id, entry] of this.entries) {
      this.entries.delete(id);
      if (!entry.used) return;
      entry.used = false;
      this.entries.set(id, entry);
    }
  }
}

/**
 * Hashes keys with scrypt and verifies presented keys against stored hashes.
 *
 * - A bounded cache remembers (SHA-256 of key → stored hash) pairs that verified, so a repeat call
 *   costs one hash comparison. A cache hit only counts when the record's current hash is the one
 *   that verified, so a re-created record is never trusted by mistake.
 * - Concurrent verifications of the same key and hash share one scrypt run.
 * - At most `maxConcurrentHashes` scrypt runs are in flight; the rest queue, at most
 *   `maxQueuedVerifications` verifications of them: beyond that, `verify` rejects at once with a
 *   503 `verification_busy` error instead of queueing more (a cached key is never refused).
 * - Verifications go first: hashes of new keys wait in a queue of their own that gets a free slot
 *   only when no verification waits, so creating keys never delays another account's requests by
 *   more than the runs already started. Hashes made for an account are bounded per account
 *   (`maxHashesPerAccount`, 429) and in all (`maxQueuedHashes`, 503).
 * - A failed verification is remembered for `failureTtlMs` (never as valid), so a flood of one
 *   wrong key costs one scrypt run.
 * - Wrong secrets are throttled per handle: at most `handleFailureLimit` scrypt runs per handle in
 *   any `handleFailureWindowMs` may fail, one every window / limit (runs still in flight count as
 *   failures until they succeed), so a flood of a real handle with ever-new wrong secrets costs a
 *   steady, bounded trickle of scrypt. In between, an uncached key with that handle is refused
 *   without scrypt.
 *
 * Trade-off of the throttle: scrypt cannot tell a legitimate key from a guess without running, so
 * while one handle is being flooded, the legitimate key of that handle is refused too if it is not
 * in the verified cache yet (first use since this process started, or evicted from the cache).
 * Keys that verified once stay cached and keep working; the lock-out lasts while the flood does and
 * only hits a handle whose value the attacker knows (handles are not shown anywhere but inside the
 * key itself). Set `handleFailureLimit: null` to trade the bound on scrypt work for no lock-out.
 *
 * @example
 * ```ts
 * const hasher = new KeyHasher({ scrypt: { logN: 15 }, cacheSize: 50_000 });
 * const hash = await hasher.hash(key);
 * await hasher.verify(key, hash, handle); // true, and cached
 * ```
 */
export class KeyHasher {
  readonly scrypt: Readonly<ScryptParameters>;
  private readonly verified: BoundedCache<string>;
  /** Until when each (key fingerprint, hash) pair that failed is known to fail. */
  private readonly failed: BoundedCache<number>;
  private readonly inFlight = new Map<string, Promise<string | undefined>>();
  private readonly maxConcurrent: number;
  private readonly failureTtlMs: number;
  /** When each recently guessed handle may run scrypt for a wrong secret again. */
  private readonly handleNextRun: BoundedCache<number>;
  private readonly handleFailureLimit: number | null;
  private readonly handleFailureWindowMs: number;
  private readonly now: () => number;
  private running = 0;
  /** Verifications waiting for a slot: what `maxQueuedVerifications` bounds. Served before {@link waitingHashes}. */
  private readonly waitingVerifications: Array<() => void> = [];
  /** Hashes of new keys waiting for a slot: what `maxQueuedHashes` bounds. */
  private readonly waitingHashes: Array<() => void> = [];
  /** Hashes of new keys running or waiting, by the account they are made for. */
  private readonly hashesByAccount = new Map<string, number>();
  private readonly maxHashesPerAccount: number;
  private readonly maxQueuedHashes: number | null;
  /** How many hashes of new keys were refused, per account (429) or for the queue (503). */
  refusedHashes = 0;
  /** How many scrypt runs this hasher has started (hashes and verifications); for tests and benchmarks. */
  scryptRuns = 0;
  /** How many verifications the per-handle throttle refused without running scrypt. */
  throttledVerifications = 0;
  /** How many verifications were refused because `maxQueuedVerifications` were already waiting. */
  refusedVerifications = 0;
  private readonly maxQueued: number | null;
  /** Recent scrypt run time (ms, moving average), for the `Retry-After` of a refused verification. */
  private runMs = 100;

  constructor(options: KeyHasherOptions = {}) {
    this.scrypt = { ...DEFAULT_SCRYPT, ...definedOnly(options.scrypt ?? {}) };
    const cacheSize = options.cacheSize ?? DEFAULT_VERIFIED_KEY_CACHE_SIZE;
    this.maxConcurrent = options.maxConcurrentHashes ?? DEFAULT_MAX_CONCURRENT_HASHES;
    this.failureTtlMs = options.failureTtlMs ?? DEFAULT_FAILURE_TTL_MS;
    this.now = options.now ?? Date.now;
    this.handleFailureLimit = options.handleFailureLimit === undefined ? DEFAULT_HANDLE_FAILURE_LIMIT : options.handleFailureLimit;
    this.handleFailureWindowMs = options.handleFailureWindowMs ?? DEFAULT_HANDLE_FAILURE_WINDOW_MS;
    this.maxQueued = options.maxQueuedVerifications === undefined ? DEFAULT_MAX_QUEUED_VERIFICATIONS : options.maxQueuedVerifications;
    this.maxHashesPerAccount = options.maxHashesPerAccount ?? DEFAULT_MAX_HASHES_PER_ACCOUNT;
    this.maxQueuedHashes = options.maxQueuedHashes === undefined ? DEFAULT_MAX_QUEUED_HASHES : options.maxQueuedHashes;
    const counts: Record<string, number> = {
      cacheSize,
      maxConcurrentHashes: this.maxConcurrent,
      handleFailureWindowMs: this.handleFailureWindowMs,
      maxHashesPerAccount: this.maxHashesPerAccount,
    };
    if (this.handleFailureLimit !== null) counts.handleFailureLimit = this.handleFailureLimit;
    for (const [name, value] of Object.entries(counts)) {
      if (!Number.isInteger(value) || value < 1) {
        throw hasherOption(`${name} must be a positive integer, got ${String(value)}`);
      }
    }
    if (this.maxQueued !== null && (!Number.isInteger(this.maxQueued) || this.maxQueued < 0)) {
      throw hasherOption(`maxQueuedVerifications must be an integer ≥ 0 (or null for no bound), got ${String(this.maxQueued)}`);
    }
    if (this.maxQueuedHashes !== null && (!Number.isInteger(this.maxQueuedHashes) || this.maxQueuedHashes < 0)) {
      throw hasherOption(`maxQueuedHashes must be an integer ≥ 0 (or null for no bound), got ${String(this.maxQueuedHashes)}`);
    }
    if (typeof this.failureTtlMs !== 'number' || !(this.failureTtlMs >= 0) || !Number.isFinite(this.failureTtlMs)) {
      throw hasherOption(
        `failureTtlMs must be a number of milliseconds ≥ 0, e.g. ${DEFAULT_FAILURE_TTL_MS}, got ${String(this.failureTtlMs)}`,
      );
    }
    if (typeof this.now !== 'function') throw hasherOption('now must be a function answering epoch ms, like Date.now');
    const { logN, r, p } = this.scrypt;
    if (!Number.isInteger(logN) || logN < 1 || logN > 30 || !Number.isInteger(r) || r < 1 || !Number.isInteger(p) || p < 1) {
      throw hasherOption('scrypt needs integer logN (1–30), r ≥ 1 and p ≥ 1, e.g. { logN: 15, r: 8, p: 1 }');
    }
    this.verified = new BoundedCache(cacheSize);
    this.failed = new BoundedCache(cacheSize);
    this.handleNextRun = new BoundedCache(cacheSize);
  }

  /** How many scrypt runs (verifications and hashes of new keys) are waiting for a slot now: the metrics' queue depth. */
  get queued(): number {
    return this.waitingVerifications.length + this.waitingHashes.length;
  }

  /** How many scrypt runs are running or waiting for a slot now (for benchmarks and health checks). */
  get hashesInFlight(): number {
    return this.running + this.waitingVerifications.length + this.waitingHashes.length;
  }

  /** How many verified keys the cache holds now (never more than `cacheSize`). */
  get cachedKeys(): number {
    return this.verified.size;
  }

  /**
   * Hashes a new key for storage: scrypt-kdf's self-describing format, base64. It waits behind every
   * verification. Made for an `account`, it is bounded: it rejects at once with a 429
   * `rate_limit_exceeded` when the account already has `maxHashesPerAccount` hashes running or
   * waiting, or a 503 `server_busy` when `maxQueuedHashes` wait already (both with `Retry-After`).
   *
   * @example
   * ```ts
   * const hash = await hasher.hash(key.value, { account: 'acct_1' });
   * ```
   */
  async hash(key: string, options: { account?: string } = {}): Promise<string> {
    const account = options.account;
    if (account === undefined) return this.derive(key);
    const held = this.hashesByAccount.get(account) ?? 0;
    if (held >= this.maxHashesPerAccount) {
      this.refusedHashes++;
      throw answerWithoutStack(
        'rate_limit_exceeded',
        `Too many API keys are being created for this account right now (at most ${this.maxHashesPerAccount} at once). Create them one after another.`,
        { headers: { 'Retry-After': this.retryAfter() } },
      );
    }
    const mustWait = this.running >= this.maxConcurrent;
    if (mustWait && this.maxQueuedHashes !== null && this.waitingHashes.length >= this.maxQueuedHashes) {
      this.refusedHashes++;
      throw answerWithoutStack('server_busy', 'Too many API keys are being created right now. Please retry shortly.', {
        headers: { 'Retry-After': this.retryAfter() },
      });
    }
    this.hashesByAccount.set(account, held + 1);
    try {
      return await this.derive(key);
    } finally {
      const left = (this.hashesByAccount.get(account) ?? 1) - 1;
      if (left > 0) this.hashesByAccount.set(account, left);
      else this.hashesByAccount.delete(account);
    }
  }

  private async derive(key: string): Promise<string> {
    const derived = await this.limited(() => Scrypt.kdf(key, this.scrypt), this.waitingHashes);
    return Buffer.from(derived).toString('base64');
  }

  /** Whether this exact key already verified against this exact hash: the synchronous cache check of {@link verify}. */
  isVerified(key: string, hash: string): boolean {
    const verifiedHash = this.verifiedHash(key);
    return verifiedHash !== undefined && verifiedHash === hash;
  }

  /**
   * The stored hash this exact key last verified against, while the cache holds it (`undefined`
   * otherwise). A key counts as verified only if the record's hash is still this one: only the very
   * key string scrypt verified against that hash is ever cached under it.
   *
   * @example
   * ```ts
   * const cached = hasher.verifiedHash(key);
   * if (cached !== undefined && cached === record.hash) {
   *   // verified before: no scrypt
   * }
   * ```
   */
  verifiedHash(key: string): string | undefined {
    return this.verified.get(fingerprint(key));
  }

  /**
   * Whether `key` matches the stored `hash`. Cached, coalesced and bounded as described above; pass
   * the key's `handle` to throttle wrong secrets per handle (without it there is no per-handle bound).
   * Rejects with a {@link ModelSwitchError} 503 `verification_busy` (with `Retry-After`) when it would
   * need scrypt while `maxQueuedVerifications` verifications already wait.
   */
  async verify(key: string, hash: string, handle?: string): Promise<boolean> {
    // A record without a hash (a broken store) must never match the empty cache slot.
    if (typeof hash !== 'string' || hash === '') return false;
    return (await this.matchingHash(key, [hash], handle)) === hash;
  }

  /**
   * Which of `hashes` the key matches, tried in order, or `undefined` for none: {@link verify} for a
   * key record that holds two hashes during a rotation's grace period (the current secret's and the
   * previous one's). The whole check takes one turn of the handle's wrong-secret budget, given back
   * when a hash matches, so the previous secret's holders never lock the new one out. A match is
   * cached like {@link verify}'s; each miss is remembered for `failureTtlMs` per hash.
   *
   * @example
   * ```ts
   * const matched = await hasher.matchingHash(key, [record.hash, record.previousHash], handle);
   * if (matched === record.hash) {
   *   // the current secret
   * }
   * ```
   */
  async matchingHash(key: string, hashes: ReadonlyArray<string | null>, handle?: string): Promise<string | undefined> {
    // A record without a hash (a broken store) must never match the empty cache slot.
    const valid = hashes.filter((hash): hash is string => typeof hash === 'string' && hash !== '');
    const id = fingerprint(key);
    const verifiedHash = this.verified.get(id);
    if (verifiedHash !== undefined && valid.includes(verifiedHash)) return verifiedHash;
    const now = this.now();
    const candidates = valid.filter((hash) => !((this.failed.get(`${id}\n${hash}`) ?? 0) > now));
    if (candidates.length === 0) return undefined;
    const flightId = `${id}\n${candidates.join('\n')}`;
    const pending = this.inFlight.get(flightId);
    if (pending) return pending;
    const slot = handle === undefined ? null : this.takeFailureSlot(handle);
    if (slot === false) {
      // Not remembered as failed: without scrypt we do not know that it is wrong.
      this.throttledVerifications++;
      return undefined;
    }
    if (this.maxQueued !== null && this.running >= this.maxConcurrent && this.waitingVerifications.length >= this.maxQueued) {
      // A refusal for load must not cost the real key its handle's turn: give it back.
      if (slot) this.releaseFailureSlot(slot);
      this.refusedVerifications++;
      throw this.busy();
    }
    const run = this.firstMatch(key, id, candidates)
      .then((matched) => {
        if (matched !== undefined && slot) this.releaseFailureSlot(slot);
        return matched;
      })
      .finally(() => this.inFlight.delete(flightId));
    this.inFlight.set(flightId, run);
    return run;
  }

  /** scrypt against each candidate in turn (each run in a slot of its own), caching the match and remembering the misses. */
  private async firstMatch(key: string, id: string, candidates: readonly string[]): Promise<string | undefined> {
    for (const hash of candidates) {
      const ok = await this.limited(() => Scrypt.verify(Buffer.from(hash, 'base64'), key), this.waitingVerifications).catch(() => false);
      if (ok) {
        this.verified.set(id, hash);
        this.failed.delete(`${id}\n${hash}`);
        return hash;
      }
      this.failed.set(`${id}\n${hash}`, this.now() + this.failureTtlMs);
    }
    return undefined;
  }

  /**
   * Takes the handle's turn for a scrypt run before it starts (so a burst of concurrent guesses
   * cannot all slip in before the first one fails): turns come one every window / limit ms, evenly,
   * so a flood of guesses costs a steady trickle of scrypt rather than a burst each window.
   * `false` when it is not this handle's turn yet; `null` when the throttle is off.
   */
  private takeFailureSlot(handle: string): FailureSlot | false | null {
    if (this.handleFailureLimit === null) return null;
    const now = this.now();
    const previous = this.handleNextRun.get(handle);
    if (previous !== undefined && now < previous) return false;
    const granted = now + this.handleFailureWindowMs / this.handleFailureLimit;
    this.handleNextRun.set(handle, granted);
    return { handle, previous, granted };
  }

  /** A run that succeeded was not a failure: give its turn back (unless a later run took one since). */
  private releaseFailureSlot(slot: FailureSlot): void {
    if (this.handleNextRun.get(slot.handle) !== slot.granted) return;
    if (slot.previous === undefined) this.handleNextRun.delete(slot.handle);
    else this.handleNextRun.set(slot.handle, slot.previous);
  }

  /** The 503 of a verification refused for load, with the queue's expected wait as `Retry-After`. */
  private busy(): ModelSwitchError {
    return answerWithoutStack('verification_busy', 'Too many API keys are being verified right now. Please retry shortly.', {
      headers: { 'Retry-After': this.retryAfter() },
    });
  }

  /** The expected wait of the whole queue, in whole seconds from 1 to 60, for a `Retry-After`. */
  private retryAfter(): string {
    const queued = this.waitingVerifications.length + this.waitingHashes.length;
    const waitMs = ((queued + this.running) / this.maxConcurrent) * this.runMs;
    // Up to a quarter more, at random, so that clients refused together do not all come back together.
    const seconds = Math.ceil((waitMs * (1 + Math.random() / 4)) / 1000);
    return String(Math.min(60, Math.max(1, seconds)));
  }

  /** Runs `work` in a scrypt slot, waiting in `queue` for one if all are taken. */
  private async limited<T>(work: () => Promise<T>, queue: Array<() => void>): Promise<T> {
    if (this.running >= this.maxConcurrent) {
      await new Promise<void>((resolve) => queue.push(resolve));
    } else {
      this.running++;
    }
    this.scryptRuns++;
    const started = performance.now();
    try {
      return await work();
    } finally {
      this.runMs = this.runMs * 0.8 + (performance.now() - started) * 0.2;
      // The slot passes on, verifications first: a key waiting to be checked is a request waiting.
      const next = this.waitingVerifications.shift() ?? this.waitingHashes.shift();
      if (next) next();
      else this.running--;
    }
  }
}

/** A `ConfigurationError` `ERR_MS_OPTION` about one of `KeyHasher`'s options. */
function hasherOption(message: string): ConfigurationError {
  return new ConfigurationError('ERR_MS_OPTION', `KeyHasher: ${message}`);
}

function definedOnly<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

let sharedHasher: KeyHasher | undefined;
/** The process-wide hasher the factories use when none is given. */
export function defaultKeyHasher(): KeyHasher {
  sharedHasher ??= new KeyHasher();
  return sharedHasher;
}
