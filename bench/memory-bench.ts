/**
 * Scenario 7: resident memory of a gateway process (proxyRouter on the memory store, see
 * setupMemory in servers.ts) while it proxies `requests` JSON requests over `keys` distinct keys,
 * read at checkpoints. Its first checkpoints are the warm-up (every key verified and counted once,
 * the JIT and the heap settled); after them, resident memory should stay flat.
 */
import type { BenchChild } from './child.js';
import { median } from './common.js';
import { runLoad } from './load.js';
import { type Report, round } from './report.js';

export interface MemoryScenarioContext {
  report: Report;
  child(file: string): Promise<BenchChild>;
  release(started: BenchChild): Promise<void>;
  requests: number;
  keys: number;
  connections: number;
}

/** Checkpoints over the run; resident memory is read after each. */
const CHECKPOINTS = 10;
/** Checkpoints that are the warm-up: growth is measured from the last of them. */
const WARMUP_CHECKPOINTS = 2;
/** Growth of resident memory after the warm-up that still counts as flat. */
const FLAT = 0.1;

interface Reading {
  rssMiB: number;
  collectedRssMiB: number;
  heapMiB: number;
}

const BODY = JSON.stringify({ model: 'bench-model', max_tokens: 16, messages: [{ role: 'user', content: 'Say hello' }] });

export async function memoryScenario(context: MemoryScenarioContext): Promise<void> {
  const { report, requests, keys } = context;
  const scenario = '7 memory';
  const upstream = await context.child('./upstream.ts');
  const servers = await context.child('./servers.ts');
  try {
    const upstreamPort = await upstream.call<number>('start');
    const setup = await servers.call<{ port: number; keys: string[] }>('memory', { upstreamPort, keys });
    const read = () => servers.call<Reading>('rss');
    const checkpoints: Array<Reading & { requests: number; rps: number; failed: number }> = [];
    const start = await read();
    const started = performance.now();
    let sent = 0;
    for (let i = 1; i <= CHECKPOINTS; i++) {
      const amount = Math.round((requests * i) / CHECKPOINTS) - sent;
      const result = await runLoad({
        url: `http://127.0.0.1:${setup.port}/v1/chat/completions`,
        connections: context.connections,
        durationS: 0,
        amount,
        keys: setup.keys,
        method: 'POST',
        body: BODY,
        headers: { 'content-type': 'application/json' },
      });
      sent += amount;
      checkpoints.push({ requests: sent, ...(await read()), rps: result.rps, failed: result.non2xx + result.errors });
    }
    const elapsedS = (performance.now() - started) / 1000;
    report.raw.memory = { requests, keys, start, checkpoints, elapsedS };
    const failed = checkpoints.reduce((sum, c) => sum + c.failed, 0);
    const list = (field: keyof Reading) => [start, ...checkpoints].map((c) => round(c[field], 1)).join(', ');
    const every = Math.round(requests / CHECKPOINTS).toLocaleString('en-US');
    report.add({
      scenario,
      measure: `${requests.toLocaleString('en-US')} proxied requests over ${keys.toLocaleString('en-US')} keys: took / non-2xx or errors`,
      value: `${Math.round(elapsedS)} s / ${failed}`,
      unit: '',
    });
    report.add({ scenario, measure: `resident memory before, then after every ${every} requests`, value: list('rssMiB'), unit: 'MiB' });
    report.add({
      scenario,
      measure: 'resident memory after a full collection, the same checkpoints',
      value: list('collectedRssMiB'),
      unit: 'MiB',
    });
    report.add({ scenario, measure: 'heap in use after a full collection, the same checkpoints', value: list('heapMiB'), unit: 'MiB' });
    // Medians of three checkpoints at each end of the run after warm-up: one reading that caught
    // the allocator at a high point does not decide.
    const after = checkpoints.slice(WARMUP_CHECKPOINTS);
    const early = median(after.slice(0, 3).map((c) => c.collectedRssMiB));
    const late = median(after.slice(-3).map((c) => c.collectedRssMiB));
    const growth = late / early - 1;
    report.add({
      scenario,
      measure: `resident memory after a full collection, growth after warm-up (median of the first three checkpoints after ${(checkpoints[WARMUP_CHECKPOINTS - 1]?.requests ?? 0).toLocaleString('en-US')} requests, ${round(early, 1)} MiB, → median of the last three, ${round(late, 1)} MiB)`,
      value: `${round(growth * 100, 1)} %`,
      unit: '',
      target: `<= ${FLAT * 100} %, every answer 2xx`,
      pass: growth <= FLAT && failed === 0,
    });
    const heapGrowth = median(after.slice(-3).map((c) => c.heapMiB)) / median(after.slice(0, 3).map((c) => c.heapMiB)) - 1;
    report.add({
      scenario,
      measure: 'heap in use after a full collection, the same growth',
      value: `${round(heapGrowth * 100, 1)} %`,
      unit: '',
    });
  } finally {
    await context.release(servers);
    await context.release(upstream);
  }
}
