import type { ServerResponse } from 'node:http';
import type { RateLimitSetting } from '../store/types.js';

/**
 * Which IETF "RateLimit header fields" draft the `RateLimit*` headers follow, as express-rate-limit's
 * `standardHeaders` option names them; `true` is `'draft-6'`, `false` sends none.
 *
 * | Value | Headers (a key allowed 100 requests per minute, 99 left, the window ending in 42 s) |
 * |---|---|
 * | `'draft-6'` (default), `true` | `RateLimit-Policy: 100;w=60`, `RateLimit-Limit: 100`, `RateLimit-Remaining: 99`, `RateLimit-Reset: 42` |
 * | `'draft-7'` | `RateLimit-Policy: 100;w=60`, `RateLimit: limit=100, remaining=99, reset=42` |
 * | `'draft-8'` | `RateLimit-Policy: "default";q=100;w=60`, `RateLimit: "default";r=99;t=42` |
 * | `false` | none (`Retry-After` still goes with every 429) |
 *
 * @example
 * ```ts
 * const standardHeaders: StandardHeaders = 'draft-8';
 * app.use('/v1', modelSwitchAuth(store, { standardHeaders }));
 * ```
 */
export type StandardHeaders = 'draft-6' | 'draft-7' | 'draft-8' | boolean;

/** The `standardHeaders` values other than booleans. */
export const STANDARD_HEADER_DRAFTS: readonly StandardHeaders[] = ['draft-6', 'draft-7', 'draft-8'];

/** The name of the one quota policy draft-8 headers describe: a key has one request limit. */
const DRAFT_8_POLICY_NAME = '"default"';

/**
 * Writes a request's rate-limit headers from its counter after this request's hit: `count` requests
 * of `limit.requests` in the window of `windowMs` that ends at `resetAt`.
 */
export type RateLimitHeaderWriter = (
  res: ServerResponse,
  limit: RateLimitSetting,
  windowMs: number,
  count: number,
  resetAt: number,
  now: number,
) => void;

/** The header values that depend on the limit alone, for the last limit seen (most requests share one). */
interface FixedValues {
  requests: number;
  windowMs: number;
  policy: string;
  limit: string;
}

/**
 * The header writer of a `standardHeaders` / `legacyHeaders` pair, resolved once per factory, or
 * `null` when neither sends a header. Header names go out in lower case (names are
 * case-insensitive, RFC 9110 §5.1, and HTTP/2 sends them so): Node keeps each header under its
 * lower-cased name, and a name already in lower case skips a string copy per header on every request.
 */
export function rateLimitHeaderWriter(standard: StandardHeaders, legacy: boolean): RateLimitHeaderWriter | null {
  const draft = standard === true ? 'draft-6' : standard;
  const write = draft === false ? null : DRAFT_WRITERS[draft]();
  if (!legacy) return write;
  return function rateLimitHeaders(res, limit, windowMs, count, resetAt, now) {
    write?.(res, limit, windowMs, count, resetAt, now);
    // As express-rate-limit's legacy headers: the reset is a time (epoch seconds), not a delay.
    res.setHeader('x-ratelimit-limit', String(limit.requests));
    res.setHeader('x-ratelimit-remaining', String(remaining(limit, count)));
    res.setHeader('x-ratelimit-reset', String(Math.ceil(resetAt / 1000)));
  };
}

/** One factory per draft, each writer keeping its own cache of the values that depend on the limit alone. */
const DRAFT_WRITERS: Record<'draft-6' | 'draft-7' | 'draft-8', () => RateLimitHeaderWriter> = {
  'draft-6': () => {
    const fixed = fixedValues((requests, window) => `${requests};w=${window}`);
    return function draft6Headers(res, limit, windowMs, count, resetAt, now) {
      const values = fixed(limit, windowMs);
      res.setHeader('ratelimit-policy', values.policy);
      res.setHeader('ratelimit-limit', values.limit);
      res.setHeader('ratelimit-remaining', String(remaining(limit, count)));
      res.setHeader('ratelimit-reset', String(resetSeconds(resetAt, now)));
    };
  },
  'draft-7': () => {
    const fixed = fixedValues((requests, window) => `${requests};w=${window}`);
    return function draft7Headers(res, limit, windowMs, count, resetAt, now) {
      const values = fixed(limit, windowMs);
      res.setHeader('ratelimit-policy', values.policy);
      res.setHeader('ratelimit', `limit=${values.limit}, remaining=${remaining(limit, count)}, reset=${resetSeconds(resetAt, now)}`);
    };
  },
  'draft-8': () => {
    // Structured fields (RFC 9651): a string item with parameters, serialized without spaces.
    const fixed = fixedValues((requests, window) => `${DRAFT_8_POLICY_NAME};q=${requests};w=${window}`);
    return function draft8Headers(res, limit, windowMs, count, resetAt, now) {
      res.setHeader('ratelimit-policy', fixed(limit, windowMs).policy);
      res.setHeader('ratelimit', `${DRAFT_8_POLICY_NAME};r=${remaining(limit, count)};t=${resetSeconds(resetAt, now)}`);
    };
  },
};

/** A cache of the last limit's fixed header values, made with `policyOf(requests, window seconds)`. */
function fixedValues(
  policyOf: (requests: number, windowSeconds: number) => string,
): (limit: RateLimitSetting, windowMs: number) => FixedValues {
  let last: FixedValues = { requests: Number.NaN, windowMs: Number.NaN, policy: '', limit: '' };
  return (limit, windowMs) => {
    if (last.requests !== limit.requests || last.windowMs !== windowMs) {
      last = {
        requests: limit.requests,
        windowMs,
        policy: policyOf(limit.requests, Math.ceil(windowMs / 1000)),
        limit: String(limit.requests),
      };
    }
    return last;
  };
}

function remaining(limit: RateLimitSetting, count: number): number {
  return Math.max(0, limit.requests - count);
}

/** Whole seconds until the window resets, rounded up. */
function resetSeconds(resetAt: number, now: number): number {
  return Math.max(0, Math.ceil((resetAt - now) / 1000));
}
