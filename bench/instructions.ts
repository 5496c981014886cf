/**
 * Scenario 1 counted in instructions instead of time: each hot-path server runs in its own process
 * under valgrind's callgrind and answers requests one at a time on one keep-alive connection.
 * Instructions depend far less on the machine's load than requests/s, so this figure moves much
 * less between runs. After `warm` requests (start-up, the key's issue and verification, and the
 * JIT's compilations), `windows` windows of `perWindow` requests are counted one by one: before
 * each, a full garbage collection (not counted; `callgrind_control --zero` after it), after each
 * `callgrind_control --dump`. The first window is kept in bench-results.json but left out of the
 * per-request figure, the mean of the others: in trials it still counted more than the later ones.
 */
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** The variants instructions-server.ts knows, in the order they are reported. */
export const INSTRUCTION_VARIANTS = [
  'node:http',
  'express',
  'pass-through',
  'modelSwitchAuth',
  'contract floor',
  'floor: token + SHA-256 lookup',
  'floor: count + four headers',
  'floor: req.modelSwitch',
] as const;
export type InstructionVariant = (typeof INSTRUCTION_VARIANTS)[number];

/** How many requests a count sends: `warm` first, then `windows` windows of `perWindow`, the first `settlingWindows` left out. */
export interface InstructionRequests {
  warm: number;
  windows: number;
  settlingWindows: number;
  perWindow: number;
}

/** The full count (`--only=instructions`). */
export const INSTRUCTION_REQUESTS: InstructionRequests = { warm: 6000, windows: 4, settlingWindows: 1, perWindow: 2000 };
/** One valgrind run far beyond what it takes here (about three minutes) means something hangs. */
const RUN_TIMEOUT_MS = 15 * 60_000;

