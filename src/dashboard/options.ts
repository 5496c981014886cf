import type { IncomingMessage } from 'node:http';
import { randomBytes } from 'node:crypto';
import {
  DEFAULT_DASHBOARD_COOKIE_NAME,
  DEFAULT_DASHBOARD_COOKIE_SECURE,
  DEFAULT_DASHBOARD_MAX_BODY_BYTES,
  DEFAULT_DASHBOARD_SESSION_TTL_MS,
  DEFAULT_DASHBOARD_SIGN_IN_ATTEMPTS,
  DEFAULT_DASHBOARD_SIGN_IN_WINDOW_MS,
} from '../defaults.js';
import { ConfigurationError } from '../errors/configuration-error.js';
import type { EventHandler } from '../events/events.js';
import { type KeyHasher, defaultKeyHasher } from '../keys/hashing.js';
import { type Logger, hostLogger } from '../log.js';
import { type ResolvedStoreGuardOptions, type StoreGuardOptions, resolveStoreGuardOptions } from '../store/guard.js';

/** Who is using the dashboard, as `identify` (or a billing-key session) tells it. */
export interface DashboardIdentity {
  /** The account whose keys and billing the dashboard shows. */
  accountId: string;
  /** Who it is, for display and audit (an email, a user id); never a key value. */
  subject: string;
}

/**
 * The host's own login: returns who is signed in for this request, or `null` for nobody (then the
 * dashboard offers its billing-key sign-in). See `oidcIdentity` for single sign-on with ID tokens.
 */
export type IdentifyFunction = (req: IncomingMessage) => DashboardIdentity | null | Promise<DashboardIdentity | null>;

/** Options of the dashboard's sessions. Every field is optional outside `NODE_ENV=production`. */
export interface DashboardSessionOptions {
  /**
   * The HS256 key that signs session tokens (and derives CSRF tokens): at least 32 bytes (a string is
   * taken as UTF-8). Required under `NODE_ENV=production`; elsewhere a random one is made per process
   * (sessions then end when the process restarts, and do not carry across instances).
   */
  secret?: string | Uint8Array;
  /** How long a session lasts, in ms (1 minute to 7 days). Default {@link DEFAULT_DASHBOARD_SESSION_TTL_MS} (12 h). */
  ttlMs?: number;
  /** The session cookie's name. Default {@link DEFAULT_DASHBOARD_COOKIE_NAME}. */
  cookieName?: string;
  /**
   * `Secure` on the cookie: `'auto'` sets it when the request came over HTTPS (a TLS socket, or
   * `X-Forwarded-Proto: https` with `trustProxy`). Default `'auto'`.
   */
  secure?: boolean | 'auto';
}

/** Options of {@link dashboardRouter}. Every field is optional (but see `session.secret`). */
export interface DashboardOptions extends StoreGuardOptions {
  session?: DashboardSessionOptions;
  /** The host's own login (see {@link IdentifyFunction}); tried before the session cookie. */
  identify?: IdentifyFunction;
  /** Hashing and verification of keys. Default: the process-wide `KeyHasher` the other factories share. */
  hasher?: KeyHasher;
  /** Trust `X-Forwarded-Proto` and `X-Forwarded-Host` (behind a reverse proxy that sets them). Default false. */
  trustProxy?: boolean;
  /** Extra origins (`https://admin.example.com`) allowed to make state-changing requests besides the request's own. */
  allowedOrigins?: readonly string[];
  /** Failed sign-ins per client address per `signInWindowMs` before 429. Default {@link DEFAULT_DASHBOARD_SIGN_IN_ATTEMPTS}. */
  signInAttempts?: number;
  /** The window of `signInAttempts` in ms. Default {@link DEFAULT_DASHBOARD_SIGN_IN_WINDOW_MS}. */
  signInWindowMs?: number;
  /** The largest JSON body the dashboard's API reads. Default {@link DEFAULT_DASHBOARD_MAX_BODY_BYTES}. */
  maxBodyBytes?: number;
  /** Where the built assets (app.js, app.css) are. Default: the package's own `dist/dashboard`. */
  assetsDirectory?: string;
  /** Clock in epoch ms, injectable for tests. Default `Date.now`. */
  now?: () => number;
  /**
   * Receives the key changes made in the dashboard (`key.created`, `key.updated`, `key.rotated`,
   * `key.deleted`, for proxy and billing keys), as `keysRouter`'s `onEvent` does, after the answer
   * was sent; what it throws is logged and changes nothing. The `actor` is `dashboard session`,
   * and the event's `session` says who signed in: `billing key 12`, or `user <subject>` for the
   * host's own login (`identify`). Default: none.
   *
   * @example
   * ```ts
   * app.use('/dashboard', dashboardRouter(store, { session, onEvent: (event) => auditLog.info(event) }));
   * ```
   */
  onEvent?: EventHandler;
}

