import { API_KEY_PATTERN } from '../keys/api-key.js';

/** API_KEY_PATTERN without its word boundaries: a key glued to other characters is still a key. */
export const ANY_KEY = new RegExp(API_KEY_PATTERN.source.replaceAll('\\b', ''));
const PERCENT_ESCAPE = /%([0-9A-Fa-f]{2})/g;

/**
 * Whether a request URL (path, query names and values) contains a key, also percent-encoded once
 * or several times: the upstream receives the URL as it is, and no key may reach it.
 */
export function urlContainsKey(url: string): boolean {
  let text = url;
  // Each round undoes one layer of percent-encoding; key characters are ASCII, so byte-wise decoding suffices.
  for (let round = 0; round < 5; round++) {
    if (ANY_KEY.test(text)) return true;
    const decoded = text.replace(PERCENT_ESCAPE, (_match, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
    if (decoded === text) return false;
    text = decoded;
  }
  return ANY_KEY.test(text);
}
