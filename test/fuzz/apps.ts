import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import connect from 'connect';
import express5 from 'express';
import express4 from 'express4';
import { ModelSwitchError, type ProxyRouter, keyInfoRoute, keysRouter, modelSwitchAuth, proxyRouter, sendError } from '../../src/index.js';
import type { Middleware } from '../../src/http/middleware.js';
import type { FuzzWorld } from './world.js';

/** The host frameworks the middleware runs under; each fuzz case picks one. */
export const FRAMEWORKS = ['express5', 'express4', 'connect'] as const;
export type Framework = (typeof FRAMEWORKS)[number];

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** A host's own route behind modelSwitchAuth: answers who the verified key is. */
const whoami: Handler = (req, res) => {
  const context = (req as IncomingMessage & { modelSwitch?: { key: { id: number }; account: { id: string } } }).modelSwitch;
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify({ keyId: context?.key.id, accountId: context?.account.id }));
};

/** Unknown routes answer like the example's: a 404 in the contract's error JSON. */
const notFound: Handler = (req, res) => {
  sendError(res, new ModelSwitchError('route_not_found', `Unknown route: ${req.method} ${(req.url ?? '').split('?')[0]}`));
};

/** The options every factory gets in the fuzz world: its hasher, clock and logger. */
export function worldOptions(world: FuzzWorld) {
  return { hasher: world.hasher, now: world.clock.now, logger: world.logger };
}

/**
 * One app per framework with `mounts` (path and middleware chain) in order, the host route
 * `GET /v1/whoami` and the 404 last. Express's own error handler would answer HTML: a middleware
 * that passes an error on is a failure the properties catch (the answer is not the error JSON).
 */
export function apps(mounts: Array<[string, Middleware[]]>): Record<Framework, RequestListener> {
  const result = {} as Record<Framework, RequestListener>;
  for (const framework of FRAMEWORKS) {
    if (framework === 'connect') {
      const app = connect();
      for (const [path, chain] of mounts) for (const middleware of chain) app.use(path, middleware);
      app.use('/v1/whoami', whoami);
      app.use(notFound);
      result[framework] = app as unknown as RequestListener;
      continue;
    }
    const app = framework === 'express5' ? express5() : express4();
    for (const [path, chain] of mounts) app.use(path, ...chain);
    app.get('/v1/whoami', whoami);
    app.use(notFound);
    result[framework] = app as unknown as RequestListener;
  }
  return result;
}

/** keysRouter at /api and modelSwitchAuth + keyInfoRoute at /v1, as the README mounts them. */
export function managementApps(world: FuzzWorld): Record<Framework, RequestListener> {
  const options = worldOptions(world);
  return apps([
    ['/api', [keysRouter(world.store, options)]],
    ['/v1', [modelSwitchAuth(world.store, options), keyInfoRoute()]],
  ]);
}

/**
 * The metered proxy at /v1 in front of `upstreamUrl`, behind modelSwitchAuth under Express 5 and
 * Connect, and mounted alone (authenticating by itself) under Express 4. Returns the routers too,
 * so a case can wait for their settlements.
 */
export function proxyApps(world: FuzzWorld, upstreamUrl: string): { apps: Record<Framework, RequestListener>; routers: ProxyRouter[] } {
  const options = worldOptions(world);
  const router = () =>
    proxyRouter(world.store, {
      upstreams: [
        {
          name: 'mock',
          target: upstreamUrl,
          apiKey: 'sk-upstream-secret',
          models: ['mock-model', 'mock-unpriced', /^mock-family-/, 'gpt-4o-mini'],
        },
      ],
      pricing: { 'mock-model': PRICE, 'mock-family-a': PRICE, 'gpt-4o-mini': PRICE },
      defaultMaxTokens: 100,
      ...options,
    });
  const withAuth = router();
  const alone = router();
  const auth = modelSwitchAuth(world.store, options);
  const both = apps([['/v1', [auth, withAuth]]]);
  const single = apps([['/v1', [alone]]]);
  return { apps: { express5: both.express5, connect: both.connect, express4: single.express4 }, routers: [withAuth, alone] };
}

/** USD per million tokens of the mock's models. */
const PRICE = { inputPerMillion: 1000, outputPerMillion: 2000 };
