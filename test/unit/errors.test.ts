import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { ModelSwitchError, answerWithoutStack, authenticationError } from '../../src/errors/errors.js';
import { sendError } from '../../src/http/respond.js';
import { rateLimitExceeded } from '../../src/auth/rate-limit.js';

/** What sendError wrote: status, headers and body. */
function sent(error: ModelSwitchError) {
  const res = new ServerResponse(new IncomingMessage(new Socket()));
  let body = '';
  res.end = ((chunk: string) => {
    body = chunk;
    return res;
  }) as typeof res.end;
  sendError(res, error);
  // Content-Length must be the body's byte length.
  expect(res.getHeader('content-length')).toBe(Buffer.byteLength(body));
  return { status: res.statusCode, headers: res.getHeaders(), body: JSON.parse(body) as unknown };
}

describe('errors answered on the hot path', () => {
  it('carry no stack frames (they are answers, not bugs); errors made by hand keep theirs', () => {
    const quick = [
      authenticationError('invalid_api_key', 'Invalid API key', true),
      answerWithoutStack('key_deactivated', 'API key has been deactivated'),
      rateLimitExceeded('Rate limit exceeded', 61_000, 0),
    ];
    for (const error of quick) {
      expect(error).toBeInstanceOf(ModelSwitchError);
      expect(error.stack).not.toMatch(/\n\s+at /);
    }
    expect(new ModelSwitchError('invalid_request', 'bad').stack).toMatch(/\n\s+at /);
    expect(Error.stackTraceLimit).toBeGreaterThan(0);
  });

  it('still builds its errors (with a stack) where Error.stackTraceLimit cannot be set, as under frozen intrinsics', () => {
    const original = Object.getOwnPropertyDescriptor(Error, 'stackTraceLimit') as PropertyDescriptor;
    Object.defineProperty(Error, 'stackTraceLimit', { ...original, writable: false });
    try {
      const error = answerWithoutStack('key_deactivated', 'API key has been deactivated');
      expect({ status: error.status, code: error.code, message: error.message }).toEqual({
        status: 403,
        code: 'key_deactivated',
        message: 'API key has been deactivated',
      });
    } finally {
      Object.defineProperty(Error, 'stackTraceLimit', original);
    }
    expect(Error.stackTraceLimit).toBe(original.value);
  });

  it('reuses one frozen 401 per code, challenge and message, and answers it identically every time', () => {
    const first = authenticationError('invalid_api_key', 'Invalid API key', true);
    expect(authenticationError('invalid_api_key', 'Invalid API key', true)).toBe(first);
    expect(authenticationError('invalid_api_key', 'Invalid API key', false)).not.toBe(first);
    expect(Object.isFrozen(first) && Object.isFrozen(first.headers)).toBe(true);
    const expected = {
      status: 401,
      headers: {
        'www-authenticate': 'Bearer realm="modelswitch", error="invalid_token"',
        'content-type': 'application/json',
        'content-length': 94,
        'cache-control': 'no-store',
      },
      body: { error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } },
    };
    expect(sent(first)).toEqual(expected);
    expect(sent(first)).toEqual(expected);
    expect(sent(authenticationError('invalid_api_key', 'Missing or invalid Authorization header', false))).toEqual({
      status: 401,
      headers: { ...expected.headers, 'www-authenticate': 'Bearer realm="modelswitch"', 'content-length': 118 },
      body: { error: { message: 'Missing or invalid Authorization header', type: 'authentication_error', code: 'invalid_api_key' } },
    });
  });

  it('answers errors that are not frozen from their current fields', () => {
    const error = new ModelSwitchError('invalid_request', 'name must be a string', { param: 'name' });
    expect(sent(error)).toEqual({
      status: 400,
      headers: { 'content-type': 'application/json', 'content-length': 116, 'cache-control': 'no-store' },
      body: { error: { message: 'name must be a string', type: 'invalid_request_error', code: 'invalid_request', param: 'name' } },
    });
  });
});
