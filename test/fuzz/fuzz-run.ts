import fc from 'fast-check';

/**
 * How many cases each property runs, and which run to replay, from the environment:
 * - `FUZZ_RUNS` cases per property (default {@link DEFAULT_FUZZ_RUNS}; raise it for a long hunt);
 * - `FUZZ_SEED` the seed of a run to replay (printed when a property fails);
 * - `FUZZ_PATH` with `FUZZ_SEED`, the path of the failing case (printed too): runs that one case
 *   alone (in a fresh world, so a failure that needed earlier cases' changes replays only with
 *   `FUZZ_SEED` alone, which reruns the whole run);
 * - `FUZZ_SHRINK=1` shrinks a failing case before reporting it (off by default: see below).
 */
export interface FuzzSettings {
  numRuns: number;
  seed: number | undefined;
  path: string | undefined;
}

/** Cases per property in `npm test`: enough to reach every refusal of every route, a few seconds in all. */
export const DEFAULT_FUZZ_RUNS = 300;

export function fuzzSettings(env: NodeJS.ProcessEnv = process.env): FuzzSettings {
  const runs = env.FUZZ_RUNS === undefined || env.FUZZ_RUNS === '' ? DEFAULT_FUZZ_RUNS : Number(env.FUZZ_RUNS);
  if (!Number.isInteger(runs) || runs < 1) throw new TypeError(`FUZZ_RUNS must be a positive integer, not ${env.FUZZ_RUNS}`);
  const seed = env.FUZZ_SEED === undefined || env.FUZZ_SEED === '' ? undefined : Number(env.FUZZ_SEED);
  if (seed !== undefined && !Number.isInteger(seed)) throw new TypeError(`FUZZ_SEED must be an integer, not ${env.FUZZ_SEED}`);
  const path = env.FUZZ_PATH === undefined || env.FUZZ_PATH === '' ? undefined : env.FUZZ_PATH;
  if (path !== undefined && seed === undefined) throw new TypeError('FUZZ_PATH replays a case of one run: set FUZZ_SEED too');
  return { numRuns: runs, seed, path };
}

/**
 * Runs an async property with the settings from the environment. On failure it throws fast-check's
 * report (the failing case and its error) headed by the command that replays it, so a failure seen
 * once in CI can be reproduced and debugged locally.
 */
export async function checkProperty<T>(
  testFile: string,
  arbitrary: fc.Arbitrary<T>,
  predicate: (value: T) => Promise<void>,
  env: NodeJS.ProcessEnv = process.env,
): Promise<void> {
  const settings = fuzzSettings(env);
  const details = await fc.check(fc.asyncProperty(arbitrary, predicate), {
    numRuns: settings.path === undefined ? settings.numRuns : 1,
    ...(settings.seed === undefined ? {} : { seed: settings.seed }),
    ...(settings.path === undefined ? {} : { path: settings.path }),
    includeErrorInReport: true,
    // The routes share one world whose keys and balances earlier cases changed, so a shrunk case
    // replayed later may not fail the same way: the case that failed is reported as it was, unless
    // FUZZ_SHRINK asks for shrinking.
    endOnFailure: !env.FUZZ_SHRINK,
  });
  if (!details.failed) return;
  const replay = `FUZZ_SEED=${details.seed} FUZZ_PATH=${details.counterexamplePath ?? ''} npx vitest run ${testFile}`;
  throw new Error(`Fuzz property failed; replay it with:\n  ${replay}\n\n${fc.defaultReportMessage(details) ?? ''}`);
}
