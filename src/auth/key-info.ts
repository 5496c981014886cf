import type { IncomingMessage } from 'node:http';
import type { Middleware } from '../http/middleware.js';
import type { ModelSwitchContext } from './authenticator.js';
import { sendJson } from '../http/respond.js';
import { isoTime } from '../keys/public-key.js';
import { isGetOf, verifiedKeyRoute } from './verified-route.js';
import type { LimitReset } from '../store/types.js';

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
    /** The key's own USD spend cap per period (`limit` of the management API), or `null` for none. Added after the docs' fields. */
    key_limit: number | null;
    /** USD the key may still spend this period (`key_limit − usage`, at least 0), or `null` without a cap. */
    key_limit_remaining: number | null;
    /** When the key's `usage` starts again from zero, or `null` for never. */
    limit_reset: LimitReset | null;
    /** When the key stops working (ISO 8601, UTC), or `null` for never. */
    expires_at: string | null;
    /** The models the key may call (exact names, or prefixes ending in `*`), or `null` for every model. */
    models: string[] | null;
  };
}

/** The key-info body for an authenticated request's context: the docs' fields first, exactly, then the key's own cap and expiry. */
export function keyInfoBody(context: ModelSwitchContext): KeyInfoResponse {
  const { key } = context;
  return {
    data: {
      label: key.name,
      usage: context.usage,
      limit: context.account.balance,
      is_free_tier: context.account.isFreeTier,
      rate_limit: context.rateLimit === null ? null : { requests: context.rateLimit.requests, interval: context.rateLimit.interval },
      key_limit: key.limit,
      key_limit_remaining: key.limit === null ? null : Math.max(0, key.limit - context.usage),
      limit_reset: key.limitReset,
      expires_at: key.expiresAt === null ? null : isoTime(key.expiresAt),
      models: key.models === null ? null : [...key.models],
    },
  };
}

/** Whether a request is `GET <mount>/auth/key` (query string and trailing slash ignored). */
export function isKeyInfoRequest(req: IncomingMessage): boolean {
  return isGetOf(req, '/auth/key');
}

/**
 * Answers `GET /auth/key` (below where it is mounted, so `/v1/auth/key`) with the docs' key-info
 * JSON for the key `modelSwitchAuth` verified; passes every other request on. It never spends, so
 * it answers 200 even at a spend limit or a zero balance. `proxyRouter` includes it.
 *
 * @example
 * ```ts
 * app.use('/v1', modelSwitchAuth(store), keyInfoRoute());
 * // GET /v1/auth/key → {"data":{"label":"My Production Key","usage":0,"limit":1500.5,"is_free_tier":false,"rate_limit":{"requests":1000,"interval":"10s"},
//   "key_limit":null,"key_limit_remaining":null,"limit_reset":null,"expires_at":null,"models":null}}
 * ```
 */
export function keyInfoRoute(): Middleware {
  return verifiedKeyRoute('/auth/key', '/v1/auth/key', (_req, res, context) => sendJson(res, 200, keyInfoBody(context)));
}
