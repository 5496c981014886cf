import type { ServerResponse } from 'node:http';
import { redactKeys } from '../errors/redact.js';
import { type Logger, errorText } from '../log.js';

/** What happened: the `type` of a {@link ModelSwitchEvent}. */
export type ModelSwitchEventType =
  | 'key.created'
  | 'key.updated'
  | 'key.rotated'
  | 'key.deleted'
  | 'key.limit_reached'
  | 'account.balance_low'
  | 'account.credited';

/**
 * Who did it, never a key value (only ids):
 *
 * - `billing key 12`: a management call (`keysRouter`) made with that billing key;
 * - `proxy key 7`: an inference request (`proxyRouter`) made with that proxy key;
 * - `dashboard session`: a change made in the dashboard; the event's `session` says who signed in
 *   (`billing key 12`, or `user alice@example.com` for the host's own login);
 * - `cli`: the `modelswitch-keys` command line (`runCli`);
 * - `host`: the host's own code (`creditBalance`, `adjustBalance`).
 */
export type ModelSwitchActor = `billing key ${number}` | `proxy key ${number}` | 'dashboard session' | 'cli' | 'host';

/** What every event carries. Times are epoch ms; money is USD. */
interface EventBase {
  /** The account the key or the balance belongs to. */
  accountId: string;
  /** The key concerned (its id, never its value), or `null` when none is (a credit). */
  keyId: number | null;
  actor: ModelSwitchActor;
  /**
   * Only when `actor` is `dashboard session`: who signed in to it. `billing key 12` for a session
   * signed in with that billing key; `user alice@example.com` for the host's own login
   * (`identify`, `oidcIdentity`): its `subject` as the host gave it (the operator's own audit trail
   * names its own users; key-like text in it is redacted).
   */
  session?: `billing key ${number}` | `user ${string}`;
  /** When it happened (epoch ms), by the factory's clock. */
  time: number;
}

/**
 * One thing that happened to a key or an account, for the host's audit trail and alerts (see
 * `onEvent`). Narrow it with `switch (event.type)`. It never contains a key value.
 *
 * @example
 * ```ts
 * const onEvent: EventHandler = (event) => {
 *   if (event.type === 'account.balance_low') alerts.send(`${event.accountId} has $${event.balance} left`);
 *   audit.write(event); // { type, accountId, keyId, actor, time, … }
 * };
 * ```
 */
export type ModelSwitchEvent =
  | (EventBase & {
      /**
       * A key was created (`POST /api/keys`, the dashboard, `modelswitch-keys billing-key create`) or
       * deleted (`DELETE /api/keys/:id`, the dashboard, `modelswitch-keys keys delete`). The dashboard
       * and the CLI report billing keys (`mk-`) too.
       */
      type: 'key.created' | 'key.deleted';
      keyId: number;
    })
  | (EventBase & {
      /** A key was changed (`PUT`/`PATCH /api/keys/:id`, the dashboard, `modelswitch-keys keys deactivate`). */
      type: 'key.updated';
      keyId: number;
      /** The fields the request set, as the API names them (`name`, `active`, `expires_at`, `limit`, `limit_reset`, `rate_limit`, `models`). */
      changed: string[];
    })
  | (EventBase & {
      /** A key got a new secret (`POST /api/keys/:id/rotate`, the dashboard's Rotate). */
      type: 'key.rotated';
      keyId: number;
      /** Until when the previous secret works (epoch ms), or `null` when it stopped at once. */
      previousKeyExpiresAt: number | null;
    })
  | (EventBase & {
      /** A proxied request was refused with 403 `spend_limit_reached`: the key's limit is (or would be) reached. Once per refused request. */
      type: 'key.limit_reached';
      keyId: number;
      /** The key's USD limit per period. */
      limit: number;
      /** The key's USD usage this period when the request was admitted. */
      usage: number;
    })
  | (EventBase & {
      /**
       * The account's balance went from at least `threshold` to below it: once per crossing, by
       * the settlement of a proxied request (`keyId` the key that spent) or a negative
       * `adjustBalance` (`keyId` null).
       */
      type: 'account.balance_low';
      /** The balance after the change (USD). */
      balance: number;
      /** The `balanceLowThreshold` it went below. */
      threshold: number;
    })
  | (EventBase & {
      /** `creditBalance` or `modelswitch-keys account credit` added to the balance (not for a reference already credited). */
      type: 'account.credited';
      keyId: null;
      /** USD credited. */
      amount: number;
      /** The balance after the credit (USD). */
      balance: number;
      /** The credit's idempotency reference. */
      reference: string;
    });

