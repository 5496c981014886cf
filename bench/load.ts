import { createRequire } from 'node:module';
import { latencySummary } from './common.js';

/** What one autocannon run measured. Latencies in ms, from each response's own timer (sub-ms precision). */
export interface LoadResult {
  /** 2xx responses per second. */
  rps: number;
  p50: number;
  p99: number;
  ok: number;
  non2xx: number;
  errors: number;
  durationS: number;
}

export interface LoadOptions {
  url: string;
  connections: number;
  durationS: number;
  /** Stop after this many requests instead of after `durationS`. */
  amount?: number;
  /** Sent on every request. */
  headers?: Record<string, string>;
  /** Rotated as `Authorization: Bearer <key>`, one per request. */
  keys?: readonly string[];
  /** Cap on the total request rate (requests/s), for a flood of a fixed size. */
  overallRate?: number;
  method?: 'GET' | 'POST';
  body?: string;
}

interface AutocannonRequest {
  headers?: Record<string, string>;
  [field: string]: unknown;
}
interface AutocannonResult {
  '2xx': number;
  non2xx: number;
  errors: number;
  timeouts: number;
  duration: number;
}
interface AutocannonInstance extends PromiseLike<AutocannonResult> {
  on(event: 'response', listener: (client: unknown, statusCode: number, bytes: number, responseTimeMs: number) => void): void;
}
type Autocannon = (options: Record<string, unknown>) => AutocannonInstance;

// autocannon is CommonJS without typings; the small surface used here is typed above.
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

/** Runs autocannon once against `url` and summarises 2xx throughput and latency. */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const keys = options.keys;
  let next = 0;
  const requests =
    keys && keys.length > 0
      ? [
          {
            setupRequest(request: AutocannonRequest): AutocannonRequest {
              const key = keys[next++ % keys.length] as string;
              request.headers = { ...request.headers, authorization: `Bearer ${key}` };
              return request;
            },
          },
        ]
      : undefined;
  const instance = autocannon({
    url: options.url,
    connections: options.connections,
    ...(options.amount === undefined ? { duration: options.durationS } : { amount: options.amount }),
    headers: options.headers ?? {},
    method: options.method ?? 'GET',
    ...(options.body === undefined ? {} : { body: options.body }),
    ...(requests ? { requests } : {}),
    ...(options.overallRate === undefined ? {} : { overallRate: options.overallRate }),
  });
  const latencies: number[] = [];
  instance.on('response', function recordLatency(_client, statusCode, _bytes, responseTimeMs) {
    if (statusCode >= 200 && statusCode < 300) latencies.push(responseTimeMs);
  });
  const result = await instance;
  const summary = latencySummary(latencies);
  const durationS = result.duration > 0 ? result.duration : options.durationS;
  return {
    rps: result['2xx'] / durationS,
    p50: summary.p50,
    p99: summary.p99,
    ok: result['2xx'],
    non2xx: result.non2xx,
    errors: result.errors + result.timeouts,
    durationS,
  };
}
