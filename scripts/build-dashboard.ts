// Builds the dashboard's browser assets (src/dashboard/client) into dist/dashboard: one minified
// script and one stylesheet, which dashboardRouter serves. Run by `npm run build` (tsup's onSuccess)
// and on its own with `npm run build:dashboard`.
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const CLIENT = join(ROOT, 'src', 'dashboard', 'client');

/** Writes app.js and app.css into `outDir` (default dist/dashboard); returns their paths. */
export async function buildDashboardAssets(outDir = join(ROOT, 'dist', 'dashboard')): Promise<{ script: string; stylesheet: string }> {
  mkdirSync(outDir, { recursive: true });
  const script = join(outDir, 'app.js');
  const stylesheet = join(outDir, 'app.css');
  // Built in memory and renamed into place, so a server reading the assets while a test process
  // rebuilds them (test files build them too) never serves a half-written file.
  const outputs = await Promise.all([
    build({
      write: false,
      entryPoints: [join(CLIENT, 'main.ts')],
      outfile: script,
      bundle: true,
      minify: true,
      format: 'iife',
      target: ['chrome109', 'firefox115', 'safari16'],
      legalComments: 'none',
      logLevel: 'warning',
    }),
    build({ write: false, entryPoints: [join(CLIENT, 'style.css')], outfile: stylesheet, bundle: true, minify: true, logLevel: 'warning' }),
  ]);
  for (const file of outputs.flatMap((output) => output.outputFiles)) {
    const temporary = `${file.path}.${process.pid}.tmp`;
    writeFileSync(temporary, file.contents);
    renameSync(temporary, file.path);
  }
  return { script, stylesheet };
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await buildDashboardAssets();
}
