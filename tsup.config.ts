import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.ts', 'testing/index': 'src/testing/index.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // scrypt-kdf ships ESM only; bundling it keeps the CommonJS build free of require(esm).
  noExternal: ['scrypt-kdf'],
});
