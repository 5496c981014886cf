import { redactKeys } from './redact.js';

/** Every `error.code` this package answers with, so `switch (err.code)` narrows. */
export type ModelSwitchErrorCode =
  | 'invalid_api_key'
  | 'expired_api_key'
  | 'wrong_key_type'
  | 'session_required'
  | 'key_deactivated'
  | 'csrf_check_failed'
  | 'spend_limit_reached'
  | 'insufficient_balance'
  | 'rate_limit_exceeded'
  | 'invalid_request'
  | 'method_not_allowed'
  | 'key_not_found'
  | 'model_not_found'
  | 'generation_not_found'
  | 'model_not_allowed'
  | 'route_not_found'
  | 'request_too_large'
  | 'unsupported_content_encoding'
  | 'internal_error'
  | 'upstream_error'
  | 'store_unavailable'
  | 'verification_busy'
  | 'server_busy'
  | 'upstream_timeout';

/** The `error.type` values of the error JSON (OpenAI's families). */
export type ModelSwitchErrorType =
  | 'authentication_error'
  | 'permission_error'
  | 'billing_error'
  | 'rate_limit_error'
  | 'invalid_request_error'
  | 'not_found_error'
  | 'api_error';

/** The JSON body of every error answer: `{"error":{"message","type","code","param"?}}`. */
export interface ErrorBody {
  error: {
    message: string;
    type: ModelSwitchErrorType;
    code: ModelSwitchErrorCode;
    param?: string;
  };
}

const statusAndType: Record<ModelSwitchErrorCode, [number, ModelSwitchErrorType]> = {
  invalid_api_key: [401, 'authentication_error'],
  expired_api_key: [401, 'authentication_error'],
  wrong_key_type: [401, 'authentication_error'],
  // The dashboard: no session cookie (or one that expired, was signed out, or whose billing key is gone).
  session_required: [401, 'authentication_error'],
  // The dashboard: a state-changing request without the session's CSRF token or from another origin.
  csrf_check_failed: [403, 'permission_error'],
  key_deactivated: [403, 'permission_error'],
  spend_limit_reached: [403, 'permission_error'],
  insufficient_balance: [402, 'billing_error'],
  rate_limit_exceeded: [429, 'rate_limit_error'],
  invalid_request: [400, 'invalid_request_error'],
  method_not_allowed: [405, 'invalid_request_error'],
  key_not_found: [404, 'not_found_error'],
  model_not_found: [404, 'not_found_error'],
  generation_not_found: [404, 'not_found_error'],
  model_not_allowed: [403, 'permission_error'],
  // The host's own unknown URLs (the package's routers pass those to next()): OpenAI answers them
  // 404 with this type.
  route_not_found: [404, 'invalid_request_error'],
  request_too_large: [413, 'invalid_request_error'],
  unsupported_content_encoding: [415, 'invalid_request_error'],
  internal_error: [500, 'api_error'],
  upstream_error: [502, 'api_error'],
  store_unavailable: [503, 'api_error'],
  verification_busy: [503, 'api_error'],
  server_busy: [503, 'api_error'],
  upstream_timeout: [504, 'api_error'],
};

/** The realm of every `WWW-Authenticate` challenge. */
export const AUTH_REALM = 'modelswitch';

/**
 * The HTTP status and error type an error code answers with (the one table `ModelSwitchError` uses).
 *
 * @example
 * errorStatusAndType('key_not_found'); // { status: 404, type: 'not_found_error' }
 */
export function errorStatusAndType(code: ModelSwitchErrorCode): { status: number; type: ModelSwitchErrorType } {
  const [status, type] = statusAndType[code];
  return { status, type };
}

/**
 * An error that maps to one HTTP answer of the contract. Every error this package sends is one of
 * these: a store failure becomes a 503 `store_unavailable`, an upstream failure a 502 or 504, and
 * anything else thrown inside a handler a 500 `internal_error` with a fixed message, never a stack
 * trace. Its `message` and `param` are passed through `redactKeys`, so an error that quotes the
 * request (a model name, a path, a field name) never echoes a ModelSwitch key.
 *
 * @example
 * ```ts
 * import { ModelSwitchError } from 'modelswitch-keys';
 * throw new ModelSwitchError('invalid_request', 'name must be a string', { param: 'name' });
 * // answers 400 {"error":{"message":"name must be a string","type":"invalid_request_error","code":"invalid_request","param":"name"}}
 * ```
 */
