import type { ModelSwitchContext } from '../auth/authenticator.js';
import { type Logger, errorText } from '../log.js';
import type { StoreGuard } from '../store/guard.js';
import { MAX_USAGE_NAME_LENGTH, MAX_USD } from '../store/spend-rules.js';
import type { KeyStore, LedgerEntry, ReservationResult, SpendReservation, SpendSettlement, UsageDetails } from '../store/types.js';
import type { InFlight } from './in-flight.js';
import { countTokens, refusal } from './metering.js';
import type { PreparedRequest } from './prepare.js';
import { type TokenUsage, costOf } from './pricing.js';
import type { GatewayMetrics } from '../metrics/gateway-metrics.js';
import { storableText } from './request-id.js';

/** How an exchange ended, for settlement and its log line. */
export type Ending = 'completed' | 'client_closed' | 'upstream_broke' | 'failed';

const ENDING_TEXT: Record<Exclude<Ending, 'completed'>, string> = {
  client_closed: 'client disconnected',
  upstream_broke: 'upstream broke off',
  failed: 'upstream failed',
};

/** Pauses between settlement attempts when the store fails (ms): about 15 s in all. */
export const SETTLE_RETRIES: readonly number[] = [100, 400, 1500, 4000, 9000];

/** What one `proxyRouter` gives each of its exchanges: the store and how to reach it, the clock, the logger, what `drain()` waits for. */
export interface ExchangeDependencies {
  readonly store: Pick<KeyStore, 'reserveSpend' | 'settleSpend' | 'extendHold' | 'hitCounter'>;
  /** Runs store calls with the store timeout (see `StoreGuard`). */
  readonly guard: Pick<StoreGuard, 'run'>;
  readonly now: () => number;
  /** A logger safe to call (see `hostLogger`). */
  readonly logger: Logger;
  readonly inFlight: InFlight;
  /**
   * A hold's deadline is its reservation's (or last renewal's) time + the upstream's `timeoutMs` +
   * this (`holdMarginMs`); an answer still streaming renews it once half of this has passed.
   */
  readonly holdMarginMs: number;
  /** The host's metrics (upstream latency, metered tokens and USD, reservations held), or `null`. */
  readonly metrics: GatewayMetrics | null;
  /**
   * Told of each ledger entry a settlement wrote (or found, for a retry whose first attempt landed);
   * the router reports `account.balance_low` from it. What it throws is ignored.
   */
  readonly onSettled?: ((exchange: Exchange, entry: LedgerEntry) => void) | undefined;
}

/** What an exchange needs of the request sent upstream: a way to stop it when the client leaves. */
export interface UpstreamRequest {
  destroy(): void;
}

/**
 * Runs `attempt` again after each pause of SETTLE_RETRIES until it succeeds; `giveUp` after the
 * last. Resolves when it succeeded or gave up; its timers are `inFlight`'s (see `ProxyRouter.drain`).
 */
function retryInBackground(attempt: () => Promise<unknown>, giveUp: () => void, inFlight: InFlight): Promise<void> {
  return new Promise((resolve) => {
    const wait = (round: number) => {
      const pause = SETTLE_RETRIES[round];
      if (pause === undefined) {
        giveUp();
        resolve();
        return;
      }
      inFlight.later(() => {
        attempt().then(
          () => resolve(),
          () => wait(round + 1),
        );
      }, pause);
    };
    wait(0);
  });
}

/**
 * One proxied request from its reservation to its settlement: the money side of the proxy, apart
 * from HTTP. {@link Exchange.reserve} holds the request's maximum cost; the upstream wiring then
 * reports what happened (`answered`, `forwarded`, `reportUsage`, `timeOut`) and ends it with
 * {@link Exchange.settle}, which releases the reservation and charges the cost in one store call
 * (retried in the background when the store fails). Counted in the router's `InFlight` from the
 * start of its reservation until {@link Exchange.close} (its response closed).
 *
 * @example
 * ```ts
 * const exchange = await Exchange.reserve(dependencies, context, prepared, newRequestId()); // throws 402/403/503 when refused
 * exchange.answered(true);
 * exchange.forwarded(body.length);
 * exchange.reportUsage({ promptTokens: 12, completionTokens: 8, cachedPromptTokens: 0 });
 * exchange.reportAnswerId('chatcmpl-123');
 * await exchange.settle('completed');
 * exchange.close();
 * ```
 */
