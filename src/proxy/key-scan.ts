import { API_KEY_PATTERN, containsKey } from '../keys/api-key.js';

/** API_KEY_PATTERN without its word boundaries: a key glued to other characters is still a key. */
export const ANY_KEY = new RegExp(API_KEY_PATTERN.source.replaceAll('\\b', ''));
export { containsKey };

/** Whether a request URL contains a key (see {@link containsKey}). */
export function urlContainsKey(url: string): boolean {
  return containsKey(url);
}
