/**
 * Scenario 6: `POST /v1/chat/completions` to a local fake upstream (upstream.ts), JSON and SSE,
 * called directly, through the lean keep-alive forwarder (lean-forwarder.ts) and through
 * `proxyRouter` (auth, reservation, settlement, metering) on the memory store and on Redis.
 */
import { request } from 'node:http';
import type { BenchChild } from './child.js';
import { latencySummary } from './common.js';
import { type Report, round } from './report.js';
import type { Summary, Target } from './run.js';

export interface ProxyScenarioContext {
  report: Report;
  compare(targets: Target[], cpuOf?: BenchChild, options?: { rounds?: number; durationS?: number }): Promise<Record<string, Summary>>;
  child(file: string): Promise<BenchChild>;
  release(started: BenchChild): Promise<void>;
  /** Length of each throughput round (s). */
  throughputDurationS: number;
  /** Why Redis cannot be used, or null. */
  redisReason: string | null;
  /** Rounds and length of the fixed-rate latency comparison. */
  latency: { rounds: number; durationS: number };
  /** Sequential streaming requests per target for the first SSE byte. */
  firstByteSamples: number;
}

const scenario = '6 proxy';
const MESSAGES = [{ role: 'user', content: 'Say hello' }];
const JSON_BODY = JSON.stringify({ model: 'bench-model', max_tokens: 16, messages: MESSAGES });
const SSE_BODY = JSON.stringify({ model: 'bench-model', max_tokens: 16, stream: true, messages: MESSAGES });

/** The fixed-rate comparison runs at this share of the lean forwarder's throughput. */
const LATENCY_LOAD = 0.5;

/** Time from sending a streaming request to its first response body byte, in ms. */
function firstByte(url: string, key: string | undefined): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(SSE_BODY)),
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
    req.end(SSE_BODY);
  });
}

