import { spawnSync } from 'node:child_process';
import { request } from 'node:http';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { type BenchChild, startChild } from './child.js';
import { median } from './common.js';
import type { FloodOptions } from './flood.js';
import {
  type CountedNode,
  INSTRUCTION_REQUESTS,
  INSTRUCTION_VARIANTS,
  type InstructionCount,
  type InstructionRequests,
  type InstructionVariant,
  countInstructions,
  nativeCpu,
  nodeExecutable,
  valgrindUnavailableReason,
} from './instructions.js';
import { type LoadResult, runLoad } from './load.js';
import { Report, round } from './report.js';
import { redisUnavailableReason } from './stores.js';

const quick = process.argv.includes('--quick');
const CONFIG = quick
  ? {
      warmupS: 1,
      rounds: 2,
      durationS: 1,
      connections: 20,
      scaleSizes: [1_000, 100_000],
      redisScaleSizes: [1_000],
      cacheBound: { cacheSize: 1_000, keys: 2_500 },
      coldKeys: 40,
      hotRounds: 2,
      hotDurationS: 1,
      proxyDurationS: 1,
      proxyLatency: { rounds: 1, durationS: 1 },
      firstByteSamples: 100,
      memory: { requests: 10_000, keys: 1_000 },
    }
  : {
      warmupS: 1,
      rounds: 5,
      durationS: 3,
      connections: 20,
      scaleSizes: [1_000, 100_000, 1_000_000],
      redisScaleSizes: [1_000, 100_000],
      cacheBound: { cacheSize: 10_000, keys: 25_000 },
      coldKeys: 100,
      hotRounds: 5,
      hotDurationS: 2,
      // Eleven targets: shorter rounds keep the scenario near four minutes.
      proxyDurationS: 2,
      proxyLatency: { rounds: 3, durationS: 2 },
      firstByteSamples: 300,
      // Fewer than `--only=memory` (MEMORY_FULL): the full run must end within 15 minutes.
      memory: { requests: 60_000, keys: 10_000 },
    };
/** `--only=memory`: the memory scenario at its full size, too long for the full run. */
const MEMORY_FULL = { requests: 1_000_000, keys: 10_000 };
if (process.argv.includes('--redis-1m')) CONFIG.redisScaleSizes.push(1_000_000);
/**
 * `--only=hot,stack,scale,attack,cold,proxy,memory,instructions` runs a subset. `--only=memory` runs
 * scenario 7 at its full size (1,000,000 requests), which the full run scales down;
 * `--only=instructions` counts every hot-path variant in instructions, where the full run counts the
 * two its target compares, with fewer requests.
 */
const only = process.argv
  .find((arg) => arg.startsWith('--only='))
  ?.slice('--only='.length)
  .split(',');
const selected = (name: string) => only === undefined || only.includes(name);
/**
 * `--node=24` runs the whole bench (runner, servers, load, floods, valgrind children) on that Node
 * major, from the npm registry (`npx -y node@24`), when another one runs this file. Every child is
 * started with `process.execPath`, so all of them then run on it.
 */
const nodeMajor = process.argv.find((arg) => arg === '--node' || arg.startsWith('--node='))?.slice('--node='.length);
const INSTRUCTIONS_SCENARIO = '1 auth hot path, in instructions';
/**
 * The attacker: its request rate as a share of the server's capacity (the legitimate client's
 * throughput alone, measured in the warm-up), so the scenario means the same on a fast and a slow
 * machine; and a heavier flood, reported without a target. Answering a request at all has a cost
 * (the no-Authorization reference floods show it), which a fixed rate would make depend on the machine.
 */
const FLOOD = { share: 0.1, heavyShare: 0.3, connections: 10 };

const report = new Report();
const children: BenchChild[] = [];

async function child(file: string): Promise<BenchChild> {
  const started = startChild(file);
  children.push(started);
  return started;
}

async function release(started: BenchChild): Promise<void> {
  await started.close();
  children.splice(children.indexOf(started), 1);
}

interface Target {
  name: string;
  url: string;
  keys?: string[];
  method?: 'GET' | 'POST';
  body?: string;
  headers?: Record<string, string>;
  /** A fixed request rate (requests/s) instead of as fast as the server answers. */
  overallRate?: number;
}

interface Summary {
  rps: number;
  p50: number;
  p99: number;
  /** Median server CPU time per answered request (µs), when the comparison measured it. */
  cpuMicrosPerRequest?: number;
  rounds: LoadResult[];
}

function summarise(rounds: LoadResult[], cpuPerRequest: number[] = []): Summary {
  const summary: Summary = {
    rps: median(rounds.map((r) => r.rps)),
    p50: median(rounds.map((r) => r.p50)),
    p99: median(rounds.map((r) => r.p99)),
    rounds,
  };
  if (cpuPerRequest.length > 0) summary.cpuMicrosPerRequest = median(cpuPerRequest);
  return summary;
}

/** The servers child of a scenario, when its CPU time per request should be measured too. */
interface CpuProbe {
  call<T>(command: string, args?: unknown): Promise<T>;
}

