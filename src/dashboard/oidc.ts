import type { IncomingMessage } from 'node:http';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { DEFAULT_OIDC_ALGORITHMS, DEFAULT_OIDC_ID_TOKEN_COOKIE, DEFAULT_OIDC_SUBJECT_CLAIM } from '../defaults.js';
import { ConfigurationError } from '../errors/configuration-error.js';
import { readCookie } from './session.js';
import type { DashboardIdentity, IdentifyFunction } from './options.js';

/** Options of {@link oidcIdentity}. */
export interface OidcIdentityOptions {
  /** The identity provider's issuer (`iss`), e.g. `https://login.example.com/`. */
  issuer: string;
  /** The audience (`aud`) the ID tokens are for: the dashboard's client id. */
  audience: string;
  /** The provider's JWKS URL (its `jwks_uri`), e.g. `https://login.example.com/.well-known/jwks.json`. */
  jwksUri: string;
  /** The claim that names the account, e.g. `'modelswitch_account'`: a string claim, an account id of the store. */
  accountClaim: string;
  /** The claim shown as who is signed in. Default `'email'`, else `sub`. */
  subjectClaim?: string;
  /**
   * Where the ID token is: the host's own cookie name, read before `Authorization: Bearer`. Default
   * `'id_token'`.
   */
  cookieName?: string;
  /** Signature algorithms accepted. Default `['RS256', 'ES256', 'EdDSA']`; never `none` or an HMAC. */
  algorithms?: readonly string[];
  /** Clock in epoch ms, injectable for tests. Default `Date.now`. */
  now?: () => number;
}

const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/**
 * Single sign-on for the dashboard: an `identify` function that verifies the host's OIDC ID tokens
 * with `jose` (`createRemoteJWKSet` fetches and caches the provider's keys; `jwtVerify` checks the
 * signature, `iss`, `aud` and `exp`) and maps a claim to an account. A missing, expired, unsigned,
 * `alg: none`, wrong-issuer or wrong-audience token identifies nobody (the dashboard then asks for
 * a billing key).
 *
 * @example
 * ```ts
 * app.use('/dashboard', dashboardRouter(store, {
 *   session: { secret: process.env.DASHBOARD_SECRET },
 *   identify: oidcIdentity({
 *     issuer: 'https://login.example.com/',
 *     audience: 'modelswitch-dashboard',
 *     jwksUri: 'https://login.example.com/.well-known/jwks.json',
 *     accountClaim: 'modelswitch_account',
 *   }),
 * }));
 * ```
 */
export function oidcIdentity(options: OidcIdentityOptions): IdentifyFunction {
  const fail = (message: string): never => {
    throw new ConfigurationError('ERR_MS_OPTION', `oidcIdentity: ${message}`);
  };
  if (typeof options !== 'object' || options === null) fail('options {issuer, audience, jwksUri, accountClaim} are required');
  for (const name of ['issuer', 'audience', 'jwksUri', 'accountClaim'] as const) {
    if (typeof options[name] !== 'string' || options[name] === '') fail(`${name} must be a non-empty string`);
  }
  let jwksUrl: URL | null = null;
  try {
    jwksUrl = new URL(options.jwksUri);
  } catch {
    fail('jwksUri must be an absolute URL');
  }
  const algorithms = [...(options.algorithms ?? DEFAULT_OIDC_ALGORITHMS)];
  if (algorithms.length === 0 || algorithms.some((alg) => alg === 'none' || /^HS/.test(alg))) {
    fail('algorithms must name asymmetric algorithms only (never none or HS*)');
  }
  const jwks = createRemoteJWKSet(jwksUrl as URL);
  const cookieName = options.cookieName ?? DEFAULT_OIDC_ID_TOKEN_COOKIE;
  const now = options.now ?? Date.now;
  const { issuer, audience, accountClaim } = options;
  const subjectClaim = options.subjectClaim ?? DEFAULT_OIDC_SUBJECT_CLAIM;

  return async function oidcIdentity(req: IncomingMessage): Promise<DashboardIdentity | null> {
    const token = idToken(req, cookieName);
    if (token === null) return null;
    try {
      const { payload } = await jwtVerify(token, jwks, {
        issuer,
        audience,
        algorithms,
        currentDate: new Date(now()),
        requiredClaims: ['exp'],
      });
      const accountId = payload[accountClaim];
      if (typeof accountId !== 'string' || accountId === '') return null;
      const subject = payload[subjectClaim] ?? payload.sub;
      return { accountId, subject: typeof subject === 'string' ? subject : accountId };
    } catch {
      return null;
    }
  };
}

function idToken(req: IncomingMessage, cookieName: string): string | null {
  const fromCookie = readCookie(req, cookieName);
  if (fromCookie !== undefined && JWT_SHAPE.test(fromCookie)) return fromCookie;
  const header = req.headers.authorization;
  const match = typeof header === 'string' ? /^bearer +(\S+)$/i.exec(header) : null;
  return match && JWT_SHAPE.test(match[1] as string) ? (match[1] as string) : null;
}
