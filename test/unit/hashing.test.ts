import { describe, expect, it, vi } from 'vitest';
import { generateApiKey } from '../../src/api-key.js';
import { KeyHasher, type KeyHasherOptions } from '../../src/hashing.js';
import { testClock } from '../helpers.js';

// Wrap scrypt-kdf's verify so the tests can see how many runs are in flight at once.
const scryptProbe = vi.hoisted(() => ({ inFlight: 0, maxInFlight: 0 }));
vi.mock('scrypt-kdf', async (importOriginal) => {
  // scrypt-kdf's real export is a default class with static kdf/verify.
  const original = (await importOriginal<{ default: typeof import('scrypt-kdf') }>()).default;
  async function verify(...args: Parameters<typeof original.verify>): Promise<boolean> {
    scryptProbe.inFlight++;
    scryptProbe.maxInFlight = Math.max(scryptProbe.maxInFlight, scryptProbe.inFlight);
    try {
      return await original.verify(...args);
    } finally {
      scryptProbe.inFlight--;
    }
  }
  return { default: { kdf: original.kdf.bind(original), verify } };
});

/** scrypt at logN 10, as fastHasher() in test/helpers.ts, with options for the behaviour under test. */
function hasher(options: KeyHasherOptions = {}): KeyHasher {
  return new KeyHasher({ scrypt: { logN: 10 }, ...options });
}

/** A fresh key and its hash, made by a separate hasher so the hasher under test starts cold. */
async function storedKey(): Promise<{ key: string; handle: string; hash: string }> {
  const { value, handle } = generateApiKey('proxy');
  return { key: value, handle, hash: await hasher().hash(value) };
}

/** Another well-formed key with the same handle: what someone guessing secrets for a known handle sends. */
function guessFor(handle: string): string {
  const other = generateApiKey('proxy').value;
  return `ms-${handle}${other.slice(13)}`;
}

