import type { ServerResponse } from 'node:http';
import { ModelSwitchError } from '../errors/errors.js';
import { redactKeys } from '../errors/redact.js';
import { errorText } from '../log.js';

/**
 * Writes a `ModelSwitchError` as the package's error answer: its status and headers,
 * `Content-Type: application/json`, `Cache-Control: no-store` and the body
 * `{"error":{"message","type","code","param"?}}`. It uses the plain Node response API, so it works
 * under Express 4, Express 5 and Connect alike; a host uses it for its own errors (an unknown
 * route, say) so they look like every other error of the gateway. If the headers were already
 * sent, nothing can be answered any more: the connection is closed instead.
 *
 * @example
 * ```ts
 * import { ModelSwitchError, sendError } from 'modelswitch-keys';
 * // Last in the app: unknown URLs answer 404 in the same shape as every other error.
 * app.use((req, res) => {
 *   sendError(res, new ModelSwitchError('route_not_found', `Unknown route: ${req.method} ${req.path}`));
 * });
 * ```
 */
export function sendError(res: ServerResponse, error: ModelSwitchError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  let encoded = encodedBodies.get(error);
  if (encoded === undefined) {
    const body = JSON.stringify(error.toJSON());
    encoded = { body, length: Buffer.byteLength(body) };
    // A frozen error is answered again and again (see authenticationError): keep its body.
    if (Object.isFrozen(error)) encodedBodies.set(error, encoded);
  }
  answeredCodes.set(res, error.code);
  res.statusCode = error.status;
  const headers = error.headers;
  for (const name in headers) res.setHeader(name, headers[name] as string);
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Content-Length', encoded.length);
  res.setHeader('Cache-Control', 'no-store');
  res.end(encoded.body);
}

/** The error code each response answered with, for the metrics of its request. */
const answeredCodes = new WeakMap<ServerResponse, string>();

/**
 * The `error.code` `sendError` answered `res` with, or `undefined` when it answered none.
 *
 * @example
 * ```ts
 * res.on('finish', () => console.log(res.statusCode, answeredErrorCode(res) ?? 'ok'));
 * ```
 */
export function answeredErrorCode(res: ServerResponse): string | undefined {
  return answeredCodes.get(res);
}

/** JSON bodies of the errors answered repeatedly. */
const encodedBodies = new WeakMap<ModelSwitchError, { body: string; length: number }>();

/** Writes a JSON success answer with the plain Node response API. */
export function sendJson(res: ServerResponse, status: number, payload: unknown): void {
  const body = JSON.stringify(payload);
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

/** The message of every 500: fixed, so nothing of the unexpected error reaches the client. */
export const INTERNAL_ERROR_MESSAGE = 'The server could not handle this request. Please retry; if it persists, contact the operator.';

/**
 * Sends a thrown error as the contract's JSON. A `ModelSwitchError` answers as it is (a store
 * failure is one already: the store guard makes it a 503 `store_unavailable`); anything else is a
 * bug, logged (key values redacted) and answered 500 `internal_error` with a fixed message: never a
 * stack trace, and never dressed as a store outage, which clients would take for a passing one.
 */
export function answerError(res: ServerResponse, error: unknown, logger: Pick<Console, 'error'>): void {
  if (error instanceof ModelSwitchError) {
    sendError(res, error);
    return;
  }
  logger.error(`modelswitch-keys: unexpected error: ${redactKeys(errorText(error))}`);
  sendError(res, new ModelSwitchError('internal_error', INTERNAL_ERROR_MESSAGE));
}