function load(target: Target, durationS: number, connections = CONFIG.connections): Promise<LoadResult> {
  return runLoad({
    url: target.url,
    connections,
    durationS,
    ...(target.keys ? { keys: target.keys } : {}),
    ...(target.method ? { method: target.method } : {}),
    ...(target.body === undefined ? {} : { body: target.body }),
    ...(target.headers ? { headers: target.headers } : {}),
    ...(target.overallRate === undefined ? {} : { overallRate: target.overallRate }),
  });
}

function checkClean(name: string, result: LoadResult): void {
  if (result.non2xx > 0 || result.errors > 0) {
    console.log(`  warning: ${name} answered ${result.non2xx} non-2xx and ${result.errors} errors`);
  }
}

/**
 * Warm-up, then `rounds` rounds (default `CONFIG.rounds` of `CONFIG.durationS`) in which every
 * target runs once, the order rotating each round.
 */
async function compare(
  targets: Target[],
  cpuOf?: CpuProbe,
  { rounds = CONFIG.rounds, durationS = CONFIG.durationS } = {},
): Promise<Record<string, Summary>> {
  for (const target of targets) await load(target, CONFIG.warmupS);
  const results: Record<string, LoadResult[]> = Object.fromEntries(targets.map((t) => [t.name, []]));
  const cpu: Record<string, number[]> = Object.fromEntries(targets.map((t) => [t.name, []]));
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < targets.length; i++) {
      const target = targets[(i + round) % targets.length] as Target;
      const before = cpuOf ? await cpuOf.call<{ micros: number }>('cpu') : undefined;
      const result = await load(target, durationS);
      if (cpuOf && before) {
        // Every target of one comparison lives in this one child, and only one is loaded at a time.
        const after = await cpuOf.call<{ micros: number }>('cpu');
        cpu[target.name]?.push((after.micros - before.micros) / Math.max(1, result.ok));
      }
      checkClean(target.name, result);
      results[target.name]?.push(result);
    }
  }
  return Object.fromEntries(Object.entries(results).map(([name, rounds]) => [name, summarise(rounds, cpu[name])]));
}

function throughputFigures(scenario: string, summaries: Record<string, Summary>): void {
  for (const [name, summary] of Object.entries(summaries)) {
    report.add({ scenario, measure: `${name} requests/s`, value: Math.round(summary.rps), unit: 'req/s' });
    report.add({ scenario, measure: `${name} p50 / p99`, value: `${round(summary.p50, 3)} / ${round(summary.p99, 3)}`, unit: 'ms' });
  }
}

const url = (port: number) => `http://127.0.0.1:${port}/v1/hello`;

async function hotPath(): Promise<Summary | undefined> {
  const scenario = '1 auth hot path';
  console.log(`\n${scenario}`);
  const servers = await child('./servers.ts');
  const setup = await servers.call<{
    ports: { bare: number; express: number; ours: number; floor: number };
    keys: string[];
  }>('hotPath');
  const before = await servers.call<{ scryptRuns: number }>('stats', { hasher: 'ours' });
  // Every server gets the very same requests, Authorization header included (the others ignore
  // it), so the load generator does the same work for each and only the server differs.
  const headers = { authorization: `Bearer ${setup.keys[0]}` };
  const summaries = await compare(
    [
      { name: 'node:http', url: url(setup.ports.bare), headers },
      { name: 'express', url: url(setup.ports.express), headers },
      { name: 'express + modelSwitchAuth', url: url(setup.ports.ours), headers },
      { name: 'express + contract floor', url: url(setup.ports.floor), headers },
    ],
    servers,
    { rounds: CONFIG.hotRounds, durationS: CONFIG.hotDurationS },
  );
  const stats = await servers.call<{ scryptRuns: number }>('stats', { hasher: 'ours' });
  await release(servers);
  report.raw.hotPath = summaries;
  throughputFigures(scenario, summaries);
  const bare = summaries['node:http'] as Summary;
  const plain = summaries.express as Summary;
  const ours = summaries['express + modelSwitchAuth'] as Summary;
  const floor = summaries['express + contract floor'] as Summary;
  report.ratio(scenario, 'modelSwitchAuth / express (requests/s)', ours.rps / plain.rps, null);
  report.ratio(scenario, 'modelSwitchAuth / node:http (requests/s)', ours.rps / bare.rps, null);
  report.ratio(scenario, 'contract floor / express (requests/s)', floor.rps / plain.rps, null);
  report.ratio(scenario, 'modelSwitchAuth / contract floor (requests/s)', ours.rps / floor.rps, null);
  for (const [name, summary] of Object.entries(summaries)) {
    if (summary.cpuMicrosPerRequest !== undefined) {
      report.add({ scenario, measure: `${name}: server CPU per request`, value: round(summary.cpuMicrosPerRequest, 1), unit: 'µs' });
    }
  }
  report.add({
    scenario,
    measure: 'scrypt runs under load (after pre-warm)',
    value: stats.scryptRuns - before.scryptRuns,
    unit: '',
    target: '0',
    pass: stats.scryptRuns === before.scryptRuns,
  });
  return plain;
}

/** The Node majors scenario 1 is counted on. */
const INSTRUCTION_NODES = ['20', '24'];

/**
 * Scenario 1 counted in instructions per request under callgrind (see instructions.ts), on Node 20
 * and Node 24: the contract floor against modelSwitchAuth, without the machine's noise. The full
 * run counts the two with fewer requests; `--only=instructions` counts every variant (Express, the
 * floor's steps) with more.
 */