/** {@link DashboardOptions} with every default filled in: what the router reads. */
export interface ResolvedDashboardOptions {
  secret: Uint8Array;
  /** Whether `secret` was made for this process (no `session.secret` given). */
  generatedSecret: boolean;
  ttlMs: number;
  cookieName: string;
  secure: boolean | 'auto';
  identify: IdentifyFunction | null;
  hasher: KeyHasher;
  trustProxy: boolean;
  allowedOrigins: ReadonlySet<string>;
  signInAttempts: number;
  signInWindowMs: number;
  maxBodyBytes: number;
  assetsDirectory: string | null;
  now: () => number;
  /** The host's handler, or `undefined` for none. */
  onEvent: EventHandler | undefined;
  logger: Logger;
  guard: ResolvedStoreGuardOptions;
}

const MIN_SECRET_BYTES = 32;
const MAX_TTL_MS = 7 * 24 * 60 * 60 * 1000;
const COOKIE_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Resolves the options once, when the router is made: every mistake is a `ConfigurationError` here. */
export function resolveDashboardOptions(options: DashboardOptions, environment = process.env.NODE_ENV): ResolvedDashboardOptions {
  const session = options.session ?? {};
  const option = (message: string): never => {
    throw new ConfigurationError('ERR_MS_OPTION', `dashboardRouter: ${message}`);
  };
  let secret: Uint8Array;
  let generatedSecret = false;
  if (session.secret === undefined) {
    if (environment === 'production') {
      throw new ConfigurationError(
        'ERR_MS_SESSION_SECRET',
        'dashboardRouter: session.secret is required under NODE_ENV=production (at least 32 random bytes, e.g. `openssl rand -base64 32`, shared by every instance)',
      );
    }
    secret = randomBytes(MIN_SECRET_BYTES);
    generatedSecret = true;
  } else {
    secret = typeof session.secret === 'string' ? new TextEncoder().encode(session.secret) : new Uint8Array(session.secret);
    if (!(session.secret instanceof Uint8Array) && typeof session.secret !== 'string')
      option('session.secret must be a string or a Uint8Array');
    if (secret.byteLength < MIN_SECRET_BYTES) {
      throw new ConfigurationError('ERR_MS_SESSION_SECRET', `dashboardRouter: session.secret must be at least ${MIN_SECRET_BYTES} bytes`);
    }
  }
  const ttlMs = session.ttlMs ?? DEFAULT_DASHBOARD_SESSION_TTL_MS;
  if (!Number.isInteger(ttlMs) || ttlMs < 60_000 || ttlMs > MAX_TTL_MS)
    option('session.ttlMs must be an integer from 60000 (1 minute) to 604800000 (7 days)');
  const cookieName = session.cookieName ?? DEFAULT_DASHBOARD_COOKIE_NAME;
  if (!COOKIE_NAME.test(cookieName)) option('session.cookieName must be 1 to 64 letters, digits, - or _');
  const secure = session.secure ?? DEFAULT_DASHBOARD_COOKIE_SECURE;
  if (secure !== 'auto' && typeof secure !== 'boolean') option("session.secure must be true, false or 'auto'");
  if (options.identify !== undefined && typeof options.identify !== 'function') option('identify must be a function');
  if (options.onEvent !== undefined && typeof options.onEvent !== 'function')
    option('onEvent must be a function (event) => void, e.g. (event) => auditLog.info(event), or left out');
  const allowedOrigins = new Set<string>();
  for (const origin of options.allowedOrigins ?? []) {
    let parsed: URL | null = null;
    try {
      parsed = new URL(origin);
    } catch {
      parsed = null;
    }
    if (parsed === null || parsed.origin !== origin)
      option(`allowedOrigins: ${JSON.stringify(origin)} is not an origin like https://admin.example.com`);
    allowedOrigins.add(origin);
  }
  const count = (name: string, value: number, min: number): number => {
    if (!Number.isInteger(value) || value < min) option(`${name} must be an integer ≥ ${min}`);
    return value;
  };
  const assetsDirectory = options.assetsDirectory ?? null;
  if (assetsDirectory !== null && typeof assetsDirectory !== 'string') option('assetsDirectory must be a path');
  return {
    secret,
    generatedSecret,
    ttlMs,
    cookieName,
    secure,
    identify: options.identify ?? null,
    hasher: options.hasher ?? defaultKeyHasher(),
    trustProxy: options.trustProxy === true,
    allowedOrigins,
    signInAttempts: count('signInAttempts', options.signInAttempts ?? DEFAULT_DASHBOARD_SIGN_IN_ATTEMPTS, 1),
    signInWindowMs: count('signInWindowMs', options.signInWindowMs ?? DEFAULT_DASHBOARD_SIGN_IN_WINDOW_MS, 1000),
    maxBodyBytes: count('maxBodyBytes', options.maxBodyBytes ?? DEFAULT_DASHBOARD_MAX_BODY_BYTES, 1),
    assetsDirectory,
    now: options.now ?? Date.now,
    onEvent: options.onEvent,
    logger: hostLogger(options.logger),
    guard: resolveStoreGuardOptions(options, 'dashboardRouter'),
  };
}
