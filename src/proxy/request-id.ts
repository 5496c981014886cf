import { randomBytes } from 'node:crypto';

/** The header the gateway answers every proxied request with: its own id of the request, the ledger entry's `requestId`. */
export const REQUEST_ID_HEADER = 'X-Request-Id';
/** The header that carries the upstream's own `x-request-id` to the client (the gateway's id takes its name). */
export const UPSTREAM_REQUEST_ID_HEADER = 'X-Upstream-Request-Id';

/** `req_` and 24 base64url characters (18 random bytes): what {@link newRequestId} makes. */
export const REQUEST_ID_PATTERN = /^req_[A-Za-z0-9_-]{24}$/;

/** Random bytes of one request id. */
const ID_BYTES = 18;
/** Ids drawn from the system's random source at once: one call per 128 requests instead of one each (as Node's `randomUUID` caches). */
const IDS_PER_DRAW = 128;
let pool = Buffer.alloc(0);
let offset = 0;

/**
 * A new request id, `req_` + 24 base64url characters (144 random bits): unique without asking the
 * store, and not guessable, so knowing one request's id tells nothing of another's.
 *
 * @example
 * ```ts
 * newRequestId(); // 'req_Vx8rJ2m0Qe4h0bq1XyZ9aB3c'
 * ```
 */
export function newRequestId(): string {
  if (offset === pool.length) {
    pool = randomBytes(ID_BYTES * IDS_PER_DRAW);
    offset = 0;
  }
  const id = pool.toString('base64url', offset, offset + ID_BYTES);
  offset += ID_BYTES;
  return `req_${id}`;
}

/** Lone UTF-16 surrogates: not text, and refused by stores that speak JSON to another process (Redis' cjson). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * `value` as a store keeps a usage entry's model: well-formed text of at most `max` UTF-16 units.
 * The model comes from the client's body and may be anything an upstream pattern matches; a
 * settlement the store refused for its text would lose the charge.
 */
export function storableText(value: string, max: number): string {
  const text = value.replace(LONE_SURROGATE, '\uFFFD');
  if (text.length <= max) return text;
  const cut = text.slice(0, max);
  // Never end on the first half of a pair.
  return /[\uD800-\uDBFF]$/.test(cut) ? cut.slice(0, -1) : cut;
}

/** An upstream answer id worth keeping: printable ASCII, 1–`max` characters (`chatcmpl-…`, `resp_…`); anything else is not one. */
export function answerIdOf(value: unknown, max: number): string | undefined {
  return typeof value === 'string' && value.length <= max && /^[\x21-\x7e]+$/.test(value) ? value : undefined;
}