async function instructionCount(requests: InstructionRequests, variants: readonly InstructionVariant[]): Promise<void> {
  const scenario = INSTRUCTIONS_SCENARIO;
  const { warm, windows, settlingWindows, perWindow } = requests;
  console.log(
    `\n${scenario} (callgrind, each server in its own process, one request at a time: ${warm} to warm up, then ${windows} windows of ${perWindow}, the first ${settlingWindows} left out)`,
  );
  const reason = valgrindUnavailableReason();
  if (reason) {
    report.skip(scenario, reason);
    return;
  }
  const nodes: CountedNode[] = [];
  for (const major of INSTRUCTION_NODES) {
    const found = nodeExecutable(major);
    if ('reason' in found) report.skip(scenario, `Node ${major}: ${found.reason}`);
    else nodes.push({ name: `Node ${major}`, executable: found.executable });
  }
  let counted: Awaited<ReturnType<typeof countInstructions>>;
  try {
    counted = await countInstructions(nodes, variants, requests);
  } catch (error) {
    // The other scenarios' figures still count: the table says why this one has none.
    report.skip(scenario, `the count failed: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`);
    process.exitCode = 1;
    return;
  }
  report.raw.instructions = { requests, counted };
  for (const node of nodes) {
    const ofNode = counted[node.name] as Partial<Record<InstructionVariant, InstructionCount>>;
    const per = (variant: InstructionVariant) => (ofNode[variant] as InstructionCount).perRequest;
    const spread = Math.max(...variants.map((v) => (ofNode[v] as InstructionCount).spread));
    for (const variant of variants) {
      report.add({ scenario, measure: `${node.name}: instructions per request, ${variant}`, value: Math.round(per(variant)), unit: '' });
    }
    report.add({
      scenario,
      measure: `${node.name}: largest difference between the counted windows of one server`,
      value: `${round(spread * 100, 2)} %`,
      unit: '',
    });
    report.ratio(
      scenario,
      `${node.name}: contract floor / modelSwitchAuth (instructions per request)`,
      per('contract floor') / per('modelSwitchAuth'),
      0.97,
    );
    if (variants.includes('express')) {
      report.ratio(
        scenario,
        `${node.name}: express / modelSwitchAuth (instructions per request)`,
        per('express') / per('modelSwitchAuth'),
        null,
      );
    }
    if (variants.includes('pass-through')) {
      for (const step of ['floor: token + SHA-256 lookup', 'floor: count + four headers', 'floor: req.modelSwitch'] as const) {
        if (!variants.includes(step)) continue;
        report.add({
          scenario,
          measure: `${node.name}: added by ${step.slice('floor: '.length)} (vs pass-through)`,
          value: Math.round(per(step) - per('pass-through')),
          unit: '',
        });
      }
    }
  }
  if (variants.includes('express')) {
    // callgrind counts the process's own instructions, not the kernel's work on its sockets: the same
    // two servers natively on this Node, one request at a time, their user and system CPU.
    const cpu = { express: await nativeCpu('express'), modelSwitchAuth: await nativeCpu('modelSwitchAuth') };
    report.raw.instructionsNativeCpu = cpu;
    for (const [name, { user, system }] of Object.entries(cpu)) {
      report.add({
        scenario,
        measure: `native on ${process.version}, one request at a time: ${name} CPU per request, user / system`,
        value: `${round(user, 1)} / ${round(system, 1)}`,
        unit: 'µs',
      });
    }
  }
}

async function stack(memoryBaseline: Summary | undefined): Promise<void> {
  const scenario = '2 vs passport + express-rate-limit';
  console.log(`\n${scenario}`);
  const redisReason = redisUnavailableReason();
  const servers = await child('./servers.ts');
  const setup = await servers.call<{ ports: Record<string, number>; keys: Record<string, string[]> }>('stack', {
    redis: redisReason === null,
  });
  const targets = Object.entries(setup.ports).map(([name, port]) => ({ name, url: url(port), keys: setup.keys[name] ?? [] }));
  const summaries = await compare(targets);
  await release(servers);
  report.raw.stack = summaries;
  throughputFigures(scenario, summaries);
  const get = (name: string) => summaries[name] as Summary;
  report.ratio(scenario, 'ours / theirs, memory (requests/s)', get('ours-memory').rps / get('theirs-memory').rps, 1);
  if (redisReason) {
    report.skip(scenario, `Redis comparison: ${redisReason}`);
    return;
  }
  report.ratio(scenario, 'ours / theirs, Redis (requests/s)', get('ours-redis').rps / get('theirs-redis').rps, 1);
  report.ratio(scenario, 'ours on Redis / ours on memory (requests/s)', get('ours-redis').rps / get('ours-memory').rps, 0.8);
  if (memoryBaseline)
    report.ratio(scenario, 'ours on Redis / bare express, scenario 1 (requests/s)', get('ours-redis').rps / memoryBaseline.rps, null);
}

/** What the scale child answers once its store holds `size` keys. */
interface ScaleSetup {
  ports: { ours: number };
  keys: string[];
  seedMs: number;
  heapBytesPer100k: number | null;
}

