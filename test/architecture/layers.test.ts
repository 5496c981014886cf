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
  ['metrics'],
  ['store', 'http', 'events'],
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

/** The modules a file imports (`./x.js`, `node:fs`, `pg`), from its import statements only: JSDoc examples show imports of the host's own files. */
function importSpecifiers(file: string): string[] {
  const text = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '');
  return [...text.matchAll(/(?:from|import)\s*\(?\s*'([^']+)'/g)].map((match) => match[1] as string);
}

function relativeImports(file: string): string[] {
  return importSpecifiers(file).filter((specifier) => /^\.{1,2}\//.test(specifier));
}

/** Every source file `entry` reaches through relative imports (types included), `entry` itself too. */
function reachableFrom(entry: string): Set<string> {
  const reached = new Set<string>();
  const pending = [resolve(SRC, entry)];
  for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
    if (reached.has(file)) continue;
    reached.add(file);
    for (const specifier of relativeImports(file)) pending.push(resolve(dirname(file), specifier).replace(/\.js$/, '.ts'));
  }
  return reached;
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

  it('keeps pg behind modelswitch-keys/postgres: the main and testing entries never reach store/postgres/ or import pg', () => {
    const postgres = join(SRC, 'store', 'postgres');
    const reached = [...reachableFrom('index.ts'), ...reachableFrom('testing/index.ts')];
    expect(reached.length).toBeGreaterThan(20);
    expect(reached.filter((file) => file.startsWith(`${postgres}/`)).map((file) => relative(SRC, file))).toEqual([]);
    const pgImports = files.filter((file) => importSpecifiers(file).some((specifier) => specifier === 'pg' || specifier.startsWith('pg/')));
    expect(pgImports.map((file) => relative(SRC, file)).sort()).toEqual(['store/postgres/load-pg.ts']);
  });
});
