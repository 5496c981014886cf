/**
 * The CLI's bash blocks of the docs, run as written on a fresh clone's build (`node dist/cli/main.js`)
 * against the test PostgreSQL: each block in a schema of its own, every command exits 0.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DATABASE_URL, dropSchema, postgresSkipReason, testSchema } from '../stores/postgres-env.js';
import { ROOT, ensureBuilt } from './built-bin.js';

const DOCS = ['docs/cli.md', 'docs/production.md'];
/** The schema and server the docs name: each run swaps in its own schema (runs share the server). */
const DOCS_SCHEMA = 'ms_docs_example';
const DOCS_STORE = 'postgres://postgres@127.0.0.1:5432/test';

function cliBlocks(file: string): string[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  return [...text.matchAll(/```bash\n([\s\S]*?)```/g)]
    .map((match) => match[1] as string)
    .filter((block) => block.includes('dist/cli/main.js'));
}

describe.skipIf(!DATABASE_URL)(`the docs' CLI commands${postgresSkipReason ? ` (${postgresSkipReason})` : ''}`, () => {
  const schemas: string[] = [];
  beforeAll(async () => {
    await ensureBuilt();
  }, 120_000);
  afterAll(async () => {
    for (const schema of schemas) await dropSchema(DATABASE_URL as string, schema);
  });

  it.each(DOCS.map((file) => [file]))(
    '%s: every CLI block runs and exits 0',
    async (file) => {
      const blocks = cliBlocks(file);
      expect(blocks.length).toBeGreaterThan(0);
      for (const block of blocks) {
        expect(block).toContain(DOCS_STORE);
        const schema = testSchema();
        schemas.push(schema);
        const script = block.replaceAll(DOCS_SCHEMA, schema).replaceAll(DOCS_STORE, DATABASE_URL as string);
        const { stdout, stderr } = await promisify(execFile)('bash', ['-euo', 'pipefail', '-c', script], {
          cwd: ROOT,
          env: { ...process.env, MODELSWITCH_STORE: '' },
        });
        expect(stderr).toBe('');
        expect(stdout).toMatch(/shown once \(only its hash is stored\):\nmk-[0-9A-Za-z]{38}\n/);
      }
    },
    60_000,
  );
});
