import type { IncomingMessage } from 'node:http';
import type { Middleware } from '../http/middleware.js';
import type { ModelSwitchContext } from './authenticator.js';
import { sendJson } from '../http/respond.js';

/** The body of `GET /v1/auth/key`, as the docs show it. */
export interface KeyInfoResponse {
  data: {
    /** The key's name. */
    label: string;
    /** USD spent through this key in its current limit period. */
    usage: number;
    /** The account's balance in USD (what the docs call the limit). */
    limit: number;
    is_free_tier: boolean;
    /** The rate limit in force, or `null` when the host disabled rate limiting. */
    rate_limit: { requests: number; interval: string } | null;
  };
}

/** The key-info body for an authenticated request's context. */
export function keyInfoBody(context: ModelSwitchContext): KeyInfoResponse {
  return {
    data: {
      label: context.key.name,
      usage: context.usage,
      limit: context.account.balance,
      is_free_tier: context.account.isFreeTier,
      rate_limit: context.rateLimit === null ? null : { requests: context.rateLimit.requests, interval: context.rateLimit.interval },
    },
  };
}

/** Whether a request is `GET <mount>/auth/key` (query string and trailing slash ignored). */
export function isKeyInfoRequest(req: IncomingMessage): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  const path = (req.url ?? '').split('?', 1)[0];
  return path === '/auth/key' || path === '/auth/key/';
}

/**
 * Answers `GET /auth/key` (below where it is mounted, so `/v1/auth/key`) with the docs' key-info
 * JSON for the key `modelSwitchAuth` verified; passes every other request on. It never spends, so
 * it answers 200 even at a spend limit or a zero balance. `proxyRouter` includes it.
 *
 * @example
 * ```ts
 * app.use('/v1', modelSwitchAuth(store), keyInfoRoute());
 * // GET /v1/auth/key → {"data":{"label":"My Production Key","usage":0,"limit":1500.5,"is_free_tier":false,"rate_limit":{"requests":1000,"interval":"10s"}}}
 * ```
 */
export function keyInfoRoute(): Middleware {
  return function keyInfoRoute(req, res, next) {
    const context = (req as IncomingMessage & { modelSwitch?: ModelSwitchContext }).modelSwitch;
    if (!isKeyInfoRequest(req) || context === undefined) {
      next();
      return;
    }
    sendJson(res, 200, keyInfoBody(context));
  };
}
