/**
 * Instructions per call of `modelSwitchAuth` alone, without HTTP: the middleware called in a loop on
 * one request and one response object, for a cached key, under valgrind's callgrind. Much finer
 * than the per-request count of instructions.ts (whose windows differ by more than the whole
 * middleware costs), so it can tell whether a few hundred instructions of the hot path pay.
 *
 * `npx tsx bench/auth-calls.ts` (after `npm run build`: it measures dist/) counts each store kind
 * twice, after `WARM` calls plus `SHORT` and plus `LONG` calls, and reports the difference divided
 * by `LONG - SHORT`: start-up, the key's issue and verification and the JIT's compilations cancel
 * out. Store kinds: `memory` (the MemoryKeyStore as it is) and `promise` (the same store behind
 * async methods, as a store that does I/O answers, less the network).
 * `npx tsx bench/auth-calls.ts child <kind> <calls>` is one such process. `BENCH_DIST=<dir>` counts
 * another build of the package (say, one with a change to compare) instead of dist/.
 */
import { spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { KeyStore } from '../src/store/types.js';
import { issueProxyKeys } from './stores.js';

/** The build counted: dist/, or the one `BENCH_DIST` names. */
const built = process.env.BENCH_DIST
  ? ((await import(pathToFileURL(join(resolve(process.env.BENCH_DIST), 'index.js')).href)) as typeof import('../src/index.js'))
  : await import('./package.js');
const { KeyHasher, MemoryKeyStore, modelSwitchAuth } = built;

const KINDS = ['memory', 'promise'] as const;
type StoreKind = (typeof KINDS)[number];
const WARM = 20_000;
const SHORT = 20_000;
const LONG = 120_000;

/** The memory store's three hot-path methods behind promises, every other method its own. */
function promiseStore(store: KeyStore): KeyStore {
  return Object.assign(Object.create(store) as KeyStore, {
    getKeyByHandle: async (handle: string) => store.getKeyByHandle(handle),
    getAccount: async (id: string) => store.getAccount(id),
    hitCounter: async (name: string, windowMs: number, now: number, amount?: number) => store.hitCounter(name, windowMs, now, amount),
  });
}

async function child(kind: StoreKind, calls: number): Promise<void> {
  const memory = new MemoryKeyStore();
  const hasher = new KeyHasher({ scrypt: { logN: 10 } });
  const [issued] = await issueProxyKeys(memory, hasher, 1);
  if (!issued) throw new Error('no key issued');
  const store = kind === 'memory' ? memory : promiseStore(memory);
  const auth = modelSwitchAuth(store, { hasher, logger: { warn() {}, error() {} } });
  const req = new IncomingMessage(new Socket());
  req.method = 'GET';
  req.url = '/v1/hello';
  req.headers = { authorization: `Bearer ${issued.key}` };
  req.rawHeaders = ['Authorization', `Bearer ${issued.key}`];
  const res = new ServerResponse(req);
  let passed = 0;
  const call = () =>
    new Promise<void>((resolve, reject) =>
      auth(req, res, (error?: unknown) => {
        if (error !== undefined) reject(error);
        passed++;
        resolve();
      }),
    );
  for (let i = 0; i < WARM + calls; i++) await call();
  if (passed !== WARM + calls || res.statusCode !== 200) throw new Error(`only ${passed} calls passed (status ${res.statusCode})`);
}

/** Instructions callgrind counted for one child process. */
async function count(kind: StoreKind, calls: number): Promise<number> {
  const out = join(tmpdir(), `modelswitch-auth-calls-${process.pid}-${kind}-${calls}.out`);
  const self = fileURLToPath(import.meta.url);
  const args = ['--tool=callgrind', `--callgrind-out-file=${out}`, process.execPath, '--single-threaded', '--import', 'tsx'];
  const run = spawn('valgrind', [...args, self, 'child', kind, String(calls)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  run.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const code = await new Promise<number | null>((resolve) => run.once('close', resolve));
  try {
    const total = /^totals: (\d+)$/m.exec(await readFile(out, 'utf8'))?.[1];
    if (code !== 0 || total === undefined) throw new Error(`${kind} ${calls} exited with ${code}: ${stderr.slice(-800)}`);
    return Number(total);
  } finally {
    await rm(out, { force: true });
  }
}

async function main(): Promise<void> {
  const [mode, kind, calls] = process.argv.slice(2);
  if (mode === 'child') {
    if (!KINDS.includes(kind as StoreKind)) throw new Error(`a store kind is one of ${KINDS.join(', ')}`);
    await child(kind as StoreKind, Number(calls));
    return;
  }
  const kinds = mode === undefined ? KINDS : [mode as StoreKind];
  for (const each of kinds) {
    const [short, long] = await Promise.all([count(each, SHORT), count(each, LONG)]);
    console.log(`${each}: ${Math.round((long - short) / (LONG - SHORT)).toLocaleString('en-US')} instructions per call`);
  }
}

await main();
