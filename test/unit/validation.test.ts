import { describe, expect, it } from 'vitest';
import { ModelSwitchError } from '../../src/errors/errors.js';
import { validateLimit, validateRateLimit } from '../../src/management/validation.js';
import { invalid } from '../helpers.js';

/** The answer a validation function's error becomes, or what it returned. */
function outcome(check: () => unknown): unknown {
  try {
    return { returned: check() };
  } catch (error) {
    return error instanceof ModelSwitchError ? error.toJSON() : error;
  }
}

describe('validation of values a JSON body cannot carry', () => {
  it('refuses a limit that is not finite', () => {
    for (const limit of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      expect(outcome(() => validateLimit(limit))).toEqual(invalid('limit must be a number of USD ≥ 0, or null', 'limit'));
    }
  });

  it('answers a rate limit without tokens with no tokens field at all', () => {
    expect(outcome(() => validateRateLimit({ requests: 2, interval: '1m' }))).toStrictEqual({ returned: { requests: 2, interval: '1m' } });
    expect(outcome(() => validateRateLimit({ requests: 2, interval: '1m', tokens: 9 }))).toStrictEqual({
      returned: { requests: 2, interval: '1m', tokens: 9 },
    });
  });
});
