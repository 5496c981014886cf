import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Middleware } from '../http/middleware.js';
import type { ModelSwitchContext } from './authenticator.js';
import { nameRoute } from './request-metrics.js';

/** Whether a request is `GET` (or `HEAD`) of `path` below the mount point; the query string and a trailing slash are ignored. */
export function isGetOf(req: IncomingMessage, path: string): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  const requested = (req.url ?? '').split('?', 1)[0];
  return requested === path || requested === `${path}/`;
}

/**
 * A read-only route for the key `modelSwitchAuth` verified: `GET <path>` below the mount point is
 * answered by `answer` and named `route` in the metrics; every other request, and any request no
 * key was verified for, goes on to `next()`.
 */
export function verifiedKeyRoute(
  path: string,
  route: string,
  answer: (req: IncomingMessage, res: ServerResponse, context: ModelSwitchContext) => void,
): Middleware {
  return (req, res, next) => {
    const context = (req as IncomingMessage & { modelSwitch?: ModelSwitchContext }).modelSwitch;
    if (!isGetOf(req, path) || context === undefined) {
      next();
      return;
    }
    nameRoute(req, route);
    answer(req, res, context);
  };
}
