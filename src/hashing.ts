import { createHash } from 'node:crypto';
import { kdf, verify as scryptVerify } from 'scrypt-kdf';

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
  /** Clock, injectable for tests. Default `Date.now`. */
  now?: () => number;
}

/** The default scrypt parameters. */
export const DEFAULT_SCRYPT: Readonly<ScryptParameters> = { logN: 15, r: 8, p: 1 };

function fingerprint(key: string): string {
  return createHash('sha256').update(key).digest('base64');
}

/** A least-recently-used map with a fixed bound. */
class BoundedCache<V> {
  private readonly entries = new Map<string, V>();
  constructor(private readonly bound: number) {}
  get(id: string): V | undefined {
    const value = this.entries.get(id);
    if (value !== undefined) {
      this.entries.delete(id);
      this.entries.set(id, value);
    }
    return value;
  }
  set(id: string, value: V): void {
    this.entries.delete(id);
    this.entries.set(id, value);
    if (this.entries.size > this.bound) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
  }
  delete(id: string): void {
    this.entries.delete(id);
  }
  get size(): number {
    return this.entries.size;
  }
}

/**
 * Hashes keys with scrypt and verifies presented keys against stored hashes.
 *
 * - A bounded cache remembers (SHA-256 of key → stored hash) pairs that verified, so a repeat call
 *   costs one hash comparison. A cache hit only counts when the record's current hash is the one
 *   that verified, so a re-created record is never trusted by mistake.
 * - Concurrent verifications of the same key and hash share one scrypt run.
 * - At most `maxConcurrentHashes` scrypt runs are in flight; the rest queue.
 * - A failed verification is remembered for `failureTtlMs` (never as valid), so a flood of one
 *   wrong key costs one scrypt run.
 *
 * @example
 * ```ts
 * const hasher = new KeyHasher({ scrypt: { logN: 15 }, cacheSize: 50_000 });
 * const hash = await hasher.hash(key);
 * await hasher.verify(key, hash); // true, and cached
 * ```
 */
export class KeyHasher {
  readonly scrypt: Readonly<ScryptParameters>;
  private readonly verified: BoundedCache<string>;
  private readonly failed: BoundedCache<{ hash: string; until: number }>;
  private readonly inFlight = new Map<string, Promise<boolean>>();
  private readonly maxConcurrent: number;
  private readonly failureTtlMs: number;
  private readonly now: () => number;
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  /** How many scrypt runs this hasher has started (hashes and verifications); for tests and benchmarks. */
  scryptRuns = 0;

  constructor(options: KeyHasherOptions = {}) {
    this.scrypt = { ...DEFAULT_SCRYPT, ...definedOnly(options.scrypt ?? {}) };
    const cacheSize = options.cacheSize ?? 10_000;
    this.maxConcurrent = options.maxConcurrentHashes ?? 2;
    this.failureTtlMs = options.failureTtlMs ?? 60_000;
    this.now = options.now ?? Date.now;
    for (const [name, value] of Object.entries({ cacheSize, maxConcurrentHashes: this.maxConcurrent })) {
      if (!Number.isInteger(value) || value < 1) {
        throw new TypeError(`KeyHasher: ${name} must be a positive integer, got ${String(value)}`);
      }
    }
    const { logN, r, p } = this.scrypt;
    if (!Number.isInteger(logN) || logN < 1 || logN > 30 || !Number.isInteger(r) || r < 1 || !Number.isInteger(p) || p < 1) {
      throw new TypeError('KeyHasher: scrypt needs integer logN (1–30), r ≥ 1 and p ≥ 1');
    }
    this.verified = new BoundedCache(cacheSize);
    this.failed = new BoundedCache(cacheSize);
  }

  /** How many verified keys the cache holds now (never more than `cacheSize`). */
  get cachedKeys(): number {
    return this.verified.size;
  }

  /** Hashes a new key for storage: scrypt-kdf's self-describing format, base64. */
  async hash(key: string): Promise<string> {
    const derived = await this.limited(() => kdf(key, this.scrypt));
    return Buffer.from(derived).toString('base64');
  }

  /** Whether `key` matches the stored `hash`. Cached, coalesced and bounded as described above. */
  async verify(key: string, hash: string): Promise<boolean> {
    const id = fingerprint(key);
    if (this.verified.get(id) === hash) return true;
    const failure = this.failed.get(id);
    if (failure !== undefined && failure.hash === hash && failure.until > this.now()) return false;
    const flightId = `${id}\n${hash}`;
    const pending = this.inFlight.get(flightId);
    if (pending) return pending;
    const run = this.limited(() => scryptVerify(Buffer.from(hash, 'base64'), key))
      .catch(() => false)
      .then((ok) => {
        if (ok) {
          this.verified.set(id, hash);
          this.failed.delete(id);
        } else {
          this.failed.set(id, { hash, until: this.now() + this.failureTtlMs });
        }
        return ok;
      })
      .finally(() => this.inFlight.delete(flightId));
    this.inFlight.set(flightId, run);
    return run;
  }

  private async limited<T>(work: () => Promise<T>): Promise<T> {
    if (this.running >= this.maxConcurrent) {
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.running++;
    }
    this.scryptRuns++;
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
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
