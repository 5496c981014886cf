import { ModelSwitchError } from './errors.js';

/** Where the middleware reports store outages and other operational events. Never given a key value. */
export interface Logger {
  warn(message: string): void;
  error(message: string): void;
}

/** Options shared by every factory that talks to the store. */
export interface StoreGuardOptions {
  /** A store call slower than this fails the request with 503 `store_unavailable`. Default 2000 ms. */
  storeTimeoutMs?: number;
  /** Where outages are reported: one line when the store starts failing, one when it recovers. Default `console`. */
  logger?: Logger;
}

const outageByStore = new WeakMap<object, { down: boolean }>();

/**
 * Runs store calls with a timeout and turns any failure into 503 `store_unavailable` (fail closed),
 * logging one line per outage (not per request) per store.
 */
export class StoreGuard {
  private readonly timeoutMs: number;
  private readonly logger: Logger;
  private readonly outage: { down: boolean };

  constructor(store: object, options: StoreGuardOptions = {}) {
    this.timeoutMs = options.storeTimeoutMs ?? 2000;
    if (!(this.timeoutMs > 0)) throw new TypeError('storeTimeoutMs must be a positive number of milliseconds');
    this.logger = options.logger ?? console;
    const known = outageByStore.get(store);
    this.outage = known ?? { down: false };
    if (!known) outageByStore.set(store, this.outage);
  }

  /** Runs `call`; on error or timeout throws a 503 `ModelSwitchError`. */
  async run<T>(operation: string, call: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const result = await Promise.race([
        call(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`timed out after ${this.timeoutMs} ms`)), this.timeoutMs);
        }),
      ]);
      if (this.outage.down) {
        this.outage.down = false;
        this.logger.warn('modelswitch-keys: key store recovered');
      }
      return result;
    } catch (error) {
      if (error instanceof ModelSwitchError) throw error;
      if (!this.outage.down) {
        this.outage.down = true;
        const reason = error instanceof Error ? error.message : String(error);
        this.logger.error(
          `modelswitch-keys: key store unavailable (${operation}: ${reason}); requests that need it answer 503 until it recovers`,
        );
      }
      throw new ModelSwitchError('store_unavailable', 'The key store is unavailable. Please retry shortly.', { cause: error });
    } finally {
      clearTimeout(timer);
    }
  }
}
