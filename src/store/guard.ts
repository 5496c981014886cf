import { DEFAULT_STORE_TIMEOUT_MS } from '../defaults.js';
import { ConfigurationError } from '../errors/configuration-error.js';
import { ModelSwitchError, answerWithoutStack } from '../errors/errors.js';
import { type Logger, errorText, hostLogger } from '../log.js';
import { type GatewayMetrics, isGatewayMetrics } from '../metrics/gateway-metrics.js';
import type { Awaitable } from './types.js';

/** Options shared by every factory that talks to the store. */
export interface StoreGuardOptions {
  /** A store call slower than this fails the request with 503 `store_unavailable`. Default {@link DEFAULT_STORE_TIMEOUT_MS} (2000 ms). */
  storeTimeoutMs?: number;
  /** Where outages are reported: one line when the store starts failing, one when it recovers. Default `console`. */
  logger?: Logger;
  /**
   * Where the factory reports its metrics: `prometheusMetrics()` answers one (requests by route,
   * latencies, metered tokens and USD, store failures, queues). Default: none.
   */
  metrics?: GatewayMetrics;
}

/** {@link StoreGuardOptions} after {@link resolveStoreGuardOptions}: every field present and checked. */
export interface ResolvedStoreGuardOptions {
  readonly storeTimeoutMs: number;
  /** The host's logger (or `console`) made safe to call: see `hostLogger`. */
  readonly logger: Logger;
  /** The host's metrics, or `null` for none. */
  readonly metrics: GatewayMetrics | null;
}

/**
 * Checks the store options of a factory once, at creation, and fills in the defaults. Throws a
 * `ConfigurationError` `ERR_MS_OPTION` naming `factory` and saying how to fix the option.
 *
 * @example
 * ```ts
 * resolveStoreGuardOptions({}, 'modelSwitchAuth').storeTimeoutMs; // 2000
 * resolveStoreGuardOptions({ storeTimeoutMs: 0 }, 'modelSwitchAuth'); // throws ConfigurationError ERR_MS_OPTION
 * ```
 */
export function resolveStoreGuardOptions(options: StoreGuardOptions, factory: string): ResolvedStoreGuardOptions {
  const storeTimeoutMs = options.storeTimeoutMs ?? DEFAULT_STORE_TIMEOUT_MS;
  if (typeof storeTimeoutMs !== 'number' || !(storeTimeoutMs > 0) || !Number.isFinite(storeTimeoutMs)) {
    throw new ConfigurationError(
      'ERR_MS_OPTION',
      `${factory}: options.storeTimeoutMs must be a positive number of milliseconds, e.g. ${DEFAULT_STORE_TIMEOUT_MS}`,
    );
  }
  const { logger } = options;
  if (
    logger !== undefined &&
    (typeof logger !== 'object' || logger === null || typeof logger.warn !== 'function' || typeof logger.error !== 'function')
  ) {
    throw new ConfigurationError(
      'ERR_MS_OPTION',
      `${factory}: options.logger must be an object with warn(message) and error(message), like console or a pino logger`,
    );
  }
  const { metrics } = options;
  if (metrics !== undefined && !isGatewayMetrics(metrics)) {
    throw new ConfigurationError(
      'ERR_MS_OPTION',
      `${factory}: options.metrics must be what prometheusMetrics() answers (a GatewayMetrics)`,
    );
  }
  return { storeTimeoutMs, logger: hostLogger(logger), metrics: metrics ?? null };
}

const outageByStore = new WeakMap<object, { down: boolean }>();

/** A store call in flight: when it must have answered, and how to fail it. */
interface PendingCall {
  deadline: number;
  expire(): void;
}

/**
 * Runs store calls with a timeout and turns any failure into 503 `store_unavailable` (fail closed),
 * logging one line per outage (not per request) per store.
 *
 * The timeout costs no timer per call: calls in flight sit in a set that one unref'd interval sweeps
 * (every quarter of the timeout, at most 250 ms), and the interval stops once nothing is in flight.
 * A call therefore fails between `storeTimeoutMs` and 1.25 × `storeTimeoutMs` after it started.
 */
export class StoreGuard {
  private readonly timeoutMs: number;
  private readonly sweepEveryMs: number;
  private readonly logger: Logger;
  private readonly metrics: GatewayMetrics | null;
  private readonly outage: { down: boolean };
  private readonly pending = new Set<PendingCall>();
  private sweeper: NodeJS.Timeout | undefined;

  constructor(store: object, options: ResolvedStoreGuardOptions) {
    this.timeoutMs = options.storeTimeoutMs;
    this.sweepEveryMs = Math.max(1, Math.min(250, this.timeoutMs / 4));
    this.logger = options.logger;
    this.metrics = options.metrics;
    const known = outageByStore.get(store);
    this.outage = known ?? { down: false };
    if (!known) outageByStore.set(store, this.outage);
  }

  /**
   * Runs `call` (a store call answering a value or a promise); on error or timeout rejects with a
   * 503 `ModelSwitchError`.
   */
  run<T>(operation: string, call: () => Awaitable<T>): Promise<T> {
    let started: Awaitable<T>;
    try {
      started = call();
    } catch (error) {
      return Promise.reject(this.fail(operation, error));
    }
    return this.watch(operation, Promise.resolve(started));
  }

  /** The store call `answer` already made, with `run`'s timeout and 503 on failure. */
  watch<T>(operation: string, answer: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const entry: PendingCall = {
        deadline: performance.now() + this.timeoutMs,
        expire: () => {
          if (settled) return;
          settled = true;
          reject(this.fail(operation, new Error(`timed out after ${this.timeoutMs} ms`)));
        },
      };
      this.pending.add(entry);
      this.sweeper ??= setInterval(() => this.sweep(), this.sweepEveryMs).unref();
      answer.then(
        (value) => {
          this.pending.delete(entry);
          if (settled) return;
          settled = true;
          this.succeeded();
          resolve(value);
        },
        (error: unknown) => {
          this.pending.delete(entry);
          if (settled) return;
          settled = true;
          reject(this.fail(operation, error));
        },
      );
    });
  }

  private sweep(): void {
    if (this.pending.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
      return;
    }
    const now = performance.now();
    for (const entry of this.pending) {
      if (entry.deadline <= now) {
        this.pending.delete(entry);
        entry.expire();
      }
    }
  }

  /** Records a store call that answered: logs the recovery when the store was down. */
  succeeded(): void {
    if (this.outage.down) {
      this.outage.down = false;
      this.logger.warn('modelswitch-keys: key store recovered');
    }
  }

  /**
   * The 503 `store_unavailable` error for a failed store call (a `ModelSwitchError` passes as is),
   * logged once per outage; also for a store call that threw or was refused before `run` or `watch` saw it.
   */
  fail(operation: string, error: unknown): ModelSwitchError {
    if (error instanceof ModelSwitchError) return error;
    this.metrics?.storeFailure(operation);
    if (error instanceof TypeError) {
      // The store refused an argument (say a NaN amount): a bug to fix, not an outage. Fail closed all the same.
      this.logger.error(`modelswitch-keys: the key store refused ${operation}: ${error.message}`);
    } else if (!this.outage.down) {
      this.outage.down = true;
      const reason = errorText(error);
      this.logger.error(
        `modelswitch-keys: key store unavailable (${operation}: ${reason}); requests that need it answer 503 until it recovers`,
      );
    }
    return answerWithoutStack('store_unavailable', 'The key store is unavailable. Please retry shortly.', { cause: error });
  }
}