/** Why instructions cannot be counted on this machine, or null. */
export function valgrindUnavailableReason(): string | null {
  const probe = spawnSync('valgrind', ['--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) return 'valgrind is not installed (Debian: apt-get install -y valgrind)';
  return null;
}

/** One GET of `path` on 127.0.0.1:`port` through `agent` (`false`: a connection that closes with the answer). */
function get(
  port: number,
  path: string,
  agent: Agent | false,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Sends `count` GETs of /v1/hello one after another on one keep-alive connection; throws on any non-200. */
async function sendSequentially(port: number, key: string, count: number): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const headers = { authorization: `Bearer ${key}` };
  try {
    for (let i = 0; i < count; i++) {
      const { status } = await get(port, '/v1/hello', agent, headers);
      if (status !== 200) throw new Error(`instruction count: request ${i + 1} answered ${status}, not 200`);
    }
  } finally {
    agent.destroy();
  }
}

/**
 * GETs `path` of the server's own routes (`/gc`, `/cpu`) and resolves with the body. On a connection
 * of its own that closes with the answer (no agent), so no idle socket times out in a counted window.
 */
async function serverRoute(port: number, path: '/gc' | '/cpu'): Promise<string> {
  return (await get(port, path, false)).body;
}

/** Every server child still running, so that a failed count stops the others too. */
const running = new Set<ChildProcess>();

/**
 * Starts instructions-server.ts for `variant` as `command args…` (with the throughput bench's
 * heap flags) and waits for its port and key. The child is killed after `RUN_TIMEOUT_MS`, whatever
 * it is doing then; `stop()` ends it normally (stdin closed) and clears that timer.
 */
async function startServer(command: string, args: string[], variant: InstructionVariant) {
  const server = fileURLToPath(new URL('./instructions-server.ts', import.meta.url));
  const child = spawn(command, [...args, '--expose-gc', '--max-old-space-size=8192', '--import', 'tsx', server, variant], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  running.add(child);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once('close', (code) => {
      running.delete(child);
      resolve(code);
    }),
  );
  const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
  const stop = async (): Promise<number | null> => {
    child.stdin.end();
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  try {
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const ready = (await lines.next()).value as string | undefined;
    const key = (await lines.next()).value as string | undefined;
    const port = Number(/^ready (\d+)$/.exec(ready ?? '')?.[1]);
    if (!port || !key || child.pid === undefined) throw new Error(`instruction count: ${variant} did not start: ${stderr.slice(-500)}`);
    return { child, port, key, pid: child.pid, stop, stderr: () => stderr };
  } catch (error) {
    child.kill('SIGKILL');
    await exited;
    clearTimeout(timer);
    throw error;
  }
}

/**
 * User and system CPU per request (µs) of `variant` run natively (no valgrind), one request at a
 * time: how much of a server's CPU the kernel's socket work takes, which callgrind does not count.
 */
export async function nativeCpu(variant: InstructionVariant, warm = 5000, counted = 10_000): Promise<{ user: number; system: number }> {
  // --single-threaded, as under callgrind: background threads' CPU would count as user time.
  const started = await startServer(process.execPath, ['--single-threaded'], variant);
  try {
    await sendSequentially(started.port, started.key, warm);
    const cpu = async () => JSON.parse(await serverRoute(started.port, '/cpu')) as { user: number; system: number };
    const before = await cpu();
    await sendSequentially(started.port, started.key, counted);
    const after = await cpu();
    return { user: (after.user - before.user) / counted, system: (after.system - before.system) / counted };
  } finally {
    await started.stop();
  }
}

/** Instructions `file` (a callgrind dump) counted: its `totals:` line, once callgrind has written it. */
async function dumpTotal(file: string): Promise<number> {
  for (let attempt = 0; attempt < 600; attempt++) {
    const text = await readFile(file, 'utf8').catch(() => '');
    const total = /^totals: (\d+)$/m.exec(text)?.[1];
    if (total) return Number(total);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`instruction count: callgrind wrote no totals to ${file}`);
}

/**
 * Dumps (`--dump`) or zeroes (`--zero`) the counters of the callgrind process `pid`. Asynchronous:
 * a blocked runner would leave the other server it drives idle in the middle of a counted window.
 * `callgrind_control` reaches a process waiting in a system call through `vgdb`, with ptrace: as
 * root, or with `kernel.yama.ptrace_scope` 0.
 */
async function control(action: '--dump' | '--zero', pid: number): Promise<void> {
  try {
    await execFileAsync('callgrind_control', [action, String(pid)], { encoding: 'utf8', timeout: 60_000 });
  } catch (error) {
    throw new Error(`instruction count: callgrind_control ${action} failed (ptrace allowed?): ${String(error)}`);
  }
}

/** Instructions per request of `variant` on the Node executable `node`, in each counted window. */
async function countRun(variant: InstructionVariant, node: string, requests: InstructionRequests): Promise<number[]> {
  const out = join(tmpdir(), `modelswitch-callgrind-${process.pid}-${Math.random().toString(36).slice(2)}.out`);
  try {
    // --single-threaded: no background compiler or GC threads, whose share would vary between runs.
    const started = await startServer('valgrind', ['--tool=callgrind', `--callgrind-out-file=${out}`, node, '--single-threaded'], variant);
    let code: number | null;
    const windows: number[] = [];
    try {
      await sendSequentially(started.port, started.key, requests.warm);
      for (let window = 1; window <= requests.windows; window++) {
        // Every window starts from a collected heap, not counted, so that the windows of one server
        // and the servers compare alike whichever collections the requests before them left due.
        const collected = await serverRoute(started.port, '/gc');
        if (collected !== 'collected') throw new Error(`instruction count: ${variant}: ${collected}`);
        await control('--zero', started.pid);
        await sendSequentially(started.port, started.key, requests.perWindow);
        await control('--dump', started.pid);
        windows.push((await dumpTotal(`${out}.${window}`)) / requests.perWindow);
      }
    } finally {
      code = await started.stop();
    }
    if (code !== 0) throw new Error(`instruction count: ${variant} exited with ${code}: ${started.stderr().slice(-500)}`);
    return windows;
  } finally {
    await Promise.all(Array.from({ length: requests.windows + 1 }, (_, i) => rm(i === 0 ? out : `${out}.${i}`, { force: true })));
  }
}

/** What one server counted: every window, the mean of those after the settling ones, and how far those apart (max / min − 1). */
export interface InstructionCount {
  windows: number[];
  perRequest: number;
  spread: number;
}

/** A Node executable to count on, by the name reported (`Node 20`). */
export interface CountedNode {
  name: string;
  executable: string;
}

/**
 * Instructions per request of each variant on each Node executable, `parallel` servers at a time
 * (valgrind runs on one core each). Answers the counts by node name, then by variant.
 */
export async function countInstructions(
  nodes: readonly CountedNode[],
  variants: readonly InstructionVariant[],
  requests: InstructionRequests,
  parallel = Math.max(1, availableParallelism()),
): Promise<Record<string, Partial<Record<InstructionVariant, InstructionCount>>>> {
  const jobs = nodes.flatMap((node) => variants.map((variant) => ({ node, variant })));
  const result: Record<string, Partial<Record<InstructionVariant, InstructionCount>>> = Object.fromEntries(nodes.map((n) => [n.name, {}]));
  let next = 0;
  async function worker(): Promise<void> {
    while (next < jobs.length) {
      const { node, variant } = jobs[next++] as (typeof jobs)[number];
      const windows = await countRun(variant, node.executable, requests);
      const kept = windows.slice(requests.settlingWindows);
      (result[node.name] as Partial<Record<InstructionVariant, InstructionCount>>)[variant] = {
        windows,
        perRequest: kept.reduce((a, b) => a + b, 0) / kept.length,
        spread: Math.max(...kept) / Math.min(...kept) - 1,
      };
      console.log(
        `  ${node.name}, ${variant}: ${windows.map((w) => Math.round(w).toLocaleString('en-US')).join(', ')} instructions per request, window by window`,
      );
    }
  }
  try {
    await Promise.all(Array.from({ length: Math.min(parallel, jobs.length) }, worker));
  } catch (error) {
    for (const child of running) child.kill('SIGKILL');
    throw error;
  }
  return result;
}

/**
 * The executable of Node `major`: this process's own when it runs that major, else the one
 * `npx -y node@<major>` fetches from the npm registry (cached after the first time). A string
 * saying why not when npx cannot start it.
 */
export function nodeExecutable(major: string): { executable: string } | { reason: string } {
  if (process.versions.node.split('.')[0] === major) return { executable: process.execPath };
  const probe = spawnSync('npx', ['-y', `node@${major}`, '-p', 'process.execPath + " " + process.version'], { encoding: 'utf8' });
  const [executable, version] = (probe.stdout ?? '').trim().split(' ');
  if (probe.status !== 0 || !executable || !version?.startsWith(`v${major}.`)) {
    return {
      reason: `npx -y node@${major} did not start Node ${major}: ${(probe.stderr ?? probe.error?.message ?? '').trim().slice(-200)}`,
    };
  }
  return { executable };
}
