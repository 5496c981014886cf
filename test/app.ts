import type { IncomingMessage, ServerResponse } from 'node:http';
import connect from 'connect';
import express5 from 'express';
import express4 from 'express4';
import { type AuthOptions, type KeyStore, type KeysRouterOptions, keyInfoRoute, keysRouter, modelSwitchAuth } from '../src/index.js';

/** The three host frameworks the middleware must work under. */
export const FRAMEWORKS = ['express5', 'express4', 'connect'] as const;
export type Framework = (typeof FRAMEWORKS)[number];

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** Answers `GET /v1/whoami` with the verified key's id and account, like a host route would. */
const whoami: Handler = (req, res) => {
  const context = (req as IncomingMessage & { modelSwitch?: { key: { id: number }; account: { id: string } } }).modelSwitch;
  res.setHeader('Content-Type', 'application/json');
  res.end(JSON.stringify({ keyId: context?.key.id, accountId: context?.account.id }));
};

/**
 * A host app with the package mounted as the README shows: `/api` key management, `/v1` Bearer auth
 * with the key-info route and one host route (`GET /v1/whoami`).
 */
export function buildApp(framework: Framework, store: KeyStore, options: AuthOptions & KeysRouterOptions = {}) {
  const notFound: Handler = (_req, res) => {
    res.statusCode = 404;
    res.setHeader('Content-Type', 'application/json');
    res.end('{"host":"not found"}');
  };
  if (framework === 'connect') {
    const app = connect();
    app.use('/api', keysRouter(store, options));
    app.use('/v1', modelSwitchAuth(store, options));
    app.use('/v1', keyInfoRoute());
    app.use('/v1/whoami', whoami);
    app.use(notFound);
    return app;
  }
  const express = framework === 'express5' ? express5 : express4;
  const app = express();
  app.use('/api', keysRouter(store, options));
  app.use('/v1', modelSwitchAuth(store, options), keyInfoRoute());
  app.get('/v1/whoami', whoami);
  app.use(notFound);
  return app;
}