describe('KeyHasher', () => {
  it('answers a repeat verification from the cache without running scrypt', async () => {
    const subject = hasher();
    const { key, handle, hash } = await storedKey();
    expect(await subject.verify(key, hash, handle)).toBe(true);
    expect(subject.scryptRuns).toBe(1);
    for (let i = 0; i < 5; i++) expect(await subject.verify(key, hash, handle)).toBe(true);
    expect(subject.scryptRuns).toBe(1);
    expect(subject.cachedKeys).toBe(1);
  });

  it('keeps the verified-key cache within its bound, dropping the least recently used key', async () => {
    const subject = hasher({ cacheSize: 3 });
    const keys = await Promise.all([storedKey(), storedKey(), storedKey(), storedKey(), storedKey()]);
    for (const { key, handle, hash } of keys) expect(await subject.verify(key, hash, handle)).toBe(true);
    expect(subject.cachedKeys).toBe(3);
    expect(subject.scryptRuns).toBe(5);

    const newest = keys[4];
    const oldest = keys[0];
    if (!newest || !oldest) throw new Error('unreachable');
    expect(await subject.verify(newest.key, newest.hash, newest.handle)).toBe(true);
    expect(subject.scryptRuns).toBe(5);
    expect(await subject.verify(oldest.key, oldest.hash, oldest.handle)).toBe(true);
    expect(subject.scryptRuns).toBe(6);
    expect(subject.cachedKeys).toBe(3);
  });

  it('evicts keys not read recently before keys read since (second chance)', async () => {
    const subject = hasher({ cacheSize: 3 });
    const [a, b, c, d] = await Promise.all([storedKey(), storedKey(), storedKey(), storedKey()]);
    if (!a || !b || !c || !d) throw new Error('unreachable');
    for (const k of [a, b, c]) await subject.verify(k.key, k.hash, k.handle);
    expect(subject.isVerified(a.key, a.hash)).toBe(true); // a is read: it gets a second chance
    await subject.verify(d.key, d.hash, d.handle); // evicts b, the oldest not read
    expect([a, b, c, d].map((k) => subject.isVerified(k.key, k.hash))).toEqual([true, false, true, true]);
    expect(subject.cachedKeys).toBe(3);
    expect(subject.scryptRuns).toBe(4);
  });

  it('never evicts the key it has just cached, even when every older key was read since', async () => {
    const subject = hasher({ cacheSize: 2 });
    const [a, b, c] = await Promise.all([storedKey(), storedKey(), storedKey()]);
    if (!a || !b || !c) throw new Error('unreachable');
    for (const k of [a, b]) await subject.verify(k.key, k.hash, k.handle);
    for (const k of [a, b]) expect(subject.isVerified(k.key, k.hash)).toBe(true);
    await subject.verify(c.key, c.hash, c.handle);
    expect(subject.isVerified(c.key, c.hash)).toBe(true);
    expect(subject.cachedKeys).toBe(2);
    for (let i = 0; i < 3; i++) await subject.verify(c.key, c.hash, c.handle);
    expect(subject.scryptRuns).toBe(3);
  });

  it('runs scrypt once for concurrent verifications of the same key', async () => {
    const subject = hasher();
    const { key, handle, hash } = await storedKey();
    const results = await Promise.all(Array.from({ length: 20 }, () => subject.verify(key, hash, handle)));
    expect(results).toEqual(Array.from({ length: 20 }, () => true));
    expect(subject.scryptRuns).toBe(1);
  });

  it('never has more than maxConcurrentHashes scrypt runs in flight', async () => {
    const subject = hasher({ maxConcurrentHashes: 2 });
    const keys = await Promise.all(Array.from({ length: 8 }, () => storedKey()));
    scryptProbe.maxInFlight = 0;
    const results = await Promise.all(keys.map(({ key, handle, hash }) => subject.verify(key, hash, handle)));
    expect(results).toEqual(Array.from({ length: 8 }, () => true));
    expect(subject.scryptRuns).toBe(8);
    expect(scryptProbe.maxInFlight).toBe(2);
    expect(scryptProbe.inFlight).toBe(0);
  });

  it('tells the hash a key verified against (verifiedHash), only once it verified', async () => {
    const subject = hasher();
    const { key, handle, hash } = await storedKey();
    expect(subject.verifiedHash(key)).toBeUndefined();
    expect(subject.isVerified(key, hash)).toBe(false);
    expect(await subject.verify(key, hash, handle)).toBe(true);
    expect(subject.verifiedHash(key)).toBe(hash);
    expect(subject.isVerified(key, hash)).toBe(true);
    expect(subject.verifiedHash(guessFor(handle))).toBeUndefined();
  });

  it('never matches a record without a hash (a broken store), cached or not', async () => {
    const subject = hasher();
    const { key, handle } = await storedKey();
    for (const missing of [undefined, null, '']) {
      expect(subject.isVerified(key, missing as unknown as string)).toBe(false);
      expect(await subject.verify(key, missing as unknown as string, handle)).toBe(false);
    }
    expect(subject.scryptRuns).toBe(0);
  });

  it('never caches a wrong secret as valid', async () => {
    const subject = hasher();
    const { handle, hash } = await storedKey();
    const wrong = guessFor(handle);
    expect(await subject.verify(wrong, hash, handle)).toBe(false);
    expect(await subject.verify(wrong, hash, handle)).toBe(false);
    expect(subject.cachedKeys).toBe(0);
  });

  it('does not trust the cache for a re-created record with a different hash', async () => {
    const subject = hasher();
    const { key, handle, hash } = await storedKey();
    expect(await subject.verify(key, hash, handle)).toBe(true);
    // Same key value, but the record now holds the hash of some other key (deleted and re-created).
    const otherHash = await hasher().hash(generateApiKey('proxy').value);
    expect(await subject.verify(key, otherHash, handle)).toBe(false);
    expect(subject.scryptRuns).toBe(2);
  });

  it('remembers a failed verification for failureTtlMs, then runs scrypt again', async () => {
    const clock = testClock();
    const subject = hasher({ failureTtlMs: 60_000, now: clock.now });
    const { handle, hash } = await storedKey();
    const wrong = guessFor(handle);
    expect(await subject.verify(wrong, hash, handle)).toBe(false);
    clock.advance(59_999);
    expect(await subject.verify(wrong, hash, handle)).toBe(false);
    expect(subject.scryptRuns).toBe(1);
    clock.advance(1);
    expect(await subject.verify(wrong, hash)).toBe(false);
    expect(subject.scryptRuns).toBe(2);
  });

  describe('per-handle throttle of wrong secrets', () => {
    it('lets one wrong-secret scrypt run per window / limit through for a handle, evenly, and refuses the rest without scrypt', async () => {
      const clock = testClock();
      const subject = hasher({ handleFailureLimit: 3, handleFailureWindowMs: 60_000, now: clock.now });
      const { handle, hash } = await storedKey();
      expect(await subject.verify(guessFor(handle), hash, handle)).toBe(false);
      for (let i = 0; i < 10; i++) expect(await subject.verify(guessFor(handle), hash, handle)).toBe(false);
      expect({ scrypt: subject.scryptRuns, throttled: subject.throttledVerifications }).toEqual({ scrypt: 1, throttled: 10 });
      clock.advance(19_999);
      expect(await subject.verify(guessFor(handle), hash, handle)).toBe(false);
      expect(subject.scryptRuns).toBe(1);
      clock.advance(1); // 60 000 / 3 ms after the first run: the next turn.
      expect(await subject.verify(guessFor(handle), hash, handle)).toBe(false);
      expect(await subject.verify(guessFor(handle), hash, handle)).toBe(false);
      expect(subject.scryptRuns).toBe(2);
      // A whole minute of steady guessing: three runs, never more.
      for (let ms = 0; ms < 60_000; ms += 500) {
        clock.advance(500);
        await subject.verify(guessFor(handle), hash, handle);
      }
      expect(subject.scryptRuns).toBe(5);
    });

    it('bounds a burst of concurrent guesses, not only guesses that already failed', async () => {
      const subject = hasher({ handleFailureLimit: 3 });
      const { handle, hash } = await storedKey();
      const results = await Promise.all(Array.from({ length: 12 }, () => subject.verify(guessFor(handle), hash, handle)));
      expect(results).toEqual(Array.from({ length: 12 }, () => false));
      expect(subject.scryptRuns).toBe(1);
      expect(subject.throttledVerifications).toBe(11);
    });

    it('keeps answering a cached legitimate key of the flooded handle, without scrypt', async () => {
      const clock = testClock();
      const subject = hasher({ handleFailureLimit: 2, now: clock.now });
      const { key, handle, hash } = await storedKey();
      expect(await subject.verify(key, hash, handle)).toBe(true);
      for (let i = 0; i < 20; i++) {
        clock.advance(3_000);
        await subject.verify(guessFor(handle), hash, handle);
      }
      expect(subject.scryptRuns).toBe(3);
      expect(await subject.verify(key, hash, handle)).toBe(true);
      expect(subject.scryptRuns).toBe(3);
    });

    it("refuses a not-yet-cached legitimate key of the flooded handle until the handle's next turn (the documented trade-off)", async () => {
      const clock = testClock(Date.parse('2026-11-22T12:00:00Z'));
      const subject = hasher({ handleFailureLimit: 2, handleFailureWindowMs: 60_000, now: clock.now });
      const { key, handle, hash } = await storedKey();
      await subject.verify(guessFor(handle), hash, handle);
      expect(await subject.verify(key, hash, handle)).toBe(false);
      expect(subject.cachedKeys).toBe(0);
      clock.advance(30_000);
      expect(await subject.verify(key, hash, handle)).toBe(true);
      expect(subject.scryptRuns).toBe(2);
      // Its success gave the turn back: the next guess may run at once.
      await subject.verify(guessFor(handle), hash, handle);
      expect(subject.scryptRuns).toBe(3);
    });

    it('defaults to two wrong-secret runs per handle per minute', async () => {
      const clock = testClock();
      const subject = hasher({ now: clock.now });
      const { handle, hash } = await storedKey();
      for (let ms = 0; ms < 60_000; ms += 1_000) {
        await subject.verify(guessFor(handle), hash, handle);
        clock.advance(1_000);
      }
      expect(subject.scryptRuns).toBe(2);
    });

    it('does not count a successful verification against the handle', async () => {
      const subject = hasher({ handleFailureLimit: 1 });
      const { key, handle, hash } = await storedKey();
      expect(await subject.verify(key, hash, handle)).toBe(true);
      expect(await subject.verify(guessFor(handle), hash, handle)).toBe(false);
      expect(subject.scryptRuns).toBe(2);
      expect(subject.throttledVerifications).toBe(0);
    });

    it('leaves other handles alone', async () => {
      const subject = hasher({ handleFailureLimit: 1 });
      const flooded = await storedKey();
      const other = await storedKey();
      await subject.verify(guessFor(flooded.handle), flooded.hash, flooded.handle);
      expect(await subject.verify(guessFor(flooded.handle), flooded.hash, flooded.handle)).toBe(false);
      expect(await subject.verify(other.key, other.hash, other.handle)).toBe(true);
      expect(subject.throttledVerifications).toBe(1);
    });

    it('can be turned off with handleFailureLimit: null', async () => {
      const subject = hasher({ handleFailureLimit: null });
      const { handle, hash } = await storedKey();
      for (let i = 0; i < 15; i++) await subject.verify(guessFor(handle), hash, handle);
      expect(subject.scryptRuns).toBe(15);
      expect(subject.throttledVerifications).toBe(0);
    });

    it('rejects a limit that is not a positive integer at creation', () => {
      expect(() => hasher({ handleFailureLimit: 0 })).toThrow(
        new TypeError('KeyHasher: handleFailureLimit must be a positive integer, got 0'),
      );
    });
  });
});
