import { defineConfig } from 'tsup';
import { buildDashboardAssets } from './scripts/build-dashboard.js';

export default defineConfig({
  entry: {
    index: 'src/index.ts',
    'testing/index': 'src/testing/index.ts',
    'postgres/index': 'src/store/postgres/index.ts',
    // The modelswitch-keys bin (package.json "bin").
    'cli/main': 'src/cli/main.ts',
  },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // The PostgreSQL entry loads pg with createRequire(import.meta.url); the shim gives the CommonJS
  // build an import.meta.url (from __filename).
  shims: true,
  // scrypt-kdf and jose ship ESM only; bundling it keeps the CommonJS build free of require(esm).
  noExternal: ['scrypt-kdf', 'jose'],
  // The dashboard's browser assets, into dist/dashboard (after `clean` emptied dist).
  onSuccess: async () => {
    await buildDashboardAssets();
  },
});