async function scale(): Promise<void> {
  const scenario = '3 scale';
  console.log(`\n${scenario}`);
  const redisReason = redisUnavailableReason();
  const kinds: Array<['memory' | 'redis', number[]]> = [['memory', CONFIG.scaleSizes]];
  if (redisReason) report.skip(scenario, `Redis sizes: ${redisReason}`);
  else kinds.push(['redis', CONFIG.redisScaleSizes]);
  const raw: Record<string, unknown> = {};
  // Every size of every kind in its own process (its own heap), all seeded at once before any is
  // measured (seeding a million keys takes a while, and each child seeds on its own core); then each
  // kind's sizes are measured in the same interleaved rounds: the machine's drift between sizes
  // must not read as a cost of size.
  const seeded = await Promise.all(
    kinds.map(([kind, sizes]) =>
      Promise.all(
        sizes.map(async (size) => {
          const servers = await child('./servers.ts');
          const setup = await servers.call<ScaleSetup>('scale', { size, kind });
          return { size, servers, setup, name: `${kind} ${size.toLocaleString('en-US')} keys` };
        }),
      ),
    ),
  );
  for (const [index, [kind, sizes]] of kinds.entries()) {
    const bySize = new Map<number, Summary>();
    const started = seeded[index] as Array<{ size: number; servers: BenchChild; setup: ScaleSetup; name: string }>;
    const summaries = await compare(started.map(({ setup, name }) => ({ name, url: url(setup.ports.ours), keys: setup.keys })));
    for (const { servers } of started) await release(servers);
    for (const { size, setup, name } of started) {
      const summary = summaries[name] as Summary;
      bySize.set(size, summary);
      raw[`${kind}-${size}`] = { ...summary, seedMs: setup.seedMs, heapBytesPer100k: setup.heapBytesPer100k };
      const label = `${kind}, ${size.toLocaleString('en-US')} keys`;
      report.add({ scenario, measure: `${label}: requests/s`, value: Math.round(summary.rps), unit: 'req/s' });
      report.add({ scenario, measure: `${label}: p50 / p99`, value: `${round(summary.p50, 3)} / ${round(summary.p99, 3)}`, unit: 'ms' });
      report.add({ scenario, measure: `${label}: seeding took (every size at once)`, value: Math.round(setup.seedMs), unit: 'ms' });
      if (setup.heapBytesPer100k !== null && size >= 100_000) {
        report.add({
          scenario,
          measure: `${label}: heap per 100,000 keys`,
          value: round(setup.heapBytesPer100k / 2 ** 20, 1),
          unit: 'MiB',
        });
      }
    }
    const smallest = bySize.get(sizes[0] as number);
    const largest = bySize.get(sizes[sizes.length - 1] as number);
    if (smallest && largest && sizes.length > 1) {
      const span = `${(sizes[0] as number).toLocaleString('en-US')} → ${(sizes[sizes.length - 1] as number).toLocaleString('en-US')}`;
      report.ratio(scenario, `${kind} requests/s, ${span} keys`, largest.rps / smallest.rps, 0.9);
      report.ratio(scenario, `${kind} p50 latency, ${span} keys (lower is better)`, largest.p50 / smallest.p50, null);
    }
  }
  const servers = await child('./servers.ts');
  const bound = await servers.call<{ cacheSize: number; verifiedKeys: number; cachedKeys: number; largest: number }>(
    'cacheBound',
    CONFIG.cacheBound,
  );
  await release(servers);
  raw.cacheBound = bound;
  report.raw.scale = raw;
  report.add({
    scenario,
    measure: `verified-key cache after ${bound.verifiedKeys.toLocaleString('en-US')} distinct keys (largest seen)`,
    value: `${bound.cachedKeys} (${bound.largest})`,
    unit: 'entries',
    target: `<= ${bound.cacheSize}`,
    pass: bound.largest <= bound.cacheSize,
  });
}

