import { describe, expect, it } from 'vitest';
import { intervalToMs, rateLimitExceeded } from '../../src/auth/rate-limit.js';

describe('intervalToMs', () => {
  it('reads every unit, up to 366 days written any way, and nothing else', () => {
    expect(['1s', '10s', '1m', '1h', '1d', '366d', '8784h', '527040m', '9999999s'].map(intervalToMs)).toEqual([
      1000, 10_000, 60_000, 3_600_000, 86_400_000, 31_622_400_000, 31_622_400_000, 31_622_400_000, 9_999_999_000,
    ]);
    expect(['367d', '8785h', '0s', '01s', '10', 's', '10x', ' 10s', '10s ', '1.5s', '-1s', '10000000s', ''].map(intervalToMs)).toEqual(
      Array(13).fill(null),
    );
  });
});

describe('rateLimitExceeded', () => {
  it('answers 429 rate_limit_exceeded with the message and Retry-After in whole seconds, rounded up, at least 1', () => {
    const answer = (resetAt: number, now: number) => {
      const error = rateLimitExceeded('Too many requests.', resetAt, now);
      return { status: error.status, body: error.toJSON(), headers: error.headers };
    };
    expect(answer(61_000, 1_000)).toEqual({
      status: 429,
      body: { error: { message: 'Too many requests.', type: 'rate_limit_error', code: 'rate_limit_exceeded' } },
      headers: { 'Retry-After': '60' },
    });
    expect([answer(6_600, 0), answer(1_001, 1_000), answer(1_000, 1_000), answer(0, 5_000)].map((a) => a.headers)).toEqual([
      { 'Retry-After': '7' },
      { 'Retry-After': '1' },
      { 'Retry-After': '1' },
      { 'Retry-After': '1' },
    ]);
  });
});