export class ModelSwitchError extends Error {
  /** The HTTP status this error answers with. */
  readonly status: number;
  /** The `error.type` of the JSON body. */
  readonly type: ModelSwitchErrorType;
  /** The `error.code` of the JSON body. */
  readonly code: ModelSwitchErrorCode;
  /** The request field the error is about, if any. */
  readonly param: string | undefined;
  /** Extra response headers (`Retry-After`, `WWW-Authenticate`, ...). */
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    code: ModelSwitchErrorCode,
    message: string,
    options: { param?: string; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    // Redacted here rather than by each caller: one place, so no path can forget it (the stack's first line too).
    super(redactKeys(message), options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    const [status, type] = statusAndType[code];
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = options.param === undefined ? undefined : redactKeys(options.param);
    this.headers = { ...options.headers };
  }

  /** The JSON body of this error. */
  toJSON(): ErrorBody {
    const error: ErrorBody['error'] = { message: this.message, type: this.type, code: this.code };
    if (this.param !== undefined) error.param = this.param;
    return { error };
  }
}

/**
 * A `ModelSwitchError` without a stack trace, for the answers the hot path gives many times a second
 * (401, 403, 429, 503): they are answers, not bugs, so a stack says nothing, and capturing one cost
 * more than all the rest of a rejected request (half of its CPU time, measured).
 */
export function answerWithoutStack(
  code: ModelSwitchErrorCode,
  message: string,
  options?: { headers?: Record<string, string>; cause?: unknown },
): ModelSwitchError {
  const limit = Error.stackTraceLimit;
  try {
    Error.stackTraceLimit = 0;
  } catch {
    // Frozen intrinsics (node --frozen-intrinsics, SES): build it with a stack, as usual.
    return new ModelSwitchError(code, message, options);
  }
  try {
    return new ModelSwitchError(code, message, options);
  } finally {
    Error.stackTraceLimit = limit;
  }
}

/** The message of every malformed or missing `Authorization` header (the docs' exact text). */
export const MISSING_OR_INVALID_HEADER = 'Missing or invalid Authorization header';

/** The 401s made so far, by code, challenge and message: a handful, answered at flood rates. */
const authenticationErrors = new Map<string, ModelSwitchError>();

/**
 * A 401 with its RFC 6750 challenge. `tokenPresented` adds `error="invalid_token"`. The same frozen
 * error comes back for the same arguments, and `sendError` keeps its JSON body: a flood of invented
 * keys then costs no allocation per answer beyond the response itself.
 */
export function authenticationError(
  code: 'invalid_api_key' | 'expired_api_key' | 'wrong_key_type',
  message: string,
  tokenPresented: boolean,
): ModelSwitchError {
  const id = `${code}\n${tokenPresented}\n${message}`;
  let error = authenticationErrors.get(id);
  if (error === undefined) {
    const challenge = tokenPresented ? `Bearer realm="${AUTH_REALM}", error="invalid_token"` : `Bearer realm="${AUTH_REALM}"`;
    error = Object.freeze(answerWithoutStack(code, message, { headers: { 'WWW-Authenticate': challenge } }));
    Object.freeze(error.headers);
    // The messages are the package's own (a few); the bound is only a guard.
    if (authenticationErrors.size < 64) authenticationErrors.set(id, error);
  }
  return error;
}

/**
 * The 401 for a key that is not a valid key of this gateway (unknown, bad checksum, wrong secret,
 * deleted, or its account gone): one message for all, so it never says which check failed.
 *
 * @example
 * ```ts
 * if (!record) throw invalidApiKey();
 * ```
 */
export function invalidApiKey(): ModelSwitchError {
  return authenticationError('invalid_api_key', 'Invalid API key', true);
}

/** A 400 about one request field. */
export function invalidRequest(message: string, param?: string): ModelSwitchError {
  return new ModelSwitchError('invalid_request', message, param === undefined ? {} : { param });
}
