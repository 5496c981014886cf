import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';

import type { KeyType } from '../store/types.js';

export type { KeyType };

/** The prefix of each key type. */
export const KEY_PREFIXES: Readonly<Record<KeyType, 'ms-' | 'mk-'>> = { proxy: 'ms-', billing: 'mk-' };

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
/** Characters of the non-secret lookup handle (62^10 ≈ 2^59.5 handles). */
export const HANDLE_LENGTH = 10;
/** Characters of the secret: 22 base62 characters carry 131 bits from `crypto.randomBytes`. */
export const SECRET_LENGTH = 22;
/** Characters of the CRC-32 checksum, base62, fixed width. */
export const CHECKSUM_LENGTH = 6;
/** Length of a whole key: 3 (prefix) + 10 + 22 + 6. */
export const KEY_LENGTH = 3 + HANDLE_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH;

/**
 * The one regular expression every key matches; give it to secret scanners (`gitleaks`,
 * GitHub push protection custom patterns, trufflehog) to find leaked keys.
 *
 * @example
 * ```ts
 * API_KEY_PATTERN.test('ms-…'); // true for every key this package issues
 * ```
 */
export const API_KEY_PATTERN = /\bm[sk]-[0-9A-Za-z]{38}\b/;

const WHOLE_KEY = /^m[sk]-[0-9A-Za-z]{38}$/;
/** API_KEY_PATTERN without its word boundaries: a key glued to other characters is still a key. */
const KEY_ANYWHERE = new RegExp(API_KEY_PATTERN.source.replaceAll('\\b', ''));
const PERCENT_ESCAPE = /%([0-9A-Fa-f]{2})/g;
/** Layers of percent-encoding undone when looking for a key (a URL may be encoded more than once). */
const MAX_DECODE_ROUNDS = 5;

/**
 * Whether a text holds a whole key, glued to other characters or not, also percent-encoded once or
 * several times (up to five layers): `ms%2D…` is still the key. Used wherever a key must not pass:
 * request URLs, bodies and headers on their way to an upstream, and key names, which are shown.
 */
export function containsKey(text: string): boolean {
  let current = text;
  // Each round undoes one layer; key characters are ASCII, so byte-wise decoding suffices.
  for (let round = 0; round < MAX_DECODE_ROUNDS; round++) {
    if (KEY_ANYWHERE.test(current)) return true;
    if (!current.includes('%')) return false;
    const decoded = current.replace(PERCENT_ESCAPE, (_match, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)));
    if (decoded === current) return false;
    current = decoded;
  }
  return KEY_ANYWHERE.test(current);
}

/** The parts of a well-formed key. The secret stays inside the full `value`. */
export interface ParsedApiKey {
  type: KeyType;
  /** The non-secret lookup handle the store indexes the key record by. */
  handle: string;
  /** The first 7 characters (`ms-` + 4), shown in listings. */
  prefix: string;
  /** The whole key, as presented. Never log it. */
  value: string;
}

function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      // 248 = 4 * 62: rejecting larger bytes keeps every character equally likely.
      if (byte < 248 && out.length < length) out += ALPHABET[byte % 62];
    }
  }
  return out;
}

function checksumOf(text: string): string {
  let n = crc32(text);
  let out = '';
  for (let i = 0; i < CHECKSUM_LENGTH; i++) {
    out = ALPHABET[n % 62] + out;
    n = Math.floor(n / 62);
  }
  return out;
}

/**
 * Makes a new random key of the given type: prefix, handle, secret, checksum.
 *
 * @example
 * ```ts
 * const { value, handle, prefix } = generateApiKey('proxy');
 * // value: 'ms-' + 38 base62 characters, e.g. prefix 'ms-8fQ2'
 * ```
 */
export function generateApiKey(type: KeyType): ParsedApiKey {
  return keyWithHandle(type, randomBase62(HANDLE_LENGTH));
}

const HANDLE = /^[0-9A-Za-z]+$/;

/**
 * A new random secret (and its checksum) for an existing handle: the key value a rotation gives the
 * same key record. Throws a TypeError for a handle that is not {@link HANDLE_LENGTH} base62 characters.
 */
export function keyWithHandle(type: KeyType, handle: string): ParsedApiKey {
  if (type !== 'proxy' && type !== 'billing') throw new TypeError("a key type is 'proxy' or 'billing'");
  if (typeof handle !== 'string' || handle.length !== HANDLE_LENGTH || !HANDLE.test(handle)) {
    throw new TypeError(`a key handle is ${HANDLE_LENGTH} base62 characters`);
  }
  const prefix = KEY_PREFIXES[type];
  const body = prefix + handle + randomBase62(SECRET_LENGTH);
  const value = body + checksumOf(body);
  return { type, handle, prefix: value.slice(0, 7), value };
}

/**
 * Checks a presented key's shape and checksum without touching any store. Returns `null` for a
 * wrong length, character, prefix or checksum.
 *
 * @example
 * ```ts
 * parseApiKey('ms-not-a-key'); // null
 * parseApiKey(generateApiKey('billing').value)?.type; // 'billing'
 * ```
 */
export function parseApiKey(value: string): ParsedApiKey | null {
  return hasKeyShape(value) && hasValidChecksum(value) ? keyParts(value) : null;
}

/** Whether `value` has a key's length and characters (`ms-`/`mk-` and 38 base62), checksum not checked. */
export function hasKeyShape(value: string): boolean {
  return value.length === KEY_LENGTH && WHOLE_KEY.test(value);
}

/** Whether the last 6 characters of a key-shaped value are the checksum of the rest. */
export function hasValidChecksum(value: string): boolean {
  return checksumOf(value.slice(0, KEY_LENGTH - CHECKSUM_LENGTH)) === value.slice(KEY_LENGTH - CHECKSUM_LENGTH);
}

/** The parts of a key-shaped value (see {@link hasKeyShape}). */
export function keyParts(value: string): ParsedApiKey {
  return {
    type: value.startsWith('ms-') ? 'proxy' : 'billing',
    handle: value.slice(3, 3 + HANDLE_LENGTH),
    prefix: value.slice(0, 7),
    value,
  };
}
