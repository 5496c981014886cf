import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

/**
 * The layers of src/, lowest first. A file may import from its own folder and from lower layers
 * only; two folders on one layer are peers and do not import each other.
 */
const LAYERS: readonly (readonly string[])[] = [
  ['log.ts', 'defaults.ts', 'errors'],
  ['store', 'http'],
  ['keys', 'ledger'],
  ['auth', 'testing'],
  ['management', 'proxy'],
  ['dashboard'],
  ['index.ts'],
  ['cli'],
];

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? sourceFiles(path) : name.endsWith('.ts') ? [path] : [];
  });
}

/** The folder (or top-level file) a source file belongs to. */
function unitOf(file: string): string {
  return relative(SRC, file.replace(/\.js$/, '.ts')).split('/')[0] as string;
}

function layerOf(unit: string): number {
  const layer = LAYERS.findIndex((units) => units.includes(unit));
  if (layer < 0) throw new Error(`src/${unit} is on no layer: add it to LAYERS in this test`);
  return layer;
}

function relativeImports(file: string): string[] {
  // Import statements only: JSDoc examples show imports of the host's own files.
  const text = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '');
  return [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((match) => match[1] as string);
}

describe('the layers of src/', () => {
  const files = sourceFiles(SRC);

  it('puts every file in a folder named for its layer', () => {
    for (const file of files) expect(() => layerOf(unitOf(file)), relative(SRC, file)).not.toThrow();
  });

  it('imports only downward: from its own folder or a lower layer', () => {
    const upward: string[] = [];
    for (const file of files) {
      const from = unitOf(file);
      for (const specifier of relativeImports(file)) {
        const to = unitOf(resolve(dirname(file), specifier));
        if (to === from) continue;
        if (layerOf(to) >= layerOf(from)) upward.push(`${relative(SRC, file)} imports ${specifier}`);
      }
    }
    expect(upward).toEqual([]);
  });

  it('keeps http/ and errors/ free of domain code, and store/ free of http/', () => {
    const offending: string[] = [];
    for (const file of files) {
      const from = unitOf(file);
      for (const specifier of relativeImports(file)) {
        const to = unitOf(resolve(dirname(file), specifier));
        // defaults.ts holds named constants and imports nothing: reading a default is not domain code.
        if ((from === 'http' || from === 'errors') && !['http', 'errors', 'log.ts', 'defaults.ts'].includes(to)) {
          offending.push(`${from} -> ${to}`);
        }
        if (from === 'store' && to === 'http') offending.push(`${from} -> ${to}`);
      }
    }
    expect(offending).toEqual([]);
  });
});
