import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/** The repository's root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** The bin as package.json names it: what `npx modelswitch-keys` runs. */
export const BIN = join(ROOT, 'dist', 'cli', 'main.js');

/** Only one test file builds at a time: a lock directory per checkout. */
const BUILD_LOCK = join(tmpdir(), `modelswitch-keys-build-${createHash('sha256').update(ROOT).digest('hex').slice(0, 12)}`);
const LOCK_POLL_MS = 200;

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestSource(path) : statSync(path).mtimeMs);
  }
  return newest;
}

function isFresh(): boolean {
  return existsSync(BIN) && statSync(BIN).mtimeMs >= newestSource(join(ROOT, 'src'));
}

/**
 * Makes sure `dist/` holds a build of the current sources: `npm ci` (prepare) and CI's
 * `npm run check:package` build it already, so this only builds after a source changed locally.
 */
export async function ensureBuilt(): Promise<void> {
  if (isFresh()) return;
  for (;;) {
    try {
      mkdirSync(BUILD_LOCK);
      break;
    } catch {
      await new Promise((done) => setTimeout(done, LOCK_POLL_MS));
    }
  }
  try {
    if (!isFresh())
      await promisify(execFile)(process.execPath, [join(ROOT, 'node_modules', 'tsup', 'dist', 'cli-default.js')], { cwd: ROOT });
  } finally {
    rmSync(BUILD_LOCK, { recursive: true, force: true });
  }
}

/** What one run of the bin did. */
export interface BinRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the built bin with `args`, its environment this process's without `MODELSWITCH_STORE`
 * (tests name the store) plus `env`.
 */
export function runBin(args: readonly string[], env: Record<string, string> = {}): Promise<BinRun> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  if (env.MODELSWITCH_STORE === undefined) delete childEnv.MODELSWITCH_STORE;
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [BIN, ...args], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.once('error', fail);
    child.once('close', (code) => done({ code, stdout, stderr }));
  });
}
