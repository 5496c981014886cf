/**
 * The hot path's servers (scenario 1), shared by the bench's server child (servers.ts) and the
 * instruction-count child (instructions-server.ts): the trivial handler, Express with and without a
 * middleware at /v1, modelSwitchAuth as every bench server mounts it, and the contract's floor.
 */
import * as crypto from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import express, { type Request, type Response } from 'express';
import type { KeyHasher as KeyHasherType } from '../src/keys/hashing.js';
import type { KeyStore } from '../src/store/types.js';
import { modelSwitchAuth } from './package.js';
import { UNLIMITED } from './stores.js';

export const HELLO = JSON.stringify({ ok: true });

/** The trivial /v1 handler every variant ends in. */
export function hello(_req: Request, res: Response): void {
  res.json({ ok: true });
}

export function expressApp(...middleware: express.RequestHandler[]): express.Express {
  const app = express();
  app.disable('x-powered-by');
  if (middleware.length > 0) app.use('/v1', ...middleware);
  app.get('/v1/hello', hello);
  return app;
}

export type PlainMiddleware = (req: IncomingMessage, res: ServerResponse, next: (error?: unknown) => void) => void;

/** modelSwitchAuth as every bench server mounts it: the given hasher, no log lines. */
export function quietAuth(store: KeyStore, hasher: KeyHasherType): PlainMiddleware {
  return modelSwitchAuth(store, { hasher, logger: { warn() {}, error() {} } });
}

/** A middleware that only calls next(): Express's own cost of one more layer. */
export const passThrough: PlainMiddleware = function passThrough(_req, _res, next) {
  next();
};

/** Ours: modelSwitchAuth (with its per-key rate limit) in front of the trivial handler. */
export function oursApp(store: KeyStore, hasher: KeyHasherType): express.Express {
  return expressApp(quietAuth(store, hasher) as express.RequestHandler);
}

export async function prewarm(hasher: KeyHasherType, store: KeyStore, keys: ReadonlyArray<{ key: string; handle: string }>): Promise<void> {
  for (const { key, handle } of keys) {
    const record = await store.getKeyByHandle(handle);
    if (!record || !(await hasher.verify(key, record.hash, handle))) throw new Error('pre-warm failed');
  }
}

/**
 * The contract floor's steps: `lookup` (read the Bearer token, look its SHA-256 up), `count` (count
 * the request, set the four `RateLimit-*` headers), `context` (set `req.modelSwitch`).
 */
export type FloorStep = 'lookup' | 'count' | 'context';
const FLOOR_STEPS: ReadonlySet<FloorStep> = new Set(['lookup', 'count', 'context']);

/**
 * The contract's floor: the least a middleware can do per request and still keep the contract for a
 * verified key, written inline with nothing of ours: read the Bearer token, look its SHA-256 up among
 * the verified keys (a key is never held in plaintext), check the record is active and unexpired,
 * count the request in a fixed window, set the four `RateLimit-*` headers and hand on a context
 * prepared once. No checksum, no store interface, no copies, no 401/403/429 bodies (it is only ever
 * sent the one valid key). What it costs is what the contract costs on this machine.
 *
 * `steps` keeps only some of its steps (the others are skipped; the record is then the one key's),
 * so the instruction count can price each step on its own.
 */
export function contractFloor(key: string, steps: ReadonlySet<FloorStep> = FLOOR_STEPS): PlainMiddleware {
  const bearer = /^bearer +([A-Za-z0-9\-._~+/]+=*)$/i;
  // The bench keys' own limit (UNLIMITED: 10^9 per 10 s), so the headers carry the same values as ours.
  const { requests } = UNLIMITED;
  const windowMs = 10_000;
  const policy = `${requests};w=${windowMs / 1000}`;
  const limit = String(requests);
  const record = {
    active: true,
    expiresAt: null as number | null,
    count: 0,
    resetAt: 0,
    context: { key: { id: 1 }, account: { id: 'a' } },
  };
  const verified = new Map([[sha256(key), record]]);
  const lookup = steps.has('lookup');
  const count = steps.has('count');
  const context = steps.has('context');
  return function contractFloor(req, res, next) {
    let found: typeof record | undefined = record;
    if (lookup) {
      const match = bearer.exec(req.headers.authorization ?? '');
      found = match ? verified.get(sha256(match[1] as string)) : undefined;
    }
    const now = Date.now();
    if (!found?.active || (found.expiresAt !== null && now >= found.expiresAt)) {
      res.statusCode = 401;
      res.end();
      return;
    }
    if (count) {
      if (now >= found.resetAt) {
        found.count = 0;
        found.resetAt = now + windowMs;
      }
      found.count++;
      res.setHeader('ratelimit-policy', policy);
      res.setHeader('ratelimit-limit', limit);
      res.setHeader('ratelimit-remaining', String(Math.max(0, requests - found.count)));
      res.setHeader('ratelimit-reset', String(Math.ceil((found.resetAt - now) / 1000)));
    }
    if (context) (req as IncomingMessage & { modelSwitch?: object }).modelSwitch = found.context;
    next();
  };
}

// One-shot `crypto.hash` where Node has it (≥ 20.12), as the package itself uses.
const oneShotHash = (crypto as { hash?: (algorithm: string, data: string, encoding: 'hex') => string }).hash;

/** SHA-256 in hex, for the token lookups of theirs and of the contract floor. */
export function sha256(text: string): string {
  return oneShotHash ? oneShotHash('sha256', text, 'hex') : crypto.createHash('sha256').update(text).digest('hex');
}
