import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { SignJWT, jwtVerify } from 'jose';
import type { StoreGuard } from '../store/guard.js';
import type { KeyStore } from '../store/types.js';
import type { ResolvedDashboardOptions } from './options.js';

/** What a session token says: which billing key signed in, for which account, until when. */
export interface SessionClaims {
  /** The billing key's id: its state is read fresh on every request. */
  keyId: number;
  accountId: string;
  /** The token's id: what sign-out revokes and the CSRF token is derived from. */
  sessionId: string;
  /** Epoch ms. */
  expiresAt: number;
}

const ISSUER = 'modelswitch-keys/dashboard';
const ALGORITHM = 'HS256';

/** Signs a session token for a billing key that just signed in. */
export async function signSession(
  options: ResolvedDashboardOptions,
  claims: { keyId: number; accountId: string },
  now: number,
): Promise<{ token: string; claims: SessionClaims }> {
  const sessionId = randomBytes(16).toString('base64url');
  const issuedAt = Math.floor(now / 1000);
  const expiresAt = (issuedAt + Math.floor(options.ttlMs / 1000)) * 1000;
  const token = await new SignJWT({ acc: claims.accountId })
    .setProtectedHeader({ alg: ALGORITHM, typ: 'JWT' })
    .setSubject(String(claims.keyId))
    .setIssuer(ISSUER)
    .setAudience(ISSUER)
    .setJti(sessionId)
    .setIssuedAt(issuedAt)
    .setExpirationTime(expiresAt / 1000)
    .sign(options.secret);
  return { token, claims: { keyId: claims.keyId, accountId: claims.accountId, sessionId, expiresAt } };
}

/** The claims of a valid session token (signature, algorithm, issuer, audience, expiry), or `null`. */
export async function verifySession(options: ResolvedDashboardOptions, token: string, now: number): Promise<SessionClaims | null> {
  try {
    const { payload } = await jwtVerify(token, options.secret, {
      algorithms: [ALGORITHM],
      issuer: ISSUER,
      audience: ISSUER,
      currentDate: new Date(now),
      requiredClaims: ['sub', 'jti', 'exp', 'iat'],
    });
    const keyId = Number(payload.sub);
    if (!Number.isSafeInteger(keyId) || keyId < 1 || typeof payload.acc !== 'string' || typeof payload.jti !== 'string') return null;
    return { keyId, accountId: payload.acc, sessionId: payload.jti, expiresAt: (payload.exp as number) * 1000 };
  } catch {
    return null;
  }
}

/**
 * The CSRF token of a session: an HMAC of its id under the session secret, so it needs no storage
 * and cannot be made without the secret. The page reads it from `GET api/session` (same origin only)
 * and sends it back in `X-CSRF-Token`.
 */
export function csrfTokenFor(options: ResolvedDashboardOptions, sessionId: string): string {
  return createHmac('sha256', options.secret).update(`csrf\n${sessionId}`).digest('base64url');
}

/** Whether `presented` is the session's CSRF token, compared in constant time. */
export function isCsrfToken(options: ResolvedDashboardOptions, sessionId: string, presented: string | undefined): boolean {
  if (typeof presented !== 'string') return false;
  const expected = Buffer.from(csrfTokenFor(options, sessionId));
  const given = Buffer.from(presented);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * Signed-out sessions, kept in the store's counters so every instance sees a sign-out: a session is
 * marked in the window that holds the sign-out and in the next one (windows are the session's
 * lifetime long), so the mark lasts until the token expires whichever window a later request falls in.
 */
export class SignedOutSessions {
  constructor(
    private readonly store: KeyStore,
    private readonly guard: StoreGuard,
    private readonly windowMs: number,
  ) {}

  async revoke(sessionId: string, now: number): Promise<void> {
    await Promise.all(
      [now, now + this.windowMs].map((at) => {
        const name = this.counterName(sessionId, at);
        return this.guard.run('hitCounter', () => this.store.hitCounter(name, this.windowMs, at));
      }),
    );
  }

  async isRevoked(sessionId: string, now: number): Promise<boolean> {
    const name = this.counterName(sessionId, now);
    const state = await this.guard.run('hitCounter', () => this.store.hitCounter(name, this.windowMs, now, 0));
    return state.count > 0;
  }

  /** One counter per window (a store keeps one window per name). */
  private counterName(sessionId: string, at: number): string {
    return `dashboard:signed-out:${sessionId}:${Math.floor(at / this.windowMs)}`;
  }
}

/** The value of one cookie of the request, or `undefined`. */
export function readCookie(req: IncomingMessage, name: string): string | undefined {
  const header = req.headers.cookie;
  if (typeof header !== 'string') return undefined;
  for (const part of header.split(';')) {
    const index = part.indexOf('=');
    if (index < 0) continue;
    if (part.slice(0, index).trim() === name) return part.slice(index + 1).trim();
  }
  return undefined;
}

/** A `Set-Cookie` value for the session cookie: HttpOnly, SameSite=Strict, scoped to the dashboard's path. */
export function sessionCookie(name: string, value: string, attributes: { path: string; secure: boolean; maxAgeSeconds: number }): string {
  const parts = [`${name}=${value}`, `Path=${attributes.path}`, `Max-Age=${attributes.maxAgeSeconds}`, 'HttpOnly', 'SameSite=Strict'];
  if (attributes.secure) parts.push('Secure');
  return parts.join('; ');
}
