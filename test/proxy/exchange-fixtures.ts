import type { AuthenticatedKey, ModelSwitchContext } from '../../src/auth/authenticator.js';
import { DEFAULT_PROXY_HOLD_MARGIN_MS } from '../../src/defaults.js';
import type { ExchangeDependencies } from '../../src/proxy/exchange.js';
import { InFlight, type ScheduledTimer, type Scheduler } from '../../src/proxy/in-flight.js';
import { resolveProxyOptions } from '../../src/proxy/options.js';
import { type PreparedRequest, prepare } from '../../src/proxy/prepare.js';
import { StoreGuard, resolveStoreGuardOptions } from '../../src/store/guard.js';
import type { CounterState, LedgerEntry, ReservationResult, SpendReservation, SpendSettlement } from '../../src/store/types.js';
import { type TestClock, recordingLogger, testClock } from '../helpers.js';
import { MOCK_PRICE } from './harness.js';

/** One timer of a {@link ManualScheduler}. */
export interface ManualTimer extends ScheduledTimer {
  readonly ms: number;
  /** Whether it would hold the process open (Node's `ref`). */
  readonly held: boolean;
}

/** A scheduler the test moves by hand: timers run only when `runNext()` says so, the clock advanced by their delay. */
export interface ManualScheduler {
  schedule: Scheduler;
  /** The timers not run yet, oldest first. */
  pending(): readonly ManualTimer[];
  /** Advances the clock by the oldest pending timer's delay and runs it; then lets promises settle. */
  runNext(): Promise<void>;
}

export function manualScheduler(clock: TestClock): ManualScheduler {
  const timers: Array<ManualTimer & { run: () => void }> = [];
  return {
    schedule(run, ms) {
      const timer = {
        ms,
        held: true,
        run,
        ref() {
          timer.held = true;
          return timer;
        },
        unref() {
          timer.held = false;
          return timer;
        },
      };
      timers.push(timer);
      return timer;
    },
    pending: () => [...timers],
    async runNext() {
      const timer = timers.shift();
      if (timer === undefined) throw new Error('no timer is pending');
      clock.advance(timer.ms);
      timer.run();
      await settled();
    },
  };
}

/** Lets every promise chain already started run to its end (store fakes answer in microtasks). */
export async function settled(): Promise<void> {
  for (let turn = 0; turn < 5; turn++) await new Promise((resolve) => setImmediate(resolve));
}

/** Whether `promise` is still pending once everything already started has run. */
export async function stillPending(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  void promise.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  await settled();
  return !done;
}

/** What the exchange asks of the store, recorded; each answer can be set per call. */
export interface FakeStore {
  reservations: SpendReservation[];
  settlements: SpendSettlement[];
  counterHits: Array<{ name: string; windowMs: number; now: number; amount: number | undefined }>;
  extensions: Array<{ holdId: string; accountId: string; expiresAt: number }>;
  /** The answer of the next `extendHold` (default `true`: the hold is live). */
  extendAnswer: () => Promise<boolean>;
  /** The answer of the next `reserveSpend` (default `{ ok: true, holdId: HOLD_ID }`). */
  reserveAnswer: () => Promise<ReservationResult>;
  /** How many of the next `settleSpend` calls reject (a store blip); the calls after them succeed. */
  settleFailures: number;
  reserveSpend(reservation: SpendReservation): Promise<ReservationResult>;
  settleSpend(settlement: SpendSettlement): Promise<LedgerEntry | null>;
  extendHold(holdId: string, accountId: string, expiresAt: number): Promise<boolean>;
  hitCounter(name: string, windowMs: number, now: number, amount?: number): Promise<CounterState>;
}

/** The hold the fake store's reservations answer. */
export const HOLD_ID = 'hold-7';

/** The request id the tests' exchanges are reserved with (the router makes one per request). */
export const REQUEST_ID = 'req_AAAAAAAAAAAAAAAAAAAAAAAA';

