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
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = new.target.name;
    this.code = code;
  }
}
