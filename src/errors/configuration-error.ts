/**
 * What a `ConfigurationError` is about, so `switch (error.code)` narrows:
 * - `ERR_MS_STORE`: the factory was given no `KeyStore`;
 * - `ERR_MS_OPTION`: an option has the wrong type or is out of range;
 * - `ERR_MS_UPSTREAM`: an entry of `proxyRouter`'s `upstreams` is invalid;
 * - `ERR_MS_PRICING`: `proxyRouter`'s `pricing` (or a price it returned) is invalid;
 * - `ERR_MS_SESSION_SECRET`: `dashboardRouter` has no `session.secret` under `NODE_ENV=production`, or a short one.
 */
export type ConfigurationErrorCode = 'ERR_MS_STORE' | 'ERR_MS_OPTION' | 'ERR_MS_UPSTREAM' | 'ERR_MS_PRICING' | 'ERR_MS_SESSION_SECRET';

/**
 * A programmer mistake in the options given to a factory, caught when the middleware is created.
 * Its `code` starts with `ERR_MS_` and its message says how to fix it.
 *
 * @example
 * ```ts
 * try { modelSwitchAuth(undefined as never); } catch (e) { (e as ConfigurationError).code; } // 'ERR_MS_STORE'
 * ```
 */
export class ConfigurationError extends TypeError {
  /** A stable code such as `ERR_MS_STORE` or `ERR_MS_OPTION`. */
  readonly code: ConfigurationErrorCode;
  constructor(code: ConfigurationErrorCode, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}
