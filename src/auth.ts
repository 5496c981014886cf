import type { IncomingMessage, ServerResponse } from 'node:http';
import { type AuthOptions, Authenticator, type ModelSwitchContext } from './authenticate.js';
import { ConfigurationError, ModelSwitchError, sendError } from './errors.js';
import type { KeyStore } from './types.js';
import { errorText } from './store-guard.js';

/** A Connect/Express `next`. */
export type NextFunction = (error?: unknown) => void;

/** A middleware that works under Express 4, Express 5 and Connect. */
export type Middleware = (req: IncomingMessage, res: ServerResponse, next: NextFunction) => void;

declare global {
  namespace Express {
    interface Request {
      /** Set by `modelSwitchAuth` and `keysRouter`: the verified key, its account and limits. */
      modelSwitch?: ModelSwitchContext;
    }
  }
}

/** Throws a coded error at creation time when a factory is not given a store. */
export function assertStore(store: unknown, factory: string): asserts store is KeyStore {
  const methods = ['getKeyByHandle', 'getAccount', 'insertKey', 'hitCounter'] as const;
  if (typeof store !== 'object' || store === null || methods.some((m) => typeof (store as Record<string, unknown>)[m] !== 'function')) {
    throw new ConfigurationError('ERR_MS_STORE', `${factory}(store): store must implement KeyStore, e.g. new MemoryKeyStore()`);
  }
}

/** Sends a thrown error as the contract's JSON; anything unexpected is a 503, never a 500 or a stack trace. */
export function answerError(res: ServerResponse, error: unknown, logger: Pick<Console, 'error'>): void {
  if (error instanceof ModelSwitchError) {
    sendError(res, error);
    return;
  }
  logger.error(`modelswitch-keys: unexpected error: ${errorText(error)}`);
  sendError(res, new ModelSwitchError('store_unavailable', 'The service is temporarily unavailable. Please retry shortly.'));
}

/**
 * Bearer authentication for the inference API (`/v1`, `ms-` keys by default). Verifies the key
 * (checksum, one store read, cached scrypt verify), checks it fresh from the store on every
 * request (active, expiry), counts the request against the key's rate limit, then calls `next()`
 * with `req.modelSwitch` set. Failures answer the contract's JSON errors (401/403/429/503).
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { MemoryKeyStore, modelSwitchAuth, keyInfoRoute } from 'modelswitch-keys';
 * const store = new MemoryKeyStore();
 * const app = express();
 * app.use('/v1', modelSwitchAuth(store), keyInfoRoute());
 * app.get('/v1/hello', (req, res) => res.json({ account: req.modelSwitch?.account.id }));
 * ```
 */
export function modelSwitchAuth(store: KeyStore, options: AuthOptions = {}): Middleware {
  assertStore(store, 'modelSwitchAuth');
  const authenticator = new Authenticator(store, options);
  const { logger } = authenticator;
  return function modelSwitchAuth(req, res, next) {
    let admitted: ModelSwitchContext | Promise<ModelSwitchContext>;
    try {
      admitted = authenticator.admit(req, res);
    } catch (error) {
      answerError(res, error, logger);
      return;
    }
    if (admitted instanceof Promise) {
      admitted
        .then((context) => {
          (req as IncomingMessage & { modelSwitch?: ModelSwitchContext }).modelSwitch = context;
        })
        .then(
          () => next(),
          (error: unknown) => answerError(res, error, logger),
        )
        // Only reached if a later handler throws synchronously out of next(): hand it to the host.
        .catch(next);
      return;
    }
    // A cached key on an in-process store: no promise, no microtask before the next handler.
    (req as IncomingMessage & { modelSwitch?: ModelSwitchContext }).modelSwitch = admitted;
    next();
  };
}
