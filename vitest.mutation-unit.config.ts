import { defineConfig } from 'vitest/config';
import mutation from './vitest.mutation.config.js';

/**
 * A narrower test set for one file's mutants (`npx stryker run stryker.unit.config.mjs --mutate
 * <file>`): by default the unit tests and the memory store's run of the conformance suite, or the
 * comma-separated globs of `MUTATION_TESTS` (the test files written for that file). Each mutant
 * then loads a few test files instead of every proxy and integration test that passes through its
 * code, several times faster; the score is a lower bound of the full set's (a mutant killed here
 * is killed there too).
 */
const include = process.env.MUTATION_TESTS?.split(',') ?? [
  'test/unit/**/*.test.ts',
  'test/stores/memory-store.test.ts',
  'test/stores/memory-store-edges.test.ts',
  'test/stores/key-store-suite.test.ts',
];

export default defineConfig({ test: { ...mutation.test, include, exclude: [] } });
