import type { IncomingMessage, ServerResponse } from 'node:http';
import { answeredErrorCode } from '../http/respond.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';

/** A request one of the factories counts: the route template it was last given. */
interface Tracked {
  route: string;
}

const tracked = new WeakMap<IncomingMessage, Tracked>();

/**
 * Counts `req` in `metrics` once, when its response closes: its route template (a bounded label,
 * never the raw path), method, status and error code (`ok` when none was answered;
 * `client_closed` when the client left before the response ended). The first factory to see the
 * request tracks it; a later, more specific one names its route with {@link nameRoute}.
 *
 * @example
 * ```ts
 * trackRequest(metrics, req, res, '/v1/*'); // modelSwitchAuth: any route below it, unless named later
 * nameRoute(req, '/v1/chat/completions'); // proxyRouter, once it matched the path
 * ```
 */
export function trackRequest(metrics: GatewayMetrics | null, req: IncomingMessage, res: ServerResponse, route: string): void {
  if (metrics === null) return;
  // Tracked already by a factory before this one: that one counts it (named by nameRoute).
  if (tracked.has(req)) return;
  const entry: Tracked = { route };
  tracked.set(req, entry);
  res.once('close', () => {
    const code = res.writableFinished ? (answeredErrorCode(res) ?? 'ok') : 'client_closed';
    metrics.request(entry.route, req.method ?? 'other', res.statusCode, code);
  });
}

/** Names the route of a request a factory tracks already (no-op otherwise). */
export function nameRoute(req: IncomingMessage, route: string): void {
  const known = tracked.get(req);
  if (known !== undefined) known.route = route;
}