async function attack(): Promise<void> {
  const scenario = '4 under attack';
  console.log(
    `\n${scenario} (flood: ${FLOOD.share * 100}% of capacity, heavy ${FLOOD.heavyShare * 100}%, on ${FLOOD.connections} connections)`,
  );
  const servers = await child('./servers.ts');
  const attacker = await child('./flood.ts');
  const setup = await servers.call<{ ports: Record<string, number>; legitimate: string; handles: string[] }>('attack', {
    withUnthrottled: !quick,
  });
  // One key on every request: a fixed header, so the legitimate client's requests are built once (as
  // in scenario 1), not again for every request.
  const legitHeaders = { authorization: `Bearer ${setup.legitimate}` };
  const legit = (name: string): Target => ({ name, url: url(setup.ports[name] as number), headers: legitHeaders });
  type Mode = FloodOptions['mode'] | 'alone';
  // Interleaved, round after round. Flood (b) is not among them: its per-handle throttle has state
  // (when each handle's next scrypt turn is), so it is measured as one sustained flood below.
  type Condition = { name: string; server: string; mode: Mode; heavy?: boolean };
  /** The legitimate client without a flood: the warm-up, the rounds' baseline and the sustained flood's brackets. */
  const aloneCondition: Condition = { name: 'alone', server: 'ours', mode: 'alone' };
  const conditions: Condition[] = [
    aloneCondition,
    { name: 'flood without Authorization (reference)', server: 'ours', mode: 'none' },
    { name: 'flood (a) invented keys', server: 'ours', mode: 'invented' },
  ];
  if (setup.ports.unthrottled) {
    conditions.push({ name: 'flood (b) with the per-handle throttle off', server: 'unthrottled', mode: 'guess' });
    conditions.push(
      { name: 'heavy flood without Authorization (reference)', server: 'ours', mode: 'none', heavy: true },
      { name: 'heavy flood (a) invented keys', server: 'ours', mode: 'invented', heavy: true },
    );
  }
  const sustained = { name: 'flood (b) real handles, wrong secrets', server: 'ours', mode: 'guess' as Mode };
  /** Flood rates in requests/s, set from the warm-up's legitimate throughput. */
  const rate = { main: 0, heavy: 0 };
  const rounds: Record<string, LoadResult[]> = Object.fromEntries([...conditions, sustained].map((c) => [c.name, []]));
  const scrypt: Record<string, number> = Object.fromEntries([...conditions, sustained].map((c) => [c.name, 0]));
  const floodSent: Record<string, number> = Object.fromEntries([...conditions, sustained].map((c) => [c.name, 0]));
  /** Share of one core the attacker's own process used, per round of each condition. */
  const floodCpu: Record<string, number[]> = Object.fromEntries([...conditions, sustained].map((c) => [c.name, []]));
  const warmupScrypt: Record<string, number> = {};
  /** Waits until no scrypt run of `hasher` is running or queued in the servers child. */
  async function scryptQuiet(hasher: string): Promise<void> {
    while ((await servers.call<{ inFlight: number }>('stats', { hasher })).inFlight > 0) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  async function once(condition: Condition, durationS: number): Promise<LoadResult> {
    const hasher = condition.server === 'ours' ? 'ours' : 'unthrottled';
    const before = await servers.call<{ scryptRuns: number }>('stats', { hasher });
    const flood =
      condition.mode === 'alone'
        ? Promise.resolve({ sent: 0, cpuShare: 0 })
        : attacker.call<{ sent: number; cpuShare: number }>('flood', {
            url: url(setup.ports[condition.server] as number),
            connections: FLOOD.connections,
            durationS,
            overallRate: condition.heavy ? rate.heavy : rate.main,
            mode: condition.mode,
            handles: setup.handles,
          } satisfies FloodOptions);
    const [result, flooded] = await Promise.all([load(legit(condition.server), durationS), flood]);
    // Guesses still queued for scrypt belong to this condition: wait for them before the next one.
    await scryptQuiet(hasher);
    const after = await servers.call<{ scryptRuns: number }>('stats', { hasher });
    scrypt[condition.name] = (scrypt[condition.name] ?? 0) + after.scryptRuns - before.scryptRuns;
    floodSent[condition.name] = (floodSent[condition.name] ?? 0) + flooded.sent;
    if (condition.mode !== 'alone') floodCpu[condition.name]?.push(flooded.cpuShare);
    return result;
  }
  // Warm-up: the legitimate client alone, twice, then once more for as long as a round: that run
  // sets the flood rates (the first seconds after setup answer well below the rounds' rate);
  // then the unthrottled guess flood.
  await once(aloneCondition, CONFIG.warmupS);
  await once(aloneCondition, CONFIG.warmupS);
  const capacity = (await once(aloneCondition, CONFIG.durationS)).rps;
  rate.main = Math.max(50, Math.round((capacity * FLOOD.share) / 10) * 10);
  rate.heavy = Math.max(150, Math.round((capacity * FLOOD.heavyShare) / 10) * 10);
  console.log(`  capacity in the warm-up: ${Math.round(capacity)} req/s; flood ${rate.main} req/s, heavy flood ${rate.heavy} req/s`);
  const unthrottledCondition = conditions.find((c) => c.server === 'unthrottled');
  if (unthrottledCondition) await once(unthrottledCondition, CONFIG.warmupS);
  for (const name of Object.keys(scrypt)) {
    warmupScrypt[name] = scrypt[name] ?? 0;
    scrypt[name] = 0;
    floodSent[name] = 0;
    floodCpu[name] = [];
  }
  for (let round = 0; round < CONFIG.rounds; round++) {
    for (let i = 0; i < conditions.length; i++) {
      const condition = conditions[(i + round) % conditions.length] as Condition;
      const result = await once(condition, CONFIG.durationS);
      checkClean(`legitimate (${condition.name})`, result);
      rounds[condition.name]?.push(result);
    }
  }
  // Flood (b), sustained: one uninterrupted guess flood. Its first seconds spend every handle's
  // first turn; then the legitimate client runs for one whole turn period (window / limit, 30 s by
  // default, plus 2 s), so the measure includes the next turn of every handle, as a long attack would.
  // It cannot take turns with the other conditions, so the legitimate client runs alone for
  // `bracketS` right before and right after it: the machine's drift over the minute it takes
  // then moves both sides of the ratio alike.
  const settleS = 2;
  const measuredS = quick ? 6 : 32;
  const bracketS = quick ? CONFIG.durationS : CONFIG.durationS * 2;
  const aloneBefore = await once(aloneCondition, bracketS);
  const scryptBefore = await servers.call<{ scryptRuns: number }>('stats', { hasher: 'ours' });
  const sustainedFlood = attacker.call<{ sent: number; cpuShare: number }>('flood', {
    url: url(setup.ports.ours as number),
    connections: FLOOD.connections,
    durationS: settleS + measuredS + 1,
    overallRate: rate.main,
    mode: 'guess',
    handles: setup.handles,
  } satisfies FloodOptions);
  await new Promise((resolve) => setTimeout(resolve, settleS * 1000));
  const scryptSettled = await servers.call<{ scryptRuns: number }>('stats', { hasher: 'ours' });
  const sustainedResult = await load(legit('ours'), measuredS);
  checkClean(`legitimate (${sustained.name})`, sustainedResult);
  rounds[sustained.name]?.push(sustainedResult);
  await scryptQuiet('ours');
  const scryptMeasured = await servers.call<{ scryptRuns: number }>('stats', { hasher: 'ours' });
  const sustainedSent = await sustainedFlood;
  floodSent[sustained.name] = sustainedSent.sent;
  floodCpu[sustained.name]?.push(sustainedSent.cpuShare);
  // Guesses the flood sent in its last second may still be queued: the "after" run starts on a quiet server.
  await scryptQuiet('ours');
  const aloneAfter = await once(aloneCondition, bracketS);
  checkClean('legitimate (alone, around the sustained flood)', aloneBefore);
  checkClean('legitimate (alone, around the sustained flood)', aloneAfter);
  const aloneAround = (aloneBefore.rps + aloneAfter.rps) / 2;
  warmupScrypt[sustained.name] = scryptSettled.scryptRuns - scryptBefore.scryptRuns;
  scrypt[sustained.name] = scryptMeasured.scryptRuns - scryptSettled.scryptRuns;
  const stats = await servers.call<{ throttled: number }>('stats', { hasher: 'ours' });
  await release(attacker);
  await release(servers);
  const summaries = Object.fromEntries(Object.entries(rounds).map(([name, r]) => [name, summarise(r)]));
  report.raw.attack = {
    flood: { ...FLOOD, rates: rate, capacity },
    summaries,
    scryptRuns: scrypt,
    warmupScrypt,
    floodSent,
    floodCpu,
    aloneAroundSustained: { before: aloneBefore, after: aloneAfter },
    throttledVerifications: stats.throttled,
  };
  report.add({
    scenario,
    measure: 'flood rate (10% of capacity) / heavy flood rate (30%)',
    value: `${rate.main} / ${rate.heavy}`,
    unit: 'req/s',
  });
  const alone = (summaries.alone as Summary).rps;
  const reference = (summaries['flood without Authorization (reference)'] as Summary).rps;
  for (const condition of [...conditions, sustained]) {
    const summary = summaries[condition.name] as Summary;
    report.add({ scenario, measure: `legitimate requests/s, ${condition.name}`, value: Math.round(summary.rps), unit: 'req/s' });
    if (condition.mode !== 'alone') {
      report.add({
        scenario,
        measure: `  scrypt runs during ${condition.name}`,
        value: scrypt[condition.name] ?? 0,
        unit: `(flood sent ${floodSent[condition.name]})`,
      });
      report.add({
        scenario,
        measure: `  attacker's own CPU during ${condition.name} (${condition === sustained ? 'the whole flood' : 'median round'})`,
        value: `${Math.round(median(floodCpu[condition.name] ?? []) * 100)} %`,
        unit: 'of one core',
      });
    }
  }
  report.add({
    scenario,
    measure: '(a) scrypt runs',
    value: scrypt['flood (a) invented keys'] ?? 0,
    unit: '',
    target: '0',
    pass: scrypt['flood (a) invented keys'] === 0,
  });
  report.ratio(scenario, '(a) legitimate throughput / alone', (summaries['flood (a) invented keys'] as Summary).rps / alone, 0.9);
  report.ratio(
    scenario,
    '(a) legitimate throughput / same-rate flood without Authorization',
    (summaries['flood (a) invented keys'] as Summary).rps / reference,
    null,
  );
  report.add({
    scenario,
    measure: `legitimate requests/s, alone right before / right after the sustained flood (b) (${bracketS} s each)`,
    value: `${Math.round(aloneBefore.rps).toLocaleString('en-US')} / ${Math.round(aloneAfter.rps).toLocaleString('en-US')}`,
    unit: 'req/s',
  });
  report.ratio(
    scenario,
    '(b) legitimate throughput / alone (right before and after it)',
    (summaries['flood (b) real handles, wrong secrets'] as Summary).rps / aloneAround,
    0.8,
  );
  report.ratio(
    scenario,
    '(b) legitimate throughput / alone (median of the rounds)',
    (summaries['flood (b) real handles, wrong secrets'] as Summary).rps / alone,
    null,
  );
  report.ratio(
    scenario,
    '(b) legitimate throughput / same-rate flood without Authorization',
    (summaries['flood (b) real handles, wrong secrets'] as Summary).rps / reference,
    null,
  );
  const unthrottled = summaries['flood (b) with the per-handle throttle off'];
  if (unthrottled) report.ratio(scenario, '(b) with the throttle off: legitimate throughput / alone', unthrottled.rps / alone, null);
  for (const name of ['heavy flood without Authorization (reference)', 'heavy flood (a) invented keys']) {
    const heavy = summaries[name];
    if (heavy) report.ratio(scenario, `${name}: legitimate throughput / alone`, heavy.rps / alone, null);
  }
  report.add({ scenario, measure: '(b) guesses refused by the per-handle throttle', value: stats.throttled, unit: '' });
  report.add({
    scenario,
    measure: `(b) scrypt runs in the flood's first ${settleS} s (every handle's first turn)`,
    value: warmupScrypt[sustained.name] ?? 0,
    unit: `(${setup.handles.length} handles)`,
  });
  const perMinute = ((scrypt[sustained.name] ?? 0) / measuredS) * 60;
  report.add({
    scenario,
    measure: `(b) scrypt runs while the legitimate client ran (${measuredS} s)`,
    value: scrypt[sustained.name] ?? 0,
    unit: '',
  });
  report.add({
    scenario,
    measure: '(b) scrypt runs per minute in the sustained flood',
    value: round(perMinute, 1),
    unit: '',
    target: `<= ${setup.handles.length * 2} (${setup.handles.length} handles × 2)`,
    // One turn per handle every 30 s (the default 2 per minute): at most this many in the span.
    pass: (scrypt[sustained.name] ?? 0) <= setup.handles.length * (Math.floor(measuredS / 30) + 1),
  });
}

/** One GET with a fresh connection; resolves with its latency in ms and status. */
function timedGet(target: string, key: string): Promise<{ ms: number; status: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = request(target, { agent: false, headers: { authorization: `Bearer ${key}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ ms: performance.now() - started, status: res.statusCode ?? 0 }));
    });
    req.on('error', reject);
    req.end();
  });
}

interface ProbeResult {
  fs: { p50: number; p99: number; max: number; samples: number };
  eventLoopDelayP99Ms: number;
}

async function coldStart(): Promise<void> {
  const scenario = '5 cold start';
  console.log(`\n${scenario} (${CONFIG.coldKeys} distinct keys, scrypt logN 15 r 8 p 1, 2 scrypt runs at once)`);
  const servers = await child('./servers.ts');
  const setup = await servers.call<{ ports: { ours: number }; keys: string[]; hashMsEach: number; verifyMs: number; threadpool: string }>(
    'cold',
    {
      keys: CONFIG.coldKeys,
    },
  );
  await servers.call('probeStart');
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const idle = await servers.call<ProbeResult>('probeStop');
  await servers.call('probeStart');
  const started = performance.now();
  const answers = await Promise.all(setup.keys.map((key) => timedGet(url(setup.ports.ours), key)));
  const totalMs = performance.now() - started;
  const during = await servers.call<ProbeResult>('probeStop');
  // The same keys again: now cached.
  const warm = await Promise.all(setup.keys.map((key) => timedGet(url(setup.ports.ours), key)));
  const stats = await servers.call<{ scryptRuns: number }>('stats', { hasher: 'ours' });
  await release(servers);
  const latencies = answers.map((a) => a.ms).sort((a, b) => a - b);
  const failed = answers.filter((a) => a.status !== 200).length + warm.filter((a) => a.status !== 200).length;
  report.raw.coldStart = {
    setup: { ...setup, keys: setup.keys.length },
    totalMs,
    latencies,
    idle,
    during,
    scryptRuns: stats.scryptRuns,
    failed,
  };
  report.add({ scenario, measure: 'one scrypt verification alone', value: round(setup.verifyMs, 1), unit: 'ms' });
  report.add({
    scenario,
    measure: `all ${answers.length} first requests at once: until the last answer`,
    value: Math.round(totalMs),
    unit: 'ms',
  });
  report.add({
    scenario,
    measure: 'first requests: fastest / median / slowest',
    value: `${Math.round(latencies[0] ?? 0)} / ${Math.round(median(latencies))} / ${Math.round(latencies[latencies.length - 1] ?? 0)}`,
    unit: 'ms',
  });
  report.add({
    scenario,
    measure: 'cold verifications per second (cap 2 at once)',
    value: round((answers.length / totalMs) * 1000, 1),
    unit: '/s',
  });
  report.add({
    scenario,
    measure: 'scrypt runs for the first and second request of every key',
    value: stats.scryptRuns,
    unit: '',
    target: `${answers.length}`,
    pass: stats.scryptRuns === answers.length,
  });
  report.add({ scenario, measure: 'non-200 answers', value: failed, unit: '', target: '0', pass: failed === 0 });
  report.add({
    scenario,
    measure: `fs.readFile p50 / p99, idle vs during cold start (threadpool ${setup.threadpool})`,
    value: `${round(idle.fs.p50, 2)} / ${round(idle.fs.p99, 2)} vs ${round(during.fs.p50, 2)} / ${round(during.fs.p99, 2)}`,
    unit: 'ms',
  });
  report.add({
    scenario,
    measure: 'event-loop delay p99, idle vs during cold start',
    value: `${round(idle.eventLoopDelayP99Ms, 2)} vs ${round(during.eventLoopDelayP99Ms, 2)}`,
    unit: 'ms',
  });
}

async function proxy(): Promise<void> {
  console.log('\n6 proxy');
  const { proxyScenario } = await import('./proxy-bench.js');
  await proxyScenario({
    report,
    compare,
    child,
    release,
    redisReason: redisUnavailableReason(),
    throughputDurationS: CONFIG.proxyDurationS,
    latency: CONFIG.proxyLatency,
    firstByteSamples: CONFIG.firstByteSamples,
  });
}

async function memory(size: { requests: number; keys: number }): Promise<void> {
  console.log(`\n7 memory (${size.requests.toLocaleString('en-US')} proxied requests over ${size.keys.toLocaleString('en-US')} keys)`);
  const { memoryScenario } = await import('./memory-bench.js');
  await memoryScenario({ report, child, release, connections: CONFIG.connections, ...size });
}

/** The instruction count of the full run: the two variants its target compares, fewer requests than `--only=instructions`. */
const QUICK_INSTRUCTIONS: InstructionRequests = { warm: 3000, windows: 3, settlingWindows: 1, perWindow: 1000 };

async function main(): Promise<void> {
  const started = performance.now();
  console.log(
    `modelswitch-keys benchmark${quick ? ' (--quick)' : ''}, Node ${process.version}: ${CONFIG.rounds} rounds of ${CONFIG.durationS}s (the hot path: ${CONFIG.hotRounds} of ${CONFIG.hotDurationS}s), ${CONFIG.connections} connections, median reported`,
  );
  const timings: Record<string, number> = {};
  /** Runs one scenario and prints how long it took (bench-results.json keeps them all). */
  async function timed<T>(name: string, run: () => Promise<T>): Promise<T> {
    const begun = performance.now();
    const result = await run();
    timings[name] = round((performance.now() - begun) / 1000, 1);
    console.log(`  (${name} took ${Math.round(timings[name] ?? 0)} s)`);
    return result;
  }
  const plain = selected('hot') ? await timed('hot', hotPath) : undefined;
  if (selected('stack')) await timed('stack', () => stack(plain));
  if (selected('scale')) await timed('scale', scale);
  if (selected('attack')) await timed('attack', attack);
  if (selected('cold')) await timed('cold', coldStart);
  if (selected('proxy')) await timed('proxy', proxy);
  if (only?.includes('memory')) await timed('memory', () => memory(quick ? CONFIG.memory : MEMORY_FULL));
  else if (only === undefined) await timed('memory', () => memory(CONFIG.memory));
  if (only?.includes('instructions')) await timed('instructions', () => instructionCount(INSTRUCTION_REQUESTS, INSTRUCTION_VARIANTS));
  else if (only === undefined && !quick)
    await timed('instructions', () => instructionCount(QUICK_INSTRUCTIONS, ['contract floor', 'modelSwitchAuth']));
  else if (only === undefined) report.skip(INSTRUCTIONS_SCENARIO, 'not in a --quick run (minutes under valgrind)');
  const elapsedS = (performance.now() - started) / 1000;
  const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  console.log(`\n${report.table()}\n\nTook ${Math.round(elapsedS)} s.`);
  const context = { quick, config: CONFIG, flood: FLOOD, elapsedS: round(elapsedS, 1), timings, command };
  report.write('bench-results.json', context);
  console.log('Wrote bench-results.json');
  // Only a full run, or the full-size memory scenario alone, replaces the figures in the docs.
  const section = quick ? undefined : only === undefined ? 'results' : only.length === 1 && only[0] === 'memory' ? 'memory' : undefined;
  if (section && !process.argv.includes('--no-docs')) {
    const env = process.env.REDIS_URL ? 'REDIS_URL=… ' : '';
    report.writeDocs(DOCS, section, { command: `${env}${command}`, elapsedS });
    console.log(`Wrote the ${section} table of docs/performance.md`);
  }
}

const DOCS = fileURLToPath(new URL('../docs/performance.md', import.meta.url));

if (nodeMajor !== undefined && !/^[1-9][0-9]*$/.test(nodeMajor)) {
  console.error(`--node takes a Node major version, such as --node=24 (got "${nodeMajor}")`);
  process.exitCode = 2;
} else if (nodeMajor !== undefined && nodeMajor !== process.versions.node.split('.')[0]) {
  if (process.env.MODELSWITCH_BENCH_RERUN !== undefined) {
    // Started by the branch below, yet on another major: npx ran some other node. Never re-run again.
    console.error(`--node=${nodeMajor}: npx -y node@${nodeMajor} started Node ${process.version}; not running the bench`);
    process.exitCode = 2;
  } else {
    const tsx = createRequire(import.meta.url).resolve('tsx/cli');
    const args = ['-y', `node@${nodeMajor}`, tsx, fileURLToPath(import.meta.url), ...process.argv.slice(2)];
    const rerun = spawnSync('npx', args, { stdio: 'inherit', env: { ...process.env, MODELSWITCH_BENCH_RERUN: '1' } });
    if (rerun.error) console.error(`could not start Node ${nodeMajor} with npx: ${rerun.error.message}`);
    if (rerun.signal) console.error(`the bench on Node ${nodeMajor} was stopped by ${rerun.signal}`);
    process.exitCode = rerun.status ?? 1;
  }
} else {
  main()
    .catch((error: unknown) => {
      console.error(error);
      process.exitCode = 1;
    })
    .finally(async () => {
      for (const started of [...children]) await started.close();
    });
}

export type { Summary, Target };
