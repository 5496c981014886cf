/**
 * Mutation testing of the money and access code: `npm run test:mutation` (all of it, long), or one
 * file at a time: `npm run test:mutation -- --mutate src/proxy/exchange.ts`. Scores and the
 * surviving mutants judged equivalent are in docs/mutation-testing.md.
 *
 * @type {import('@stryker-mutator/api/core').PartialStrykerOptions}
 */
export default {
  testRunner: 'vitest',
  plugins: ['@stryker-mutator/vitest-runner'],
  vitest: { configFile: 'vitest.mutation.config.ts', related: true },
  // Each mutant runs only the tests that reach its code.
  coverageAnalysis: 'perTest',
  // Two cores are usually shared with other work: one mutant at a time.
  concurrency: 1,
  mutate: [
    'src/store/spend-rules.ts',
    'src/store/memory/memory-store.ts',
    'src/store/memory/account-book.ts',
    'src/proxy/exchange.ts',
    'src/proxy/metering.ts',
    'src/proxy/sse-usage.ts',
    'src/auth/authenticator.ts',
    'src/auth/rate-limit.ts',
    'src/management/validation.ts',
  ],
  // Code that runs once at module load (constant tables) is mutated too, but every test would have to run for it.
  ignoreStatic: true,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/index.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  thresholds: { high: 90, low: 80, break: null },
  tempDirName: '.stryker-tmp',
  timeoutMS: 10_000,
};
