import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { AUTH_REALM, ModelSwitchError, answerWithoutStack, authenticationError, invalidApiKey, invalidRequest } from '../errors/errors.js';
import { isJsonObject, readJsonBody } from '../http/body.js';
import type { Middleware } from '../http/middleware.js';
import { answerError, sendError, sendJson } from '../http/respond.js';
import { isoTime } from '../keys/public-key.js';
import { parseApiKey } from '../keys/api-key.js';
import { rateLimitExceeded } from '../auth/rate-limit.js';
import { EventDispatcher } from '../events/events.js';
import { assertStore } from '../store/assert-store.js';
import { StoreGuard } from '../store/guard.js';
import type { KeyRecord, KeyStore } from '../store/types.js';
import { DashboardAssets, pageHtml } from './assets.js';
import { type Caller, DashboardApi } from './dashboard-api.js';
import { type DashboardOptions, resolveDashboardOptions } from './options.js';
import { SignedOutSessions, csrfTokenFor, isCsrfToken, readCookie, sessionCookie, signSession, verifySession } from './session.js';

/**
 * The strict policy of every dashboard answer: scripts and styles only from the dashboard's own
 * files (no inline script or style), no framing, no other origin.
 */
const CONTENT_SECURITY_POLICY =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);
const KEY_ITEM = /^\/api\/keys\/([^/]+)$/;
const KEY_ROTATE = /^\/api\/keys\/([^/]+)\/rotate$/;

/** A request that reached a route: the caller, once known, and where the dashboard is mounted. */
interface RouteContext {
  req: IncomingMessage;
  res: ServerResponse;
  path: string;
  query: URLSearchParams;
  /** The mount path (`/dashboard`), the session cookie's `Path`. */
  base: string;
}

/** What a request's session (or the host's `identify`) says. */
interface Session extends Caller {
  /** What the CSRF token is derived from. */
  sessionId: string;
  expiresAt: number | null;
  kind: 'billing-key' | 'identify';
}

/**
 * The docs' dashboard, mountable under any path of an Express 4/5 or Connect app: **API Keys**
 * (create with the key shown once, rename, deactivate/reactivate, rotate with a grace period, delete),
 * **Billing Keys** (the same for `mk-` keys) and **Billing** (balance, reserved, daily spend by model,
 * transactions with paging, CSV export).
 *
 * Sign-in takes a billing key (`mk-`), exchanged at once for a session: a JWT signed with `jose`
 * (HS256) in an HttpOnly, SameSite=Strict cookie (Secure over HTTPS), 12 hours by default, bound to
 * that billing key, whose state is read fresh on every request (deactivated, expired or deleted ends
 * the session). Or the host's own login through `identify` (see `oidcIdentity`). State-changing
 * requests need the session's CSRF token and a same-origin `Origin`; every answer carries a strict
 * Content-Security-Policy, `frame-ancestors 'none'`, `Cache-Control: no-store` and
 * `Referrer-Policy: no-referrer`. The page and its assets ship in the package; nothing is fetched
 * from elsewhere.
 *
 * @example
 * ```ts
 * import { dashboardRouter } from 'modelswitch-keys';
 * app.use('/dashboard', dashboardRouter(store, { session: { secret: process.env.DASHBOARD_SESSION_SECRET } }));
 * // open http://localhost:3000/dashboard/ and sign in with a billing key (mk-…)
 * ```
 */