export async function proxyScenario(context: ProxyScenarioContext): Promise<void> {
  const { report } = context;
  const upstream = await context.child('./upstream.ts');
  const servers = await context.child('./servers.ts');
  try {
    const upstreamPort = await upstream.call<number>('start');
    const setup = await servers.call<{ ports: Record<string, number>; keys: Record<string, string[]> }>('proxy', {
      upstreamPort,
      redis: context.redisReason === null,
    });
    const path = '/v1/chat/completions';
    const at = (port: number) => `http://127.0.0.1:${port}${path}`;
    const endpoints: Array<{ name: string; url: string; keys?: string[] }> = [
      { name: 'upstream directly', url: at(upstreamPort) },
      { name: 'lean forwarder', url: at(setup.ports.lean as number) },
      { name: 'proxyRouter', url: at(setup.ports.memory as number), keys: setup.keys.memory as string[] },
    ];
    const redis =
      setup.ports.redis === undefined
        ? undefined
        : { name: 'proxyRouter on Redis', url: at(setup.ports.redis), keys: setup.keys.redis as string[] };
    const post = (body: string) => ({ method: 'POST' as const, body, headers: { 'content-type': 'application/json' } });
    const kinds = [
      { kind: 'JSON', body: JSON_BODY },
      { kind: 'SSE', body: SSE_BODY },
    ];
    // The forwarder mounted on Express, throughput only: the share of the limit any middleware
    // mounted on Express can reach at most, since Express's own routing comes with the mount.
    // Behind modelSwitchAuth too: the least a forwarder keeping the contract's auth costs there.
    const bounds = [
      { name: 'lean forwarder on Express', url: at(setup.ports.leanExpress as number) },
      { name: 'lean forwarder behind modelSwitchAuth', url: at(setup.ports.leanAuth as number), keys: setup.keys.memory as string[] },
    ];
    const targets: Target[] = kinds.flatMap(({ kind, body }) =>
      [...endpoints, ...bounds, ...(redis && kind === 'JSON' ? [redis] : [])].map((e) => ({
        ...e,
        ...post(body),
        name: `${kind}: ${e.name}`,
      })),
    );
    // Throughput: every target in the same interleaved rounds, with the CPU time the servers child
    // (the forwarder and proxyRouter, not the upstream) spends per answered request.
    const throughput = await context.compare(targets, servers, { durationS: context.throughputDurationS });
    // Latency at a fixed rate, half of what the lean forwarder answered: what a request costs when
    // the gateway is not the bottleneck. The same rate for the upstream, the forwarder and ours.
    const rates: Record<string, number> = {};
    const paced: Target[] = kinds.flatMap(({ kind, body }) => {
      const rate = Math.max(100, Math.round(((throughput[`${kind}: lean forwarder`] as Summary).rps * LATENCY_LOAD) / 10) * 10);
      rates[kind] = rate;
      return endpoints.map((e) => ({ ...e, ...post(body), name: `${kind}: ${e.name}`, overallRate: rate }));
    });
    const latency = await context.compare(paced, undefined, context.latency);
    // First SSE byte: one request at a time, the endpoints taking turns, after a few unmeasured ones.
    const samples: Record<string, number[]> = Object.fromEntries(endpoints.map((e) => [e.name, []]));
    for (let i = -20; i < context.firstByteSamples; i++) {
      for (const endpoint of endpoints) {
        const ms = await firstByte(endpoint.url, endpoint.keys?.[0]);
        if (i >= 0) samples[endpoint.name]?.push(ms);
      }
    }
    report.raw.proxy = { throughput, rates, latency, firstByte: samples };

    for (const target of targets) {
      const summary = throughput[target.name] as Summary;
      report.add({ scenario, measure: `${target.name}: requests/s`, value: Math.round(summary.rps), unit: 'req/s' });
    }
    for (const { kind } of kinds) {
      const get = (name: string) => throughput[`${kind}: ${name}`] as Summary;
      report.ratio(scenario, `${kind}: proxyRouter / lean forwarder (requests/s)`, get('proxyRouter').rps / get('lean forwarder').rps, 0.6);
      report.ratio(
        scenario,
        `${kind}: lean forwarder on Express / lean forwarder (requests/s)`,
        get('lean forwarder on Express').rps / get('lean forwarder').rps,
        null,
      );
      report.ratio(
        scenario,
        `${kind}: lean forwarder behind modelSwitchAuth / lean forwarder (requests/s)`,
        get('lean forwarder behind modelSwitchAuth').rps / get('lean forwarder').rps,
        null,
      );
      report.ratio(
        scenario,
        `${kind}: proxyRouter / lean forwarder behind modelSwitchAuth (requests/s)`,
        get('proxyRouter').rps / get('lean forwarder behind modelSwitchAuth').rps,
        null,
      );
      report.ratio(
        scenario,
        `${kind}: lean forwarder / upstream directly (requests/s)`,
        get('lean forwarder').rps / get('upstream directly').rps,
        null,
      );
    }
    for (const { kind } of kinds) {
      const cpu = (name: string) => (throughput[`${kind}: ${name}`] as Summary).cpuMicrosPerRequest ?? Number.NaN;
      report.add({
        scenario,
        measure: `${kind}: server CPU per request, lean forwarder / on Express / behind modelSwitchAuth / proxyRouter`,
        value: ['lean forwarder', 'lean forwarder on Express', 'lean forwarder behind modelSwitchAuth', 'proxyRouter']
          .map((name) => round(cpu(name), 1))
          .join(' / '),
        unit: 'µs',
      });
      // What the throughput ratio would be where the gateway's own CPU is the only limit.
      report.ratio(
        scenario,
        `${kind}: lean forwarder / proxyRouter (server CPU per request)`,
        cpu('lean forwarder') / cpu('proxyRouter'),
        null,
      );
      report.ratio(
        scenario,
        `${kind}: lean forwarder / lean forwarder on Express (server CPU per request)`,
        cpu('lean forwarder') / cpu('lean forwarder on Express'),
        null,
      );
      report.ratio(
        scenario,
        `${kind}: lean forwarder / lean forwarder behind modelSwitchAuth (server CPU per request)`,
        cpu('lean forwarder') / cpu('lean forwarder behind modelSwitchAuth'),
        null,
      );
    }
    if (redis) {
      report.ratio(
        scenario,
        'JSON: proxyRouter on Redis / proxyRouter on memory (requests/s)',
        (throughput['JSON: proxyRouter on Redis'] as Summary).rps / (throughput['JSON: proxyRouter'] as Summary).rps,
        0.8,
      );
    } else {
      report.skip(scenario, `proxyRouter on Redis: ${context.redisReason}`);
    }
    for (const { kind } of kinds) {
      const get = (name: string) => latency[`${kind}: ${name}`] as Summary;
      const direct = get('upstream directly');
      for (const name of ['upstream directly', 'lean forwarder', 'proxyRouter']) {
        const summary = get(name);
        report.add({
          scenario,
          measure: `${kind} at ${rates[kind]} req/s: ${name} p50 / p99${name === 'upstream directly' ? '' : ` (${Math.round(summary.rps)} req/s answered)`}`,
          value: `${round(summary.p50, 3)} / ${round(summary.p99, 3)}`,
          unit: 'ms',
        });
      }
      for (const name of ['lean forwarder', 'proxyRouter']) {
        const summary = get(name);
        const p99 = summary.p99 - direct.p99;
        report.add({
          scenario,
          measure: `${kind}: p50 added by ${name} over the upstream directly`,
          value: round(summary.p50 - direct.p50, 3),
          unit: 'ms',
        });
        report.add({
          scenario,
          measure: `${kind}: p99 added by ${name} over the upstream directly`,
          value: round(p99, 3),
          unit: 'ms',
          ...(name === 'proxyRouter' ? { target: '<= 2 ms', pass: p99 <= 2 } : {}),
        });
      }
    }
    const first = Object.fromEntries(endpoints.map((e) => [e.name, latencySummary(samples[e.name] ?? [])]));
    for (const endpoint of endpoints) {
      const { p50, p99 } = first[endpoint.name] as { p50: number; p99: number };
      report.add({
        scenario,
        measure: `first SSE byte, one request at a time: ${endpoint.name} p50 / p99`,
        value: `${round(p50, 3)} / ${round(p99, 3)}`,
        unit: 'ms',
      });
    }
    const direct = first['upstream directly'] as { p50: number };
    for (const name of ['lean forwarder', 'proxyRouter']) {
      const added = (first[name] as { p50: number }).p50 - direct.p50;
      report.add({
        scenario,
        measure: `first SSE byte added by ${name} over the upstream directly (p50)`,
        value: round(added, 3),
        unit: 'ms',
        ...(name === 'proxyRouter' ? { target: '<= 1 ms', pass: added <= 1 } : {}),
      });
    }
  } finally {
    await context.release(servers);
    await context.release(upstream);
  }
}