/** `Omit` applied to each member of a union on its own, so the members stay apart. */
type OmitEach<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

/**
 * A change made to a key (created, updated, rotated, deleted) without the fields every event has:
 * what the management API and the dashboard say about it before they add who and when.
 */
export type KeyChange = OmitEach<
  Extract<ModelSwitchEvent, { type: 'key.created' | 'key.deleted' | 'key.updated' | 'key.rotated' }>,
  keyof EventBase
>;

/**
 * The host's `onEvent` handler. Called after the answer of the request that caused the event was
 * sent (never before, never in the way of a request), on a later turn of the event loop; what it
 * throws, or a promise it returns rejecting, is logged once through the host's logger and changes
 * nothing; what it returns is otherwise ignored. It is not awaited: a slow asynchronous handler
 * delays no request (a handler that blocks the event loop still blocks it). Delivery is in-process
 * and best effort: a process that dies before the turn comes loses the event (queue it durably
 * if it must never be lost).
 *
 * @example
 * ```ts
 * app.use('/api', keysRouter(store, { onEvent: (event) => auditLog.info(event) }));
 * ```
 */
export type EventHandler = (event: ModelSwitchEvent) => unknown;

/** The actor of a management call made with this billing key. */
export function billingKeyActor(keyId: number): ModelSwitchActor {
  return `billing key ${keyId}`;
}

/**
 * The actor of a dashboard change and its `session`: the billing key the session signed in with,
 * or (`keyId` null) the subject the host's `identify` gave, with any key-like text redacted.
 */
export function dashboardActor(session: { keyId: number | null; subject: string }): Pick<EventBase, 'actor' | 'session'> {
  return {
    actor: 'dashboard session',
    session: session.keyId === null ? `user ${redactKeys(session.subject)}` : `billing key ${session.keyId}`,
  };
}

/** The actor of an inference request made with this proxy key. */
export function proxyKeyActor(keyId: number): ModelSwitchActor {
  return `proxy key ${keyId}`;
}

/** The most a `balanceLowThreshold` may be: the stores' bound on any amount (`MAX_USD`, 1e12 USD). */
const MAX_THRESHOLD_USD = 1e12;

/** Whether `value` can be a `balanceLowThreshold`: a number of USD from 0 to 1e12. */
export function isBalanceLowThreshold(value: unknown): value is number {
  return typeof value === 'number' && value >= 0 && value <= MAX_THRESHOLD_USD;
}

/**
 * Whether a balance change from `before` to `after` takes the balance below `threshold`: an
 * `account.balance_low` is due once per such crossing, however many changes follow below it.
 */
export function crossesBelow(before: number, after: number, threshold: number): boolean {
  return before >= threshold && after < threshold;
}

/**
 * Delivers one factory's events to the host's `onEvent`: after the answer, on a later turn of the
 * event loop, so a handler can neither break nor delay a request; its failures are logged once
 * each (with any key-like text redacted) and go no further.
 */
export class EventDispatcher {
  constructor(
    private readonly handler: EventHandler | undefined,
    private readonly logger: Logger,
  ) {}

  /** Whether a handler listens: events need not be built otherwise. */
  get enabled(): boolean {
    return this.handler !== undefined;
  }

  /**
   * Delivers `event` once `res` has closed (its answer sent, or the client gone): at once (on the
   * next turn) when it has already, or when there is no response (a call from the host's code).
   */
  afterResponse(res: ServerResponse | undefined, event: ModelSwitchEvent): void {
    if (this.handler === undefined) return;
    if (res === undefined || res.closed) {
      this.soon(event);
      return;
    }
    res.once('close', () => this.soon(event));
  }

  private soon(event: ModelSwitchEvent): void {
    setImmediate(() => this.deliver(event));
  }

  private deliver(event: ModelSwitchEvent): void {
    const handler = this.handler;
    if (handler === undefined) return;
    try {
      const result = handler(event);
      if (typeof (result as PromiseLike<void> | undefined)?.then === 'function') {
        Promise.resolve(result).catch((error: unknown) => this.failed(event, error));
      }
    } catch (error) {
      this.failed(event, error);
    }
  }

  private failed(event: ModelSwitchEvent, error: unknown): void {
    this.logger.error(
      redactKeys(
        `modelswitch-keys: the onEvent handler failed on ${event.type} (${event.session === undefined ? event.actor : `${event.actor}: ${event.session}`}): ${errorText(error)}`,
      ),
    );
  }
}
