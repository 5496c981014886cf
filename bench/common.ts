import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';

/** Median of a list of numbers (the mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

/** The q-quantile (0–1) of an ascending array, nearest rank. */
export function percentile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank] as number;
}

/** p50/p99 of unsorted samples, in the samples' unit. */
export function latencySummary(samples: readonly number[]): { p50: number; p99: number; max: number } {
  const sorted = Float64Array.from(samples).sort();
  return {
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    max: sorted.length ? (sorted[sorted.length - 1] as number) : Number.NaN,
  };
}

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

function base62(length: number): string {
  let out = '';
  for (const byte of randomBytes(length * 2)) {
    if (byte < 248 && out.length < length) out += ALPHABET[byte % 62];
  }
  return out.length === length ? out : out + base62(length - out.length);
}

// Same checksum as src/api-key.ts (CRC-32, 6 base62 characters): an attacker can compute it too,
// which is exactly what flood (b) does.
function checksum(text: string): string {
  let n = crc32(text);
  let out = '';
  for (let i = 0; i < 6; i++) {
    out = ALPHABET[n % 62] + out;
    n = Math.floor(n / 62);
  }
  return out;
}

/** A well-formed `ms-` key with a real handle, a random secret and a valid checksum: a guess. */
export function guessForHandle(handle: string): string {
  const body = `ms-${handle}${base62(22)}`;
  return body + checksum(body);
}

/** An invented key: right shape, random characters, so its checksum is wrong (1 in 62^6 is right by chance). */
export function inventedKey(): string {
  return `ms-${base62(38)}`;
}

/** Random base64 of the length of a real scrypt-kdf hash (96 bytes), for filler records never verified. */
export function fillerHash(): string {
  return randomBytes(96).toString('base64');
}

/** Random handle of the real length (10 base62 characters). */
export function randomHandle(): string {
  return base62(10);
}

/** Messages between the bench runner and its child processes. */
export interface ChildRequest {
  id: number;
  command: string;
  args: unknown;
}
export interface ChildReply {
  id: number;
  ok: boolean;
  result?: unknown;
  error?: string;
}