export function fakeStore(): FakeStore {
  const store: FakeStore = {
    reservations: [],
    settlements: [],
    counterHits: [],
    extensions: [],
    extendAnswer: async () => true,
    reserveAnswer: async () => ({ ok: true, holdId: HOLD_ID }),
    settleFailures: 0,
    reserveSpend(reservation) {
      store.reservations.push(reservation);
      return store.reserveAnswer();
    },
    async settleSpend(settlement) {
      store.settlements.push(settlement);
      if (store.settleFailures > 0) {
        store.settleFailures--;
        throw new Error('connection reset');
      }
      return null;
    },
    extendHold(holdId, accountId, expiresAt) {
      store.extensions.push({ holdId, accountId, expiresAt });
      return store.extendAnswer();
    },
    async hitCounter(name, windowMs, now, amount) {
      store.counterHits.push({ name, windowMs, now, amount });
      return { count: amount ?? 1, resetAt: now + windowMs };
    },
  };
  return store;
}

/** A proxy key with a daily limit on an account with $10, as the router hands it on after authentication. */
export function sampleContext(overrides: Partial<AuthenticatedKey> = {}, tokensPerMinute?: number): ModelSwitchContext {
  const key: AuthenticatedKey = {
    id: 7,
    handle: 'AbCdEfGhIj',
    type: 'proxy',
    accountId: 'acct_test',
    name: 'My Production Key',
    prefix: 'ms-AbCd',
    active: true,
    createdAt: 0,
    expiresAt: null,
    lastUsedAt: null,
    usage: 0,
    usagePeriod: null,
    reserved: 0,
    limit: 5,
    limitReset: 'daily',
    rateLimit: null,
    models: null,
    previousKeyExpiresAt: null,
    ...overrides,
  };
  return {
    key,
    account: { id: 'acct_test', balance: 10, reserved: 0, isFreeTier: false, createdAt: 0 },
    usage: 0,
    period: '2026-11-22',
    rateLimit: tokensPerMinute === undefined ? null : { requests: 1000, interval: '10s', tokens: tokensPerMinute },
  };
}

/** The options the HTTP tests' gateway uses: one mock upstream, the mock price, 12 prompt tokens per request. */
export const resolvedOptions = resolveProxyOptions({
  upstreams: [{ name: 'mock', target: 'http://127.0.0.1:9/v1', apiKey: 'sk-upstream-secret', models: ['mock-model', 'mock-unpriced'] }],
  pricing: { 'mock-model': MOCK_PRICE },
  allowUnpricedModels: true,
  defaultMaxTokens: 100,
  estimatePromptTokens: () => 12,
});

/** A chat completion for `model` prepared as the router would: 12 prompt + 100 output tokens at the mock price reserve $0.212. */
export function preparedChat(context: ModelSwitchContext, clock: TestClock, extra: Record<string, unknown> = {}): PreparedRequest {
  const value = { model: 'mock-model', messages: [{ role: 'user', content: 'Say hello' }], ...extra };
  const prepared = prepare({ raw: Buffer.from(JSON.stringify(value)), value }, '/chat/completions', resolvedOptions, context, clock.now);
  if (!prepared.ok) throw prepared.error;
  return prepared;
}

/** Everything an exchange depends on, each a fake the test drives: store, clock, scheduler, logger. */
export function exchangeWorld() {
  const clock = testClock();
  const scheduler = manualScheduler(clock);
  const logger = recordingLogger();
  const store = fakeStore();
  const inFlight = new InFlight(scheduler.schedule);
  const dependencies: ExchangeDependencies = {
    store,
    guard: new StoreGuard(store, resolveStoreGuardOptions({ logger }, 'exchange test')),
    now: clock.now,
    logger,
    inFlight,
    holdMarginMs: DEFAULT_PROXY_HOLD_MARGIN_MS,
    metrics: null,
  };
  return { clock, scheduler, logger, store, inFlight, dependencies };
}
