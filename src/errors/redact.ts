/**
 * Anything that starts like a ModelSwitch key: `ms-`/`mk-` and 8 or more base62 characters, glued
 * to other text or not. Looser than `API_KEY_PATTERN` on purpose: a key cut short, or with a
 * character mistyped, still carries most of its secret, and a handle alone is not for showing.
 * (This layer cannot import `keys/`, so the prefixes are spelled here; a test checks that every
 * issued key is caught.)
 */
const KEY_LIKE = /(m[sk]-)([0-9A-Za-z]{4})[0-9A-Za-z]{4,}/g;
/** Cheap test before the replacement: most text holds no key at all. */
const MAY_HOLD_KEY = /m[sk]-[0-9A-Za-z]{8}/;
const PERCENT_ESCAPE = /%([0-9A-Fa-f]{2})/g;
/** Layers of percent-encoding undone when looking for a key (a URL may be encoded more than once). */
const MAX_DECODE_ROUNDS = 5;

/**
 * `text` with every ModelSwitch key in it (also glued to other characters, cut short, or
 * percent-encoded up to five times) replaced by its public prefix and `…redacted`:
 * `ms-8fQ2kT0r…` becomes `ms-8fQ2…redacted`. Text that holds no key comes back as it is (the same
 * string); text that held an encoded key comes back decoded, with the key redacted. Every error
 * message and `param` of this package goes through it (see `ModelSwitchError`), so no answer can
 * echo a key a client sent; use it in your own error handlers and log lines too.
 *
 * @example
 * ```ts
 * import { redactKeys } from 'modelswitch-keys';
 * app.use((req, res) => res.status(404).json({ error: { message: redactKeys(`Unknown route ${req.path}`) } }));
 * redactKeys('model ms-8fQ2kT0rPzXw4mLq9aBcDeFgHiJkLmNoPqRsTu'); // 'model ms-8fQ2…redacted'
 * ```
 */
export function redactKeys(text: string): string {
  let current = text;
  let found = false;
  for (let round = 0; ; round++) {
    if (MAY_HOLD_KEY.test(current)) {
      current = current.replace(KEY_LIKE, '$1$2…redacted');
      found = true;
    }
    if (round === MAX_DECODE_ROUNDS || !current.includes('%')) break;
    // Key characters are ASCII, so undoing one layer byte by byte is enough to find one.
    const decoded = current.replace(PERCENT_ESCAPE, (_match, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
    if (decoded === current) break;
    current = decoded;
  }
  return found ? current : text;
}
