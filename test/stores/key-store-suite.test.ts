import { describe, expect, it } from 'vitest';
import { ConfigurationError, MemoryKeyStore } from '../../src/index.js';
import type { KeyStore } from '../../src/store/types.js';
import { type KeyStoreSuiteOptions, type TestFunction, keyStoreSuite } from '../../src/testing/index.js';

/** A test registrar that records what the suite registers instead of running it. */
function recorder(withSkip = true) {
  const run: Array<{ name: string; fn: () => Promise<void>; timeoutMs: number | undefined }> = [];
  const skipped: string[] = [];
  const register = ((name: string, fn: () => Promise<void>, timeoutMs?: number) => {
    run.push({ name, fn, timeoutMs });
  }) as TestFunction;
  if (withSkip) register.skip = (name: string) => skipped.push(name);
  return { it: register, run, skipped };
}

/** How many test names start with each `<prefix><group>: `, in registration order. */
function groupCounts(names: string[], prefix = 'KeyStore conformance: '): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const name of names) {
    expect(name.startsWith(prefix), name).toBe(true);
    const group = name.slice(prefix.length).split(': ')[0] as string;
    counts[group] = (counts[group] ?? 0) + 1;
  }
  return counts;
}

const ALL_GROUPS = { accounts: 3, keys: 8, listing: 3, spend: 12, ledger: 10, holds: 6, rotation: 5, models: 3, counters: 3, awaitable: 1 };

describe('keyStoreSuite', () => {
  it('registers every group, in order, as "KeyStore conformance: <group>: <test>" with a 60 s timeout', () => {
    const runner = recorder();
    keyStoreSuite({ it: runner.it, createStore: () => new MemoryKeyStore() });
    const counts = groupCounts(runner.run.map((test) => test.name));
    expect(counts).toEqual(ALL_GROUPS);
    expect(Object.keys(counts)).toEqual([
      'accounts',
      'keys',
      'listing',
      'spend',
      'ledger',
      'holds',
      'rotation',
      'models',
      'counters',
      'awaitable',
    ]);
    expect(runner.run.map((test) => test.name)).toContain(
      'KeyStore conformance: spend: reservations never let concurrent requests pass the key limit',
    );
    expect(new Set(runner.run.map((test) => test.timeoutMs))).toEqual(new Set([60_000]));
    expect(runner.skipped).toEqual([]);
  });

  it('names the tests with the name prefix and the concurrency it is given', () => {
    const runner = recorder();
    keyStoreSuite({ it: runner.it, createStore: () => new MemoryKeyStore(), name: 'Mine / ', concurrency: 7 });
    const names = runner.run.map((test) => test.name);
    expect(groupCounts(names, 'Mine / ')).toEqual(ALL_GROUPS);
    expect(names).toContain('Mine / counters: counts 7 concurrent counter hits exactly, per fixed window');
    expect(names).toContain('Mine / spend: loses no usage or balance change under 7 concurrent settlements');
  });

  it('registers a skipped group with it.skip under the same names, and runs the others', () => {
    const runner = recorder();
    keyStoreSuite({ it: runner.it, createStore: () => new MemoryKeyStore(), skip: { counters: true, spend: true, listing: false } });
    expect(groupCounts(runner.run.map((test) => test.name))).toEqual({
      accounts: 3,
      keys: 8,
      listing: 3,
      ledger: 10,
      holds: 6,
      rotation: 5,
      models: 3,
      awaitable: 1,
    });
    expect(groupCounts(runner.skipped)).toEqual({ spend: 12, counters: 3 });
    expect(runner.skipped).toContain('KeyStore conformance: counters: counts 200 concurrent counter hits exactly, per fixed window');
  });

  it('refuses a skip that names no group, or that it cannot show as skipped, with a ConfigurationError', () => {
    const createStore = () => new MemoryKeyStore();
    const misspelt = { counter: true } as NonNullable<KeyStoreSuiteOptions['skip']>;
    expect(() => keyStoreSuite({ it: recorder().it, createStore, skip: misspelt })).toThrow(
      new ConfigurationError(
        'ERR_MS_OPTION',
        'keyStoreSuite: skip.counter names no group; the groups are accounts, keys, listing, spend, ledger, holds, rotation, models, counters, awaitable',
      ),
    );
    expect(() => keyStoreSuite({ it: recorder(false).it, createStore, skip: { counters: true } })).toThrow(
      new ConfigurationError(
        'ERR_MS_OPTION',
        'keyStoreSuite: skip needs a test registrar with it.skip (vitest, jest and node:test have one), so that the skipped tests are listed as skipped',
      ),
    );
    // Nothing to skip: a registrar without it.skip is fine.
    const plain = recorder(false);
    keyStoreSuite({ it: plain.it, createStore, skip: { counters: false } });
    expect(plain.run).toHaveLength(54);
    expect(() => keyStoreSuite({ createStore } as unknown as KeyStoreSuiteOptions)).toThrow(ConfigurationError);
  });

  it('gives each test a store of its own and disposes of it, even when the test fails', async () => {
    const runner = recorder();
    const made: KeyStore[] = [];
    const disposed: KeyStore[] = [];
    const failing = new MemoryKeyStore();
    failing.createAccount = async () => {
      throw new Error('backend down');
    };
    const stores = [new MemoryKeyStore(), failing];
    keyStoreSuite({
      it: runner.it,
      createStore: () => {
        const store = stores[made.length] as KeyStore;
        made.push(store);
        return store;
      },
      disposeStore: (store) => {
        disposed.push(store);
      },
    });
    const first = runner.run[0] as (typeof runner.run)[number];
    expect(first.name).toBe('KeyStore conformance: accounts: creates and reads accounts; an unknown id is null; a duplicate id rejects');
    await first.fn();
    await expect(first.fn()).rejects.toThrow('backend down');
    expect(made).toEqual(stores);
    expect(disposed).toEqual(stores);
  });
});