export function dashboardRouter(store: KeyStore, options: DashboardOptions = {}): Middleware {
  assertStore(store, 'dashboardRouter');
  const resolved = resolveDashboardOptions(options);
  const guard = new StoreGuard(store, resolved.guard);
  const api = new DashboardApi(store, guard, resolved, new EventDispatcher(resolved.onEvent, resolved.logger));
  const signedOut = new SignedOutSessions(store, guard, resolved.ttlMs);
  const assets = new DashboardAssets(resolved.assetsDirectory);
  const { now, logger } = resolved;

  async function sessionOf(req: IncomingMessage): Promise<Session | null> {
    if (resolved.identify !== null) {
      const identity = await resolved.identify(req);
      if (identity) {
        const account = await guard.run('getAccount', () => store.getAccount(identity.accountId));
        if (!account) return null;
        return {
          accountId: identity.accountId,
          subject: identity.subject,
          keyId: null,
          sessionId: `identify\n${identity.accountId}\n${identity.subject}`,
          expiresAt: null,
          kind: 'identify',
        };
      }
    }
    const token = readCookie(req, resolved.cookieName);
    if (token === undefined || token === '') return null;
    const at = now();
    const claims = await verifySession(resolved, token, at);
    if (claims === null) return null;
    const [key, revoked] = await Promise.all([
      guard.run('getKey', () => store.getKey(claims.keyId)),
      signedOut.isRevoked(claims.sessionId, at),
    ]);
    if (revoked || !usableBillingKey(key, claims.accountId, at)) return null;
    return {
      accountId: claims.accountId,
      subject: `${key.name} (${key.prefix}…)`,
      keyId: key.id,
      sessionId: claims.sessionId,
      expiresAt: claims.expiresAt,
      kind: 'billing-key',
    };
  }

  async function requireSession(context: RouteContext): Promise<Session> {
    const session = await sessionOf(context.req);
    if (session === null) {
      // A stale cookie goes: the page then shows the sign-in form.
      if (readCookie(context.req, resolved.cookieName) !== undefined) clearCookie(context);
      throw sessionRequired();
    }
    if (STATE_CHANGING.has(context.req.method ?? '')) {
      const presented = context.req.headers['x-csrf-token'];
      if (!isCsrfToken(resolved, session.sessionId, typeof presented === 'string' ? presented : undefined)) {
        throw new ModelSwitchError('csrf_check_failed', 'Missing or wrong CSRF token: reload the dashboard and try again');
      }
    }
    return session;
  }

  function sessionAnswer(session: Session) {
    return {
      kind: session.kind,
      accountId: session.accountId,
      subject: session.subject,
      keyId: session.keyId,
      expiresAt: session.expiresAt === null ? null : isoTime(session.expiresAt),
      csrfToken: csrfTokenFor(resolved, session.sessionId),
    };
  }

  async function signIn(context: RouteContext): Promise<void> {
    const { req, res } = context;
    const at = now();
    const client = clientAddress(req, resolved.trustProxy);
    const counter = `dashboard:sign-in:${client}`;
    const attempts = await guard.run('hitCounter', () => store.hitCounter(counter, resolved.signInWindowMs, at, 0));
    if (attempts.count >= resolved.signInAttempts) {
      throw rateLimitExceeded('Too many failed sign-ins from this address. Retry after the window resets.', attempts.resetAt, at);
    }
    const failed = async (error: ModelSwitchError): Promise<never> => {
      await guard.run('hitCounter', () => store.hitCounter(counter, resolved.signInWindowMs, at));
      throw error;
    };
    const { value } = await readJsonBody(req, res, resolved.maxBodyBytes);
    if (!isJsonObject(value) || typeof value.key !== 'string' || Object.keys(value).length !== 1) {
      throw invalidRequest('Send {"key": "mk-…"}: a billing key', 'key');
    }
    const parsed = parseApiKey(value.key.trim());
    if (parsed === null) return failed(invalidApiKey());
    if (parsed.type !== 'billing') {
      return failed(
        authenticationError(
          'wrong_key_type',
          'The dashboard needs a billing key (mk-). Proxy keys (ms-) only work with the inference API (/v1).',
          true,
        ),
      );
    }
    const record = await guard.run('getKeyByHandle', () => store.getKeyByHandle(parsed.handle));
    if (record?.type !== 'billing' || !(await verifiesAgainst(record, parsed.value, parsed.handle, at))) return failed(invalidApiKey());
    if (record.expiresAt !== null && at >= record.expiresAt) throw authenticationError('expired_api_key', 'API key has expired', true);
    if (!record.active) throw answerWithoutStack('key_deactivated', 'API key has been deactivated');
    const account = await guard.run('getAccount', () => store.getAccount(record.accountId));
    if (!account) return failed(invalidApiKey());
    const signed = await signSession(resolved, { keyId: record.id, accountId: record.accountId }, at);
    res.setHeader(
      'Set-Cookie',
      sessionCookie(resolved.cookieName, signed.token, {
        path: cookiePath(context.base),
        secure: secureCookie(req),
        maxAgeSeconds: Math.floor(resolved.ttlMs / 1000),
      }),
    );
    sendJson(
      res,
      200,
      sessionAnswer({
        accountId: record.accountId,
        subject: `${record.name} (${record.prefix}…)`,
        keyId: record.id,
        sessionId: signed.claims.sessionId,
        expiresAt: signed.claims.expiresAt,
        kind: 'billing-key',
      }),
    );
  }

  async function verifiesAgainst(record: KeyRecord, value: string, handle: string, at: number): Promise<boolean> {
    // One check against both hashes, the current one first, as the Authenticator does: a match of
    // the previous secret gives the handle's wrong-secret turn back, so the previous secret's
    // holders never lock the new one out of sign-in (two separate checks spent the turn on the
    // first miss). The previous hash stays in the check after its deadline so that secret is still
    // recognised, and refused, without spending a turn.
    const previous = record.previousHash;
    const matched = await resolved.hasher.matchingHash(value, previous === null ? [record.hash] : [record.hash, previous], handle);
    if (matched !== undefined && matched === record.hash) return true;
    // During a rotation's grace period the previous secret still signs in, as it still authenticates.
    return matched !== undefined && matched === previous && record.previousKeyExpiresAt !== null && at < record.previousKeyExpiresAt;
  }

  async function signOut(context: RouteContext): Promise<void> {
    const session = await requireSession(context);
    if (session.kind === 'billing-key') await signedOut.revoke(session.sessionId, now());
    clearCookie(context);
    sendJson(context.res, 200, { signedOut: true });
  }

  function clearCookie(context: RouteContext): void {
    context.res.setHeader(
      'Set-Cookie',
      sessionCookie(resolved.cookieName, '', { path: cookiePath(context.base), secure: secureCookie(context.req), maxAgeSeconds: 0 }),
    );
  }

  function secureCookie(req: IncomingMessage): boolean {
    return resolved.secure === 'auto' ? requestProtocol(req, resolved.trustProxy) === 'https' : resolved.secure;
  }

  /** The same-origin check of state-changing requests: `Origin` must be this server's own (or an allowed one). */
  function checkOrigin(req: IncomingMessage): void {
    const origin = req.headers.origin;
    const host = resolved.trustProxy ? (firstValue(req.headers['x-forwarded-host']) ?? req.headers.host) : req.headers.host;
    const own = host === undefined ? null : `${requestProtocol(req, resolved.trustProxy)}://${host}`;
    if (typeof origin !== 'string' || (origin !== own && !resolved.allowedOrigins.has(origin))) {
      throw new ModelSwitchError(
        'csrf_check_failed',
        'Cross-origin request refused: state-changing requests must come from the dashboard page itself',
      );
    }
  }

  async function route(context: RouteContext): Promise<void> {
    const { req, res, path, query } = context;
    const method = req.method ?? 'GET';
    if (STATE_CHANGING.has(method)) checkOrigin(req);
    if (path === '/api/session') {
      if (method === 'GET') {
        const session = await sessionOf(req);
        if (session === null) throw sessionRequired();
        return sendJson(res, 200, sessionAnswer(session));
      }
      if (method === 'POST') return signIn(context);
      if (method === 'DELETE') return signOut(context);
      throw methodNotAllowed(method, 'GET, POST, DELETE');
    }
    if (path === '/api/keys') {
      if (method === 'GET') return api.listKeys(await requireSession(context), query, res);
      if (method === 'POST') return api.createKey(await requireSession(context), req, res);
      throw methodNotAllowed(method, 'GET, POST');
    }
    const rotate = KEY_ROTATE.exec(path);
    if (rotate) {
      if (method !== 'POST') throw methodNotAllowed(method, 'POST');
      return api.rotateKey(await requireSession(context), decodePathPart(rotate[1] as string), req, res);
    }
    const item = KEY_ITEM.exec(path);
    if (item) {
      const id = decodePathPart(item[1] as string);
      if (method === 'PATCH' || method === 'PUT') return api.updateKey(await requireSession(context), id, req, res);
      if (method === 'DELETE') return api.deleteKey(await requireSession(context), id, res);
      throw methodNotAllowed(method, 'PATCH, PUT, DELETE');
    }
    if (method !== 'GET' && method !== 'HEAD') throw methodNotAllowed(method, 'GET');
    if (path === '/api/account') return api.account(await requireSession(context), res);
    if (path === '/api/transactions') return api.transactions(await requireSession(context), query, res);
    if (path === '/api/transactions.csv') return api.transactionsCsv(await requireSession(context), query, res);
    if (path === '/api/usage') return api.usage(await requireSession(context), query, res);
    throw new ModelSwitchError('route_not_found', `Unknown dashboard route: ${method} ${path}`);
  }

  return function dashboardRouter(req, res, next) {
    const url = req.url ?? '/';
    const queryIndex = url.indexOf('?');
    const path = queryIndex < 0 ? url : url.slice(0, queryIndex);
    const isPage = path === '/' || path === '' || path === '/index.html';
    const isAsset = path.startsWith('/assets/');
    if (!isPage && !isAsset && !path.startsWith('/api/')) {
      next();
      return;
    }
    setSecurityHeaders(res);
    const base = mountPath(req, url);
    if (isPage || isAsset) {
      const method = req.method ?? 'GET';
      if (method !== 'GET' && method !== 'HEAD') {
        sendError(res, methodNotAllowed(method, 'GET, HEAD'));
        return;
      }
      if (isAsset) {
        const served = assets.serve(path.slice('/assets/'.length), firstValue(req.headers['if-none-match']), method === 'HEAD', res);
        if (!served) next();
        return;
      }
      // Relative asset and API URLs need the trailing slash: /dashboard → /dashboard/.
      const original = (req as IncomingMessage & { originalUrl?: string }).originalUrl;
      const originalPath = original?.split('?', 1)[0];
      if (originalPath !== undefined && !originalPath.endsWith('/') && path !== '/index.html') {
        res.statusCode = 308;
        // Leading slashes collapsed: `//host` would be another site.
        res.setHeader('Location', `${originalPath.replace(/^\/+/, '/')}/${queryIndex < 0 ? '' : url.slice(queryIndex)}`);
        res.end();
        return;
      }
      const built = assets.available;
      if (!built) logger.warn('modelswitch-keys: dashboard assets not found; run `npm run build` (or set assetsDirectory)');
      const html = pageHtml(built);
      res.statusCode = 200;
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.setHeader('Content-Length', Buffer.byteLength(html));
      res.end(method === 'HEAD' ? undefined : html);
      return;
    }
    const context: RouteContext = { req, res, path, query: new URLSearchParams(queryIndex < 0 ? '' : url.slice(queryIndex + 1)), base };
    route(context).catch((error: unknown) => answerError(res, error, logger));
  };
}