export class Exchange {
  /** The upstream answered 2xx: its answer is charged. */
  private metered = false;
  /** Bytes of a 2xx answer written to the client; once > 0 an early end is charged (see `chargeFor`). */
  private forwardedBytes = 0;
  /** The last usage the upstream reported (the final SSE chunk, or the JSON answer). */
  private usage: TokenUsage | undefined;
  /** The upstream's id of its answer, if it gave one. */
  private answerId: string | undefined;
  private upstreamRequest: UpstreamRequest | undefined;
  private timedOutFlag = false;
  private settlement: Promise<void> | undefined;
  /** Still counted in `InFlight`: its response has not closed yet. */
  private open = true;
  /** A renewal of the hold is under way. */
  private renewing = false;
  /** When the request went upstream (`performance.now()`), for the upstream latency. */
  private sentAt: number | undefined;
  /** The upstream's latency was reported (once per exchange). */
  private upstreamReported = false;
  /** The hold was found gone when renewing it (another instance released it as expired): renewed no more. */
  private holdLost = false;

  private constructor(
    private readonly dependencies: ExchangeDependencies,
    readonly context: ModelSwitchContext,
    readonly request: PreparedRequest,
    /** The hold the reservation made, released by the settlement. */
    readonly holdId: string,
    /** The `X-Request-Id` the gateway answers with: the ledger entry's `requestId`. */
    readonly requestId: string,
    /** When the hold's deadline was last set (the reservation, then each renewal), by the router's clock. */
    private heldSince: number,
  ) {}

  /**
   * Reserves the request's maximum cost against the key's limit and the account's balance, and
   * answers the exchange that must now be settled and closed. Throws the contract's refusal
   * (403 `spend_limit_reached`, 402 `insufficient_balance`, 401 for a key deleted meanwhile) or
   * 503 `store_unavailable`; then nothing is held and nothing is counted.
   */
  static async reserve(
    dependencies: ExchangeDependencies,
    context: ModelSwitchContext,
    request: PreparedRequest,
    requestId: string,
  ): Promise<Exchange> {
    const { inFlight } = dependencies;
    // Counted from here until the request is refused, or its response closes.
    inFlight.enter();
    let holdId: string;
    let now: number;
    try {
      now = dependencies.now();
      const reservation: SpendReservation = {
        keyId: context.key.id,
        accountId: context.account.id,
        amount: request.reserved,
        period: request.period,
        now,
        expiresAt: now + request.upstream.timeoutMs + dependencies.holdMarginMs,
      };
      const result = await reserveThroughGuard(dependencies, reservation);
      if (!result.ok) throw refusal(result, context, request.reserved);
      holdId = result.holdId;
    } catch (error) {
      inFlight.leave();
      throw error;
    }
    dependencies.metrics?.reservationHeld(1);
    return new Exchange(dependencies, context, request, holdId, requestId, now);
  }

  /** The upstream timed out (see `timeOut`): the failure answers 504 rather than 502. */
  get timedOut(): boolean {
    return this.timedOutFlag;
  }

  /** The request sent upstream, to stop when the client leaves. */
  attach(upstreamRequest: UpstreamRequest): void {
    this.upstreamRequest = upstreamRequest;
    this.sentAt ??= performance.now();
  }

  /** The upstream was silent past its timeout. */
  timeOut(): void {
    this.timedOutFlag = true;
  }

  /** The upstream's answer began with `status`; `success` (2xx) makes it chargeable. */
  answered(success: boolean, status?: number): void {
    this.metered = success;
    this.reportUpstream(status === undefined ? (success ? '2xx' : 'error') : `${Math.floor(status / 100)}xx`);
  }

  /** The upstream latency, once: to its answer's headers, or to the failure that ended the exchange without one. */
  private reportUpstream(outcome: string): void {
    const { metrics } = this.dependencies;
    if (metrics === null || this.upstreamReported || this.sentAt === undefined) return;
    this.upstreamReported = true;
    metrics.upstream(this.request.upstream.name, this.request.model, outcome, (performance.now() - this.sentAt) / 1000);
  }

  /** `bytes` of the upstream's answer reached the client: the upstream is alive, so its hold is renewed when due. */
  forwarded(bytes: number): void {
    if (this.metered) this.forwardedBytes += bytes;
    this.keepHeld();
  }

