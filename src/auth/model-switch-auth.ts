import type { IncomingMessage } from 'node:http';
import { Authenticator, type ModelSwitchContext } from './authenticator.js';
import { type AuthOptions, resolveAuthOptions } from './options.js';
import type { Middleware } from '../http/middleware.js';
import { answerError } from '../http/respond.js';
import { assertStore } from '../store/assert-store.js';
import { trackRequest } from './request-metrics.js';
import type { KeyStore } from '../store/types.js';

declare global {
  namespace Express {
    interface Request {
      /** Set by `modelSwitchAuth` and `keysRouter`: the verified key, its account and limits. */
      modelSwitch?: ModelSwitchContext;
    }
  }
}

/** The route label of a request `modelSwitchAuth` refused, or passed to a route of the host (as mounted at `/v1`). */
const AUTHENTICATED_ROUTE = '/v1/*';

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
  const authenticator = new Authenticator(store, resolveAuthOptions(options, 'modelSwitchAuth'));
  const { logger, metrics } = authenticator;
  return function modelSwitchAuth(req, res, next) {
    // Until a later factory names it (proxyRouter, keyInfoRoute), a request is counted as `/v1/*`.
    trackRequest(metrics, req, res, AUTHENTICATED_ROUTE);
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
