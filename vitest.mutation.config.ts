import { defineConfig } from 'vitest/config';

/**
 * The tests Stryker runs against each mutant (`npm run test:mutation`): the in-process tests of
 * the money and access code. Left out: the fuzz suite (random cases would make a mutant's fate
 * depend on the seed), tests of separate processes, clients and the README (slow, and they cover
 * nothing the in-process tests do not), and the Redis and PostgreSQL suites (a mutant of the shared
 * spend rules is caught by the memory store's run of the same conformance suite).
 */
export default defineConfig({
  test: {
    include: [
      'test/unit/**/*.test.ts',
      'test/proxy/**/*.test.ts',
      'test/integration/**/*.test.ts',
      'test/stores/memory-store.test.ts',
      'test/stores/memory-store-edges.test.ts',
      'test/stores/key-store-suite.test.ts',
    ],
    exclude: ['test/integration/example-process.test.ts', 'test/integration/readme.test.ts', 'test/proxy/example-upstreams.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
  },
});
