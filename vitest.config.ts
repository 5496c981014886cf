import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Checks every answer the HTTP tests receive against the OpenAPI document.
    setupFiles: ['test/openapi/setup.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
  },
});
