import { DEFAULT_SUITE_CONCURRENCY, DEFAULT_SUITE_NAME } from '../defaults.js';
import { ConfigurationError } from '../errors/configuration-error.js';
import type { KeyStore } from '../store/types.js';
import { accountTests } from './accounts.js';
import { awaitableTests } from './awaitable.js';
import { counterTests } from './counters.js';
import type { SuiteGroup } from './group.js';
import { holdTests } from './holds.js';
import { keyTests } from './keys.js';
import { ledgerTests } from './ledger.js';
import { listingTests } from './listing.js';
import { modelTests } from './models.js';
import { rotationTests } from './rotation.js';
import { spendTests } from './spend.js';

/**
 * A group of {@link keyStoreSuite}'s tests, by topic: `accounts`, `keys`, `listing`, `spend`,
 * `ledger`, `holds`, `rotation`, `models`, `counters` and `awaitable` (the hot path's three calls, answered at once or with a promise).
 * Used to name groups in `skip`.
 *
 * @example
 * ```ts
 * const skip: Partial<Record<KeyStoreSuiteGroup, boolean>> = { counters: true };
 * ```
 */
export type KeyStoreSuiteGroup =
  | 'accounts'
  | 'keys'
  | 'listing'
  | 'spend'
  | 'ledger'
  | 'holds'
  | 'rotation'
  | 'models'
  | 'counters'
  | 'awaitable';

/**
 * The topics of the suite, in the order they run, by the name that appears in their test names and
 * in `skip`. A new topic is its own file and one line here (the compiler then asks for its name in
 * {@link KeyStoreSuiteGroup}).
 */
const GROUPS: Readonly<Record<KeyStoreSuiteGroup, SuiteGroup>> = {
  accounts: accountTests,
  keys: keyTests,
  listing: listingTests,
  spend: spendTests,
  ledger: ledgerTests,
  holds: holdTests,
  rotation: rotationTests,
  models: modelTests,
  counters: counterTests,
  awaitable: awaitableTests,
};

/** Each test's timeout: the concurrency tests run hundreds of operations on a remote store. */
const TEST_TIMEOUT_MS = 60_000;

/**
 * A test registrar such as vitest's, jest's, mocha's or `node:test`'s `it`.
 *
 * @example
 * ```ts
 * import { it } from 'vitest';
 * const register: TestFunction = it;
 * ```
 */
export interface TestFunction {
  (name: string, fn: () => Promise<void>, timeoutMs?: number): unknown;
  /** Registers a test reported as skipped (`it.skip`); the suite needs it only when `skip` names a group. */
  skip?: (name: string, fn: () => Promise<void>, timeoutMs?: number) => unknown;
}

/** What {@link keyStoreSuite} needs. */
export interface KeyStoreSuiteOptions {
  /** Registers one test (`it` from vitest, jest, mocha or `node:test`). */
  it: TestFunction;
  /** Makes a store for one test. It may share a backend with other tests: the suite uses random ids. */
  createStore: () => KeyStore | Promise<KeyStore>;
  /** Optional. Called with each test's store when the test ends (default: `store.close?.()`). */
  disposeStore?: (store: KeyStore) => void | Promise<void>;
  /** Optional prefix for the test names, which then read `<name><group>: <test>`. Default `KeyStore conformance: `. */
  name?: string;
  /** How many parallel operations the concurrency tests run. Default 200. */
  concurrency?: number;
  /**
   * Optional. Groups to register as skipped (with `it.skip`, so the runner lists every test of the
   * group as skipped), for a store that lacks a capability yet, e.g. `{ counters: true }`. Skipping
   * a group skips its own tests only: every group still creates accounts and keys, and reads them
   * back, to test its topic. Default: every group runs.
   */
  skip?: Partial<Record<KeyStoreSuiteGroup, boolean>>;
}

/**
 * The conformance suite every `KeyStore` must pass, in groups by topic: `accounts` (create, read,
 * opening balance bounds), `keys` (id allocation, copies, updates, deletes), `listing` (pagination,
 * account and type scoping), `spend` (reservations and settlements under concurrency, two keys on
 * one balance, limit periods, bad amounts), `ledger` (opening entries, idempotent balance changes,
 * usage entries, the invariants under concurrency, paging, usage aggregates, trimming), `holds`
 * (deadlines, release exactly once, extension), `rotation` (hash swap and grace period), `models`
 * (the allow-list as given), `counters` (exact concurrent counts per fixed window) and `awaitable`
 * (the hot path's three calls, answered at once or with a promise, fresh and copied). Test names read `KeyStore conformance: spend: …`. Register it in a test
 * file of your own: a fresh store per test, or one shared store (the tests use random ids).
 *
 * @example
 * ```ts
 * // test/my-store.test.ts
 * import { afterAll, it } from 'vitest';
 * import { keyStoreSuite } from 'modelswitch-keys/testing';
 * import { MyStore } from '../src/my-store.js';
 *
 * const store = new MyStore(process.env.DATABASE_URL);
 * afterAll(() => store.close());
 *
 * keyStoreSuite({ it, createStore: () => store, disposeStore: () => {} });
 * ```
 */
export function keyStoreSuite(options: KeyStoreSuiteOptions): void {
  if (typeof options?.it !== 'function' || typeof options.createStore !== 'function') {
    throw new ConfigurationError(
      'ERR_MS_OPTION',
      'keyStoreSuite({ it, createStore }): pass your test runner’s it and a function that makes the store',
    );
  }
  const prefix = options.name ?? DEFAULT_SUITE_NAME;
  const settings = { concurrency: options.concurrency ?? DEFAULT_SUITE_CONCURRENCY };
  const skipped = skippedGroups(options);
  for (const [group, registerGroup] of Object.entries(GROUPS) as [KeyStoreSuiteGroup, SuiteGroup][]) {
    registerGroup((name, body) => {
      const title = `${prefix}${group}: ${name}`;
      const run = async () => {
        const store = await options.createStore();
        try {
          await body(store);
        } finally {
          await (options.disposeStore ? options.disposeStore(store) : store.close?.());
        }
      };
      if (skipped.has(group)) options.it.skip?.(title, run, TEST_TIMEOUT_MS);
      else options.it(title, run, TEST_TIMEOUT_MS);
    }, settings);
  }
}

/** The groups `options.skip` turns off; a name that is no group, or no `it.skip` to register them with, is a `ConfigurationError`. */
function skippedGroups(options: KeyStoreSuiteOptions): Set<KeyStoreSuiteGroup> {
  const skipped = new Set<KeyStoreSuiteGroup>();
  for (const [group, off] of Object.entries(options.skip ?? {})) {
    if (!Object.hasOwn(GROUPS, group)) {
      throw new ConfigurationError(
        'ERR_MS_OPTION',
        `keyStoreSuite: skip.${group} names no group; the groups are ${Object.keys(GROUPS).join(', ')}`,
      );
    }
    if (off === true) skipped.add(group as KeyStoreSuiteGroup);
  }
  if (skipped.size > 0 && typeof options.it.skip !== 'function') {
    throw new ConfigurationError(
      'ERR_MS_OPTION',
      'keyStoreSuite: skip needs a test registrar with it.skip (vitest, jest and node:test have one), so that the skipped tests are listed as skipped',
    );
  }
  return skipped;
}