/** A billing key that may hold a session for `accountId` right now. */
function usableBillingKey(key: KeyRecord | null, accountId: string, at: number): key is KeyRecord {
  return (
    key !== null && key.type === 'billing' && key.accountId === accountId && key.active && (key.expiresAt === null || at < key.expiresAt)
  );
}

function setSecurityHeaders(res: ServerResponse): void {
  res.setHeader('Content-Security-Policy', CONTENT_SECURITY_POLICY);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Referrer-Policy', 'no-referrer');
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('X-Frame-Options', 'DENY');
  res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
  res.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
}

function sessionRequired(): ModelSwitchError {
  return answerWithoutStack('session_required', 'Sign in to the dashboard with a billing key (mk-…)', {
    headers: { 'WWW-Authenticate': `Bearer realm="${AUTH_REALM}"` },
  });
}

function methodNotAllowed(method: string, allow: string): ModelSwitchError {
  return new ModelSwitchError('method_not_allowed', `${method} is not supported on this route`, { headers: { Allow: allow } });
}

/** Where the router is mounted: Express's `baseUrl`, else what `originalUrl` has before `url`. */
function mountPath(req: IncomingMessage, url: string): string {
  const withBase = req as IncomingMessage & { baseUrl?: string; originalUrl?: string };
  if (typeof withBase.baseUrl === 'string') return withBase.baseUrl;
  const original = withBase.originalUrl?.split('?', 1)[0];
  const path = url.split('?', 1)[0] as string;
  if (original === undefined || !original.endsWith(path)) return '';
  return original.slice(0, original.length - path.length);
}

function cookiePath(base: string): string {
  return base === '' ? '/' : base;
}

function requestProtocol(req: IncomingMessage, trustProxy: boolean): 'http' | 'https' {
  if ((req.socket as TLSSocket | undefined)?.encrypted === true) return 'https';
  if (trustProxy && firstValue(req.headers['x-forwarded-proto'])?.split(',')[0]?.trim() === 'https') return 'https';
  return 'http';
}

function firstValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function clientAddress(req: IncomingMessage, trustProxy: boolean): string {
  if (trustProxy) {
    const forwarded = firstValue(req.headers['x-forwarded-for'])?.split(',')[0]?.trim();
    if (forwarded) return forwarded;
  }
  return req.socket.remoteAddress ?? 'unknown';
}

function decodePathPart(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}
