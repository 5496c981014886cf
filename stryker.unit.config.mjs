import base from './stryker.config.mjs';

/**
 * `stryker.config.mjs` over the narrower test set of `vitest.mutation-unit.config.ts` (the unit
 * tests and the memory store's conformance suite, or the files of `MUTATION_TESTS`): several times
 * faster for one file, and a lower bound of the full set's score. See docs/mutation-testing.md.
 *
 * @type {import('@stryker-mutator/api/core').PartialStrykerOptions}
 */
export default { ...base, vitest: { ...base.vitest, configFile: 'vitest.mutation-unit.config.ts' } };
