import { afterEach, describe, expect, it, vi } from 'vitest';
import { generateApiKey } from '../../src/keys/api-key.js';
import { ModelSwitchError } from '../../src/errors/errors.js';
import { ConfigurationError } from '../../src/errors/configuration-error.js';
import { KeyHasher, type KeyHasherOptions } from '../../src/keys/hashing.js';
import { MemoryKeyStore, issueKey } from '../../src/index.js';
import { buildApp } from '../app.js';
import { recordingLogger, seedAccount, testClock } from '../helpers.js';
import request from 'supertest';

// Wrap scrypt-kdf's verify so the tests can see how many runs are in flight at once.
const scryptProbe = vi.hoisted(() => ({ inFlight: 0, maxInFlight: 0, hold: undefined as Promise<void> | undefined }));
vi.mock('scrypt-kdf', async (importOriginal) => {
  // scrypt-kdf's real export is a default class with static kdf/verify.
  const original = (await importOriginal<{ default: typeof import('scrypt-kdf') }>()).default;
  async function verify(...args: Parameters<typeof original.verify>): Promise<boolean> {
    scryptProbe.inFlight++;
    scryptProbe.maxInFlight = Math.max(scryptProbe.maxInFlight, scryptProbe.inFlight);
    try {
      // A test can hold every scrypt run here, to fill the hasher's queue deterministically.
      if (scryptProbe.hold) await scryptProbe.hold;
      return await original.verify(...args);
    } finally {
      scryptProbe.inFlight--;
    }
  }
  async function kdf(...args: Parameters<typeof original.kdf>): ReturnType<typeof original.kdf> {
    if (scryptProbe.hold) await scryptProbe.hold;
    return original.kdf(...args);
  }
  return { default: { kdf, verify } };
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

    it('checks a key against both hashes of a rotation in one turn, given back when either matches', async () => {
      const clock = testClock();
      const subject = hasher({ handleFailureLimit: 2, handleFailureWindowMs: 60_000, now: clock.now });
      const previous = await storedKey();
      // The rotated key: same handle, new secret.
      const current = guessFor(previous.handle);
      const currentHash = await hasher().hash(current);
      expect(await subject.matchingHash(previous.key, [currentHash, previous.hash], previous.handle)).toBe(previous.hash);
      expect(subject.scryptRuns).toBe(2);
      // The turn came back: the new secret, cold, is checked at once, and matches the first hash.
      expect(await subject.matchingHash(current, [currentHash, previous.hash], previous.handle)).toBe(currentHash);
      expect({ scrypt: subject.scryptRuns, throttled: subject.throttledVerifications }).toEqual({ scrypt: 3, throttled: 0 });
      // Cached: which hash each key matched, without scrypt; a list without it matches nothing (its
      // miss against the current hash is remembered too).
      expect(await subject.matchingHash(previous.key, [currentHash, previous.hash], previous.handle)).toBe(previous.hash);
      expect(await subject.matchingHash(previous.key, [currentHash], previous.handle)).toBe(undefined);
      expect(subject.scryptRuns).toBe(3);
      // A guess matching neither spends one turn for both runs; the next guess waits for the next turn.
      expect(await subject.matchingHash(guessFor(previous.handle), [currentHash, previous.hash], previous.handle)).toBe(undefined);
      expect(subject.scryptRuns).toBe(5);
      expect(await subject.matchingHash(guessFor(previous.handle), [currentHash, previous.hash], previous.handle)).toBe(undefined);
      expect({ scrypt: subject.scryptRuns, throttled: subject.throttledVerifications }).toEqual({ scrypt: 5, throttled: 1 });
      expect(await subject.matchingHash(current, [null, ''], previous.handle)).toBe(undefined);
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
        new ConfigurationError('ERR_MS_OPTION', 'KeyHasher: handleFailureLimit must be a positive integer, got 0'),
      );
    });
  });

  describe('maxQueuedVerifications', () => {
    let releaseHeld = () => {};
    // A test that failed while scrypt was held must not leave its runs hanging for the next one.
    afterEach(() => releaseHeld());

    /** Holds every scrypt run until the returned function is called. */
    function holdScrypt(): () => void {
      let release: () => void = () => {};
      scryptProbe.hold = new Promise<void>((resolve) => {
        release = resolve;
      });
      releaseHeld = () => {
        scryptProbe.hold = undefined;
        release();
      };
      return releaseHeld;
    }
    /** Verifies a key made by `storedKey()` (the index of an array of them, which must exist). */
    const verifyStored = (subject: KeyHasher, stored: { key: string; handle: string; hash: string } | undefined) => {
      if (!stored) throw new Error('no such stored key');
      return subject.verify(stored.key, stored.hash, stored.handle);
    };
    const outcome = (promise: Promise<boolean>) =>
      promise.then(
        (ok) => ({ ok }),
        (error: unknown) =>
          error instanceof ModelSwitchError ? { status: error.status, body: error.toJSON(), headers: error.headers } : { error },
      );
    const BUSY = {
      status: 503,
      body: {
        error: {
          message: 'Too many API keys are being verified right now. Please retry shortly.',
          type: 'api_error',
          code: 'verification_busy',
        },
      },
      headers: { 'Retry-After': '1' },
    };

    it('refuses at once, with a 503 and Retry-After, a verification that would wait behind the bound; cached and coalesced keys pass', async () => {
      const subject = hasher({ maxConcurrentHashes: 1, maxQueuedVerifications: 2 });
      const cached = await storedKey();
      expect(await subject.verify(cached.key, cached.hash, cached.handle)).toBe(true);
      const keys = await Promise.all(Array.from({ length: 5 }, () => storedKey()));
      const release = holdScrypt();
      try {
        // One runs (held), two wait, the last two are refused without taking a slot.
        const pending = keys.map(({ key, hash, handle }) => outcome(subject.verify(key, hash, handle)));
        expect(await Promise.all(pending.slice(3))).toEqual([BUSY, BUSY]);
        expect(subject.hashesInFlight).toBe(3);
        expect(subject.refusedVerifications).toBe(2);
        // Still answered while the queue is full: a cached key, and a key already being verified.
        expect(await subject.verify(cached.key, cached.hash, cached.handle)).toBe(true);
        const joined = verifyStored(subject, keys[0]);
        release();
        expect(await Promise.all([...pending.slice(0, 3), outcome(joined)])).toEqual([
          { ok: true },
          { ok: true },
          { ok: true },
          { ok: true },
        ]);
      } finally {
        release();
      }
      expect(subject.scryptRuns).toBe(1 + 3);
      // Once the queue drained, the refused keys verify.
      expect(await verifyStored(subject, keys[4])).toBe(true);
    });

    it("does not spend the handle's wrong-secret turn on a refused verification", async () => {
      const subject = hasher({ maxConcurrentHashes: 1, maxQueuedVerifications: 0, handleFailureLimit: 1 });
      const busy = await storedKey();
      const guessed = await storedKey();
      const release = holdScrypt();
      let running: Promise<boolean> | undefined;
      try {
        running = subject.verify(busy.key, busy.hash, busy.handle);
        expect(await outcome(subject.verify(guessFor(guessed.handle), guessed.hash, guessed.handle))).toEqual(BUSY);
      } finally {
        release();
      }
      expect(await running).toBe(true);
      // The handle's one turn is still there: this guess runs scrypt (and fails), the next is throttled.
      expect(await subject.verify(guessFor(guessed.handle), guessed.hash, guessed.handle)).toBe(false);
      expect(await subject.verify(guessFor(guessed.handle), guessed.hash, guessed.handle)).toBe(false);
      expect({ scryptRuns: subject.scryptRuns, throttled: subject.throttledVerifications, refused: subject.refusedVerifications }).toEqual({
        scryptRuns: 2,
        throttled: 1,
        refused: 1,
      });
    });

    it('refuses beyond 256 waiting by default, never with null; rejects anything but an integer ≥ 0 at creation', async () => {
      // 300 verifications at once of keys never seen (a stand-in hash: what scrypt answers does not matter here).
      const keys = Array.from({ length: 300 }, () => generateApiKey('proxy'));
      for (const [options, refused] of [
        [{}, 300 - 2 - 256],
        [{ maxQueuedVerifications: null }, 0],
      ] as const) {
        const subject = hasher(options);
        const release = holdScrypt();
        const pending = keys.map(({ value, handle }) => outcome(subject.verify(value, 'c2NyeXB0', handle)));
        expect({ refused: subject.refusedVerifications, inFlight: subject.hashesInFlight }).toEqual({ refused, inFlight: 300 - refused });
        release();
        const outcomes = await Promise.all(pending);
        expect(outcomes.filter((o) => 'ok' in o)).toHaveLength(300 - refused);
      }
      for (const wrong of [-1, 1.5, Number.NaN]) {
        expect(() => hasher({ maxQueuedVerifications: wrong })).toThrow(
          new ConfigurationError(
            'ERR_MS_OPTION',
            `KeyHasher: maxQueuedVerifications must be an integer ≥ 0 (or null for no bound), got ${String(wrong)}`,
          ),
        );
      }
    });

    it('counts only verifications against the bound: hashes of new keys waiting in the same queue are never refused', async () => {
      const subject = hasher({ maxConcurrentHashes: 1, maxQueuedVerifications: 1 });
      const [first, second, third] = await Promise.all([storedKey(), storedKey(), storedKey()]);
      if (!first || !second || !third) throw new Error('unreachable');
      const release = holdScrypt();
      const running = subject.verify(first.key, first.hash, first.handle);
      const hashes = Array.from({ length: 3 }, () => subject.hash(generateApiKey('proxy').value));
      const waiting = outcome(subject.verify(second.key, second.hash, second.handle));
      expect(await outcome(subject.verify(third.key, third.hash, third.handle))).toEqual(BUSY);
      release();
      expect(await Promise.all([running, waiting, ...hashes.map((h) => h.then((hash) => typeof hash))])).toEqual([
        true,
        { ok: true },
        'string',
        'string',
        'string',
      ]);
    });

    it('sets Retry-After from the queue and the recent scrypt time, at most 60 s', async () => {
      // Every scrypt run "takes" 10 s: the hasher reads performance.now() once before and once after each run.
      let clock = 0;
      const spy = vi.spyOn(performance, 'now').mockImplementation(() => {
        clock += 10_000;
        return clock;
      });
      try {
        const subject = hasher({ maxConcurrentHashes: 1, maxQueuedVerifications: 1 });
        const keys = await Promise.all(Array.from({ length: 7 }, () => storedKey()));
        for (const { key, hash, handle } of keys.slice(0, 5)) expect(await subject.verify(key, hash, handle)).toBe(true);
        // Five runs of 10 s pull the moving average from 100 ms to 6,756 ms.
        const release = holdScrypt();
        const running = verifyStored(subject, keys[5]);
        const waiting = verifyStored(subject, keys[6]);
        const refused = await outcome(subject.verify(guessFor(keys[0]?.handle as string), keys[0]?.hash as string));
        // Two runs ahead on one slot: 13.5 s, plus up to a quarter at random.
        const seconds = Number((refused as { headers: Record<string, string> }).headers['Retry-After']);
        expect(seconds).toBeGreaterThanOrEqual(14);
        expect(seconds).toBeLessThanOrEqual(17);
        release();
        expect(await Promise.all([running, waiting])).toEqual([true, true]);

        const wide = hasher({ maxConcurrentHashes: 1, maxQueuedVerifications: 20 });
        for (const { key, hash, handle } of keys.slice(0, 5)) expect(await wide.verify(key, hash, handle)).toBe(true);
        const releaseWide = holdScrypt();
        const queued = Array.from({ length: 21 }, () => {
          const { value, handle } = generateApiKey('proxy');
          return outcome(wide.verify(value, 'c2NyeXB0', handle));
        });
        const capped = await outcome(wide.verify(generateApiKey('proxy').value, 'c2NyeXB0'));
        expect((capped as { headers: Record<string, string> }).headers).toEqual({ 'Retry-After': '60' });
        releaseWide();
        await Promise.all(queued);
      } finally {
        spy.mockRestore();
      }
    });

    it('answers the request 503 verification_busy over HTTP, logged once a minute, while the first key is still being verified', async () => {
      const subject = hasher({ maxConcurrentHashes: 1, maxQueuedVerifications: 0 });
      const store = new MemoryKeyStore();
      const clock = testClock();
      const logger = recordingLogger();
      const seeded = await seedAccount(store, { hasher: subject, now: clock.now() });
      const issue = async (name: string) =>
        (await issueKey(store, { accountId: seeded.account.id, type: 'proxy', name }, { hasher: subject, now: clock.now() })).key;
      const [second, third, fourth] = [await issue('Second'), await issue('Third'), await issue('Fourth')];
      const app = buildApp('express5', store, { hasher: subject, now: clock.now, logger });
      const release = holdScrypt();
      let first: Promise<request.Response> | undefined;
      try {
        first = request(app)
          .get('/v1/whoami')
          .set('Authorization', `Bearer ${seeded.proxyKey}`)
          .then((r) => r);
        await vi.waitFor(() => expect(scryptProbe.inFlight).toBe(1));
        for (const key of [second, third, fourth]) {
          // A minute after the first refusal was logged, the next one is logged again.
          if (key === fourth) clock.advance(60_000);
          const refused = await request(app).get('/v1/whoami').set('Authorization', `Bearer ${key}`);
          expect({
            status: refused.status,
            retryAfter: refused.headers['retry-after'],
            contentType: refused.headers['content-type'],
            cacheControl: refused.headers['cache-control'],
            authenticate: refused.headers['www-authenticate'],
            body: refused.body,
          }).toEqual({
            status: 503,
            retryAfter: '1',
            contentType: 'application/json',
            cacheControl: 'no-store',
            authenticate: undefined,
            body: BUSY.body,
          });
        }
      } finally {
        release();
      }
      const admitted = await first;
      expect({ status: admitted?.status, body: admitted?.body }).toEqual({
        status: 200,
        body: { keyId: expect.any(Number), accountId: seeded.account.id },
      });
      const line =
        'warn: modelswitch-keys: too many key verifications are waiting for scrypt; new ones are refused with 503 verification_busy until the queue drains (KeyHasher maxQueuedVerifications)';
      expect(logger.lines).toEqual([line, line]);
      // Once the queue drained, the refused key is verified like any other.
      expect((await request(app).get('/v1/whoami').set('Authorization', `Bearer ${second}`)).status).toBe(200);
    });
  });
});
