/** Scenario 6 (issue 4): proxyRouter vs bare http-proxy-middleware vs the upstream itself. */
import { request } from 'node:http';
import type { BenchChild } from './child.js';
import { latencySummary } from './common.js';
import { type Report, round } from './report.js';
import type { Summary, Target } from './run.js';

export interface ProxyScenarioContext {
  report: Report;
  compare(targets: Target[]): Promise<Record<string, Summary>>;
  child(file: string): Promise<BenchChild>;
  release(started: BenchChild): Promise<void>;
  rounds: number;
}

const BODY = JSON.stringify({ model: 'bench-model', max_tokens: 16, messages: [{ role: 'user', content: 'Say hello' }] });
const STREAM_BODY = JSON.stringify({
  model: 'bench-model',
  max_tokens: 16,
  stream: true,
  messages: [{ role: 'user', content: 'Say hello' }],
});

/** Time from sending a streaming request to its first response body byte, in ms. */
function firstByte(url: string, key: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(STREAM_BODY)),
    };
    if (key) headers.authorization = `Bearer ${key}`;
    const req = request(url, { method: 'POST', headers }, (res) => {
      let first: number | undefined;
      res.on('data', () => {
        first ??= performance.now() - started;
      });
      res.on('end', () => (res.statusCode === 200 && first !== undefined ? resolve(first) : reject(new Error(`status ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(STREAM_BODY);
  });
}

export async function proxyScenario(context: ProxyScenarioContext): Promise<void> {
  const { report } = context;
  const scenario = '6 proxy';
  const upstream = await context.child('./upstream.ts');
  const servers = await context.child('./servers.ts');
  try {
    const upstreamPort = await upstream.call<number>('start');
    const setup = await servers.call<{ ports: { ours: number; bare: number }; keys: string[] }>('proxy', { upstreamPort });
    const post = { method: 'POST' as const, body: BODY, headers: { 'content-type': 'application/json' } };
    const targets: Target[] = [
      { name: 'upstream directly', url: `http://127.0.0.1:${upstreamPort}/v1/chat/completions`, ...post },
      { name: 'bare http-proxy-middleware', url: `http://127.0.0.1:${setup.ports.bare}/v1/chat/completions`, ...post },
      { name: 'proxyRouter (auth + metering)', url: `http://127.0.0.1:${setup.ports.ours}/v1/chat/completions`, keys: setup.keys, ...post },
    ];
    const summaries = await context.compare(targets);
    // Time to first SSE byte: sequential requests, alternating targets, after a few unmeasured ones.
    const samples: Record<string, number[]> = Object.fromEntries(targets.map((t) => [t.name, []]));
    const count = context.rounds * 40;
    for (let i = -10; i < count; i++) {
      for (const target of targets) {
        const ms = await firstByte(target.url, target.keys?.[0]);
        if (i >= 0) samples[target.name]?.push(ms);
      }
    }
    report.raw.proxy = { summaries, firstByte: samples };
    for (const target of targets) {
      const summary = summaries[target.name] as Summary;
      const first = latencySummary(samples[target.name] ?? []);
      report.add({ scenario, measure: `${target.name}: requests/s`, value: Math.round(summary.rps), unit: 'req/s' });
      report.add({
        scenario,
        measure: `${target.name}: p50 / p99`,
        value: `${round(summary.p50, 3)} / ${round(summary.p99, 3)}`,
        unit: 'ms',
      });
      report.add({
        scenario,
        measure: `${target.name}: first SSE byte p50 / p99`,
        value: `${round(first.p50, 3)} / ${round(first.p99, 3)}`,
        unit: 'ms',
      });
    }
    const ours = summaries['proxyRouter (auth + metering)'] as Summary;
    const bare = summaries['bare http-proxy-middleware'] as Summary;
    report.ratio(scenario, 'proxyRouter / bare http-proxy-middleware (requests/s)', ours.rps / bare.rps, 0.85);
    const oursFirst = latencySummary(samples['proxyRouter (auth + metering)'] ?? []).p50;
    const bareFirst = latencySummary(samples['bare http-proxy-middleware'] ?? []).p50;
    const extra = oursFirst - bareFirst;
    report.add({
      scenario,
      measure: 'first SSE byte, proxyRouter minus bare (p50)',
      value: round(extra, 3),
      unit: 'ms',
      target: '<= 2',
      pass: extra <= 2,
    });
  } finally {
    await context.release(servers);
    await context.release(upstream);
  }
}
