import { type ModelSwitchError, answerWithoutStack } from '../errors/errors.js';

const UNIT_MS = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const INTERVAL = /^([1-9][0-9]{0,6})([smhd])$/;
/** The longest window accepted: 366 days. */
const MAX_WINDOW_MS = 366 * UNIT_MS.d;

/**
 * Milliseconds of an interval such as `"10s"`, `"1m"`, `"1h"` or `"1d"`, or `null` if it is not one
 * (or longer than 366 days).
 *
 * @example
 * ```ts
 * intervalToMs('10s'); // 10000
 * intervalToMs('10x'); // null
 * ```
 */
export function intervalToMs(interval: string): number | null {
  const match = INTERVAL.exec(interval);
  if (!match) return null;
  const ms = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
  return ms > MAX_WINDOW_MS ? null : ms;
}

/** The 429 answer, with `Retry-After` in whole seconds (at least 1). */
export function rateLimitExceeded(message: string, resetAt: number, now: number): ModelSwitchError {
  const retryAfter = Math.max(1, Math.ceil((resetAt - now) / 1000));
  return answerWithoutStack('rate_limit_exceeded', message, { headers: { 'Retry-After': String(retryAfter) } });
}
