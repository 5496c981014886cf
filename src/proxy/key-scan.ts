import { API_KEY_PATTERN } from '../keys/api-key.js';

/** API_KEY_PATTERN without its word boundaries: a key glued to other characters is still a key. */
export const ANY_KEY = new RegExp(API_KEY_PATTERN.source.replaceAll('\\b', ''));
const PERCENT_ESCAPE = /%([0-9A-Fa-f]{2})/g;

/**
 * Whether a text contains a key, also percent-encoded once or several times (up to five layers).
 * Used on request URLs (path, query names and values: the upstream receives the URL as it is) and
 * on request bodies (a key pasted into a prompt as `ms%2D…` is still the key): no key may reach an
 * upstream.
 */
export function containsKey(text: string): boolean {
  let current = text;
  // Each round undoes one layer of percent-encoding; key characters are ASCII, so byte-wise decoding suffices.
  for (let round = 0; round < 5; round++) {
    if (ANY_KEY.test(current)) return true;
    if (!current.includes('%')) return false;
    const decoded = current.replace(PERCENT_ESCAPE, (_match, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
    if (decoded === current) return false;
    current = decoded;
  }
  return ANY_KEY.test(current);
}

/** Whether a request URL contains a key (see {@link containsKey}). */
export function urlContainsKey(url: string): boolean {
  return containsKey(url);
}
