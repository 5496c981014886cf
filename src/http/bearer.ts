import type { IncomingMessage } from 'node:http';

/** What a request's credentials look like before any key check. */
export type BearerCredentials =
  | { kind: 'token'; token: string }
  /** No usable credentials. `presented` is true when some token was sent (header or query). */
  | { kind: 'invalid'; presented: boolean };

// RFC 9110 §11.6.2 / RFC 6750 §2.1: `Bearer` 1*SP token68. token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
const BEARER = /^bearer +([A-Za-z0-9\-._~+/]+=*)$/i;
const QUERY_TOKEN_NAMES = new Set(['access_token', 'api_key', 'apikey', 'key', 'token']);
const LOOKS_LIKE_KEY = /m[sk]-[0-9A-Za-z]{8}/;

/**
 * Reads the Bearer token of a request per RFC 9110 §11 and RFC 6750 §2.1: scheme case-insensitive,
 * one or more spaces, a token68 value. Several `Authorization` headers, or a token in the query
 * string (RFC 6750 §2.3 is not supported: URLs end up in logs), make the request invalid.
 *
 * @example
 * ```ts
 * readBearerToken(req); // { kind: 'token', token: 'ms-…' } or { kind: 'invalid', presented: false }
 * ```
 */
export function readBearerToken(req: IncomingMessage): BearerCredentials {
  const header = req.headers.authorization;
  const queryToken = hasQueryToken(req.url);
  let headerCount = 0;
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    if (name.length === 13 && name.toLowerCase() === 'authorization') headerCount++;
  }
  if (header === undefined || header === '' || headerCount !== 1 || queryToken) {
    return { kind: 'invalid', presented: queryToken || (header !== undefined && isBearerWithValue(header)) };
  }
  const match = BEARER.exec(header);
  if (!match) return { kind: 'invalid', presented: isBearerWithValue(header) };
  return { kind: 'token', token: match[1] as string };
}

function isBearerWithValue(header: string): boolean {
  return /^bearer\s+\S/i.test(header);
}

function hasQueryToken(url: string | undefined): boolean {
  if (url === undefined) return false;
  const start = url.indexOf('?');
  if (start < 0) return false;
  for (const [name, value] of new URLSearchParams(url.slice(start + 1))) {
    if (QUERY_TOKEN_NAMES.has(name.toLowerCase()) || LOOKS_LIKE_KEY.test(value)) return true;
  }
  return false;
}
