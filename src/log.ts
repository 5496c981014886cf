/** Where the middleware reports store outages and other operational events. Never given a key value. */
export interface Logger {
  warn(message: string): void;
  error(message: string): void;
}

/**
 * The host's logger (default `console`), safe to call: what it throws, or a promise it returns
 * rejecting, is dropped, so a broken logger never changes an answer, loses a settlement or leaves a
 * response open.
 */
export function hostLogger(logger: Logger | undefined): Logger {
  const target = logger ?? console;
  const call = (write: () => unknown): void => {
    try {
      const result = write();
      // An async logger (typed `void`, but a promise all the same) must not reject unhandled.
      if (typeof (result as PromiseLike<unknown> | undefined)?.then === 'function') {
        Promise.resolve(result).catch(() => {});
      }
    } catch {
      // Dropped: see above.
    }
  };
  return {
    warn: (message) => call(() => target.warn(message)),
    error: (message) => call(() => target.error(message)),
  };
}

/** What was thrown, as text for a log line; never throws itself, whatever was thrown. */
export function errorText(error: unknown): string {
  try {
    return error instanceof Error ? error.message : String(error);
  } catch {
    return 'an error that cannot be printed';
  }
}
