import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import connect from 'connect';
import express5 from 'express';
import express4 from 'express4';
import { type DashboardOptions, type KeyStore, dashboardRouter, keyInfoRoute, keysRouter, modelSwitchAuth } from '../../src/index.js';
import type { Framework } from '../app.js';
import type { KeyHasher } from '../../src/index.js';

/** A fixed 32-byte secret: the tests sign and check tokens with it. */
export const TEST_SESSION_SECRET = 'dashboard-test-secret-0123456789abcdef';

/** A host app with the dashboard at /dashboard beside /api and /v1, listening on 127.0.0.1. */
export async function startDashboardApp(
  framework: Framework,
  store: KeyStore,
  options: { hasher: KeyHasher; now?: () => number; dashboard?: DashboardOptions },
): Promise<{ server: Server; origin: string; close: () => Promise<void> }> {
  const dashboard = dashboardRouter(store, {
    hasher: options.hasher,
    session: { secret: TEST_SESSION_SECRET },
    ...(options.now === undefined ? {} : { now: options.now }),
    ...options.dashboard,
  });
  const authOptions = { hasher: options.hasher, ...(options.now === undefined ? {} : { now: options.now }) };
  let app: connect.Server | ReturnType<typeof express5>;
  if (framework === 'connect') {
    const host = connect();
    host.use('/dashboard', dashboard);
    host.use('/api', keysRouter(store, authOptions));
    host.use('/v1', modelSwitchAuth(store, authOptions));
    host.use('/v1', keyInfoRoute());
    app = host;
  } else {
    const host = (framework === 'express5' ? express5 : express4)();
    host.use('/dashboard', dashboard);
    host.use('/api', keysRouter(store, authOptions));
    host.use('/v1', modelSwitchAuth(store, authOptions), keyInfoRoute());
    app = host as ReturnType<typeof express5>;
  }
  const server = await new Promise<Server>((resolve) => {
    const listening = (app as unknown as { listen: (port: number, host: string, done: () => void) => Server }).listen(0, '127.0.0.1', () =>
      resolve(listening),
    );
  });
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    server,
    origin,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A browser-like client of the dashboard's API: keeps the session cookie, sends Origin and the CSRF token. */
export class DashboardClient {
  cookie = '';
  csrfToken = '';

  constructor(readonly origin: string) {}

  async call(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; headers: Headers; body: unknown; text: string }> {
    const sent: Record<string, string> = { origin: this.origin, ...headers };
    if (this.cookie !== '') sent.cookie = this.cookie;
    if (this.csrfToken !== '' && method !== 'GET') sent['x-csrf-token'] ??= this.csrfToken;
    if (body !== undefined) sent['content-type'] = 'application/json';
    if (headers.origin === '') delete sent.origin;
    const response = await fetch(`${this.origin}/dashboard/${path}`, {
      method,
      headers: sent,
      redirect: 'manual',
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const setCookie = response.headers.get('set-cookie');
    if (setCookie !== null) {
      const pair = setCookie.split(';', 1)[0] as string;
      this.cookie = /=$/.test(pair) ? '' : pair;
    }
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // Not JSON (HTML, CSV, JS): the text is the body.
    }
    return { status: response.status, headers: response.headers, body: parsed, text };
  }

  async signIn(billingKey: string): Promise<{ status: number; body: unknown; headers: Headers }> {
    const answer = await this.call('POST', 'api/session', { key: billingKey });
    if (answer.status === 200) this.csrfToken = (answer.body as { csrfToken: string }).csrfToken;
    return answer;
  }
}