  /**
   * Renews the hold's deadline to now + the upstream's `timeoutMs` + the margin once half the
   * margin has passed since it was last set, so a stream that runs longer than its first deadline
   * is never released under it. Why that is enough: the upstream is never silent longer than its
   * `timeoutMs` (the exchange then settles), and data arriving renews the hold at most half a
   * margin late, so the settlement always starts before the deadline. One store call at a time; a
   * failed one is tried again with the next data (the guard logs the outage).
   */
  private keepHeld(): void {
    if (this.renewing || this.holdLost || this.settlement !== undefined) return;
    const { store, guard, now, logger, inFlight, holdMarginMs } = this.dependencies;
    let at: number;
    try {
      at = now();
    } catch {
      // The host's clock threw: the settlement logs it; a renewal is not worth failing the stream for.
      return;
    }
    if (!(at - this.heldSince >= holdMarginMs / 2)) return;
    this.renewing = true;
    const { key, account } = this.context;
    const expiresAt = at + this.request.upstream.timeoutMs + holdMarginMs;
    const renewal = guard
      .run('extendHold', () => store.extendHold(this.holdId, account.id, expiresAt))
      .then(
        (live) => {
          if (live) {
            this.heldSince = at;
          } else if (this.settlement === undefined) {
            this.holdLost = true;
            logger.warn(
              `modelswitch-keys: the hold of a request of key ${key.id} was released as expired while its answer still ran (gateway clocks apart, or holdMarginMs too short); it is still charged when it ends`,
            );
          }
        },
        () => {
          // Logged by the guard; the next data tries again.
        },
      );
    inFlight.track(
      renewal.finally(() => {
        this.renewing = false;
      }),
    );
  }

  /** The upstream reported its token usage (the last report counts). */
  reportUsage(usage: TokenUsage | undefined): void {
    if (usage !== undefined) this.usage = usage;
  }

  /** The upstream named its answer (`chatcmpl-…`): kept on the ledger entry, so `GET /v1/generation` finds it by that id too. */
  reportAnswerId(id: string | undefined): void {
    if (id !== undefined) this.answerId = id;
  }

  /** The client went away before its answer finished: stop the upstream's work and settle what it had. */
  clientClosed(): Promise<void> {
    this.upstreamRequest?.destroy();
    return this.settle('client_closed');
  }

  /** Its response closed: it no longer counts in `InFlight` (once, whichever path gets here first). */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.dependencies.inFlight.leave();
  }

  /**
   * Releases the reservation and charges what the exchange cost (see `chargeFor`), with the key's
   * token count beside it; runs once per exchange, whatever ends it first. Never rejects: a store
   * failure is retried in the background (the answer does not wait), a clock that throws is logged
   * for a hand reconciliation.
   */
  settle(ending: Ending): Promise<void> {
    if (this.settlement === undefined) {
      this.settlement = this.runSettlement(ending);
      this.dependencies.inFlight.track(this.settlement);
    }
    return this.settlement;
  }

  private async runSettlement(ending: Ending): Promise<void> {
    const { store, guard, now, logger, inFlight, metrics } = this.dependencies;
    const { key, account } = this.context;
    this.reportUpstream(this.timedOutFlag ? 'timeout' : 'error');
    try {
      const cost = this.chargeFor(ending);
      const usage = this.usage;
      const at = now();
      const settlement: SpendSettlement = {
        keyId: key.id,
        accountId: account.id,
        holdId: this.holdId,
        cost,
        period: this.request.period,
        now: at,
      };
      // An answer the upstream gave (or anything charged) is a request of the ledger, findable by its
      // ids; a refusal or failure that cost nothing leaves no entry. The details also make a retried
      // settlement idempotent: the store writes one entry per request id.
      if (this.metered || cost > 0) settlement.usage = this.usageDetails();
      // Token counting runs beside the settlement and fails on its own (the guard logs it), so its
      // failure never reads as a lost settlement.
      const counting = usage === undefined ? undefined : countTokens(store, guard, this.context, usage, at).catch(() => {});
      let released = false;
      /** The hold is settled (or given up on): it leaves the metrics' reservations held, once. */
      const release = () => {
        if (released) return;
        released = true;
        metrics?.reservationHeld(-1);
      };
      const attempt = async () => {
        const entry = await guard.run('settleSpend', () => store.settleSpend(settlement));
        release();
        const details = settlement.usage;
        if (metrics !== null && details !== undefined) metrics.metered(details.model, details.promptTokens, details.completionTokens, cost);
        if (entry) this.reportSettled(entry);
        return entry;
      };
      try {
        await attempt();
      } catch {
        // A store blip must not lose the charge nor hold the reservation for good: retry in the
        // background with backoff, then ask for a hand reconciliation.
        inFlight.track(
          retryInBackground(
            attempt,
            () => {
              logger.error(
                `modelswitch-keys: could not settle key ${key.id} (reserved ${this.request.reserved}, cost ${cost}); reconcile by hand`,
              );
              release();
            },
            inFlight,
          ),
        );
      }
      await counting;
    } catch (error) {
      // Only the host's now() can throw here (store failures are retried above, the logger is safe):
      // nothing was charged and the reservation stays held, but the answer still ends.
      logger.error(
        `modelswitch-keys: could not settle key ${key.id} (reserved ${this.request.reserved}): ${errorText(error)}; reconcile by hand`,
      );
    }
  }

  /** The ledger entry's details: the model, the tokens the upstream reported (0 when it reported none), both ids. */
  private usageDetails(): UsageDetails {
    return {
      model: storableText(this.request.model, MAX_USAGE_NAME_LENGTH),
      promptTokens: tokenCount(this.usage?.promptTokens),
      completionTokens: tokenCount(this.usage?.completionTokens),
      requestId: this.requestId,
      upstreamId: this.answerId ?? null,
    };
  }

  private reportSettled(entry: LedgerEntry): void {
    try {
      this.dependencies.onSettled?.(this, entry);
    } catch {
      // A report is never worth a lost or repeated settlement.
    }
  }

  /**
   * What the exchange costs. Reported usage wins. Without it, a 2xx answer is charged its
   * reservation when it completed, or when it ended early (client gone, upstream broken) after
   * some of it reached the client: otherwise reading a stream up to `finish_reason` and hanging
   * up before the usage chunk would get the completion for free. Nothing reached the client: free.
   */
  private chargeFor(ending: Ending): number {
    const { price, reserved, upstream, model } = this.request;
    const { logger } = this.dependencies;
    if (price === undefined) return 0;
    if (this.usage !== undefined) {
      const cost = costOf(price, this.usage);
      if (Number.isFinite(cost) && cost <= MAX_USD) return cost;
      logger.warn(
        `modelswitch-keys: upstream ${upstream.name} reported usage for model ${model} that prices to ${cost} USD; charged the reserved maximum`,
      );
      return reserved;
    }
    if (!this.metered) return 0;
    if (ending === 'completed') {
      // A successful answer without usage is charged its reservation: nothing is served unmetered.
      logger.warn(`modelswitch-keys: upstream ${upstream.name} reported no usage for model ${model}; charged the reserved maximum`);
      return reserved;
    }
    if (this.forwardedBytes === 0) return 0;
    logger.warn(
      `modelswitch-keys: the answer of upstream ${upstream.name} for model ${model} ended early (${ENDING_TEXT[ending]}) before it reported usage; charged the reserved maximum`,
    );
    return reserved;
  }
}

/** A reported token count as a store keeps it: a safe integer ≥ 0 (an upstream may report anything). */
function tokenCount(value: number | undefined): number {
  if (value === undefined || !(value >= 0)) return 0;
  return Math.min(Math.round(value), Number.MAX_SAFE_INTEGER);
}

/**
 * Reserves through the guard while keeping the store's own promise: when the guard gives up (a
 * timeout) the call may still take effect later, and a reservation nobody settles would hold the
 * key's limit and the account's balance forever. So once it does, it is released in the background.
 */
async function reserveThroughGuard(dependencies: ExchangeDependencies, reservation: SpendReservation): Promise<ReservationResult> {
  const { store, guard, inFlight } = dependencies;
  const pending = new Promise<ReservationResult>((resolve) => resolve(store.reserveSpend(reservation)));
  try {
    return await guard.run('reserveSpend', () => pending);
  } catch (error) {
    // Tracked at once, so drain() waits for the store's late answer too.
    inFlight.track(
      pending.then(
        (result) => (result?.ok === true ? releaseLateReservation(dependencies, reservation, result.holdId) : undefined),
        () => {
          // The store failed the call itself: nothing was reserved.
        },
      ),
    );
    throw error;
  }
}

async function releaseLateReservation(dependencies: ExchangeDependencies, reservation: SpendReservation, holdId: string): Promise<void> {
  const { store, guard, now, logger } = dependencies;
  const { keyId, accountId, amount, period } = reservation;
  try {
    await guard.run('settleSpend', () => store.settleSpend({ keyId, accountId, holdId, cost: 0, period, now: now() }));
    logger.warn(
      `modelswitch-keys: released a reservation of $${amount} for key ${keyId} that the store applied after the request was refused`,
    );
  } catch {
    logger.error(`modelswitch-keys: could not release a late reservation of $${amount} for key ${keyId}; reconcile by hand`);
  }
}
