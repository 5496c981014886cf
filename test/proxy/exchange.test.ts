import { describe, expect, it } from 'vitest';
import { ModelSwitchError } from '../../src/errors/errors.js';
import { DEFAULT_PROXY_HOLD_MARGIN_MS, DEFAULT_PROXY_TIMEOUT_MS } from '../../src/defaults.js';
import { Exchange, SETTLE_RETRIES } from '../../src/proxy/exchange.js';
import type { SpendSettlement, UsageDetails } from '../../src/store/types.js';
import { HOLD_ID, REQUEST_ID, exchangeWorld, preparedChat, sampleContext, settled, stillPending } from './exchange-fixtures.js';

const START = Date.parse('2026-11-22T12:00:00Z');
/** 12 prompt + 100 output tokens at the mock price. */
const RESERVED = 0.212;
/** 12 prompt + 8 completion tokens at the mock price. */
const COST = 0.028;
const USAGE = { promptTokens: 12, completionTokens: 8, cachedPromptTokens: 0 };

/** The ledger details of an answered request of the sample: its model and request id, the tokens the upstream reported (0 when none). */
function details(promptTokens = 12, completionTokens = 8, overrides: Partial<UsageDetails> = {}): UsageDetails {
  return { model: 'mock-model', promptTokens, completionTokens, requestId: REQUEST_ID, upstreamId: null, ...overrides };
}

/**
 * The settlement the store must receive for the sample key: its hold released, `cost` charged, at
 * `now`, with the ledger entry's `usage` details when the upstream answered (none when nothing was).
 */
function settlement(cost: number, now: number, usage?: UsageDetails, holdId = HOLD_ID): SpendSettlement {
  return { keyId: 7, accountId: 'acct_test', holdId, cost, period: '2026-11-22', now, ...(usage === undefined ? {} : { usage }) };
}

/** A reserved exchange of the sample key, its clock moved 1.5 s on (the time the upstream took). */
async function reservedExchange(extra: Record<string, unknown> = {}, tokensPerMinute?: number) {
  const world = exchangeWorld();
  const context = sampleContext({}, tokensPerMinute);
  const exchange = await Exchange.reserve(world.dependencies, context, preparedChat(context, world.clock, extra), REQUEST_ID);
  world.clock.advance(1500);
  return { ...world, exchange };
}

describe('Exchange.reserve', () => {
  it('reserves the prepared maximum cost for the key and account in the key period, held until the upstream timeout and a margin', async () => {
    const { store, exchange } = await reservedExchange();
    expect(store.reservations).toEqual([
      {
        keyId: 7,
        accountId: 'acct_test',
        amount: RESERVED,
        period: '2026-11-22',
        now: START,
        expiresAt: START + DEFAULT_PROXY_TIMEOUT_MS + DEFAULT_PROXY_HOLD_MARGIN_MS,
      },
    ]);
    expect(exchange.request.reserved).toBe(RESERVED);
    expect(exchange.holdId).toBe(HOLD_ID);
    expect(store.settlements).toEqual([]);
  });

  it('throws the contract refusal when the store refuses, holding nothing and counting nothing in flight', async () => {
    const world = exchangeWorld();
    world.store.reserveAnswer = async () => ({ ok: false, reason: 'insufficient_balance' });
    const context = sampleContext();
    const refused = Exchange.reserve(world.dependencies, context, preparedChat(context, world.clock), REQUEST_ID);
    await expect(refused).rejects.toThrow(ModelSwitchError);
    const error = (await refused.catch((e: unknown) => e)) as ModelSwitchError;
    expect({ status: error.status, body: error.toJSON(), headers: error.headers }).toEqual({
      status: 402,
      body: {
        error: {
          message:
            "This request could cost up to $0.212, more than the account's available balance of $10. Lower max_tokens or add credits.",
          type: 'billing_error',
          code: 'insufficient_balance',
        },
      },
      headers: { 'x-should-retry': 'false' },
    });
    expect(await stillPending(world.inFlight.drain())).toBe(false);
    expect(world.store.settlements).toEqual([]);
  });

  it('answers 503 when the store fails the reservation, and releases nothing it did not hold', async () => {
    const world = exchangeWorld();
    world.store.reserveAnswer = async () => {
      throw new Error('connection reset');
    };
    const context = sampleContext();
    const error = (await Exchange.reserve(world.dependencies, context, preparedChat(context, world.clock), REQUEST_ID).catch(
      (e: unknown) => e,
    )) as ModelSwitchError;
    expect({ status: error.status, code: error.code }).toEqual({ status: 503, code: 'store_unavailable' });
    await world.inFlight.drain();
    expect(world.store.settlements).toEqual([]);
  });

  describe('when the store applies a reservation after the guard gave up on it', () => {
    /** A world whose guard times reserveSpend out at once, while the store's own call stays pending until `answer` is called. */
    function lateWorld() {
      const world = exchangeWorld();
      let answer: (result: { ok: true; holdId: string } | { ok: false; reason: 'spend_limit_reached' } | Error) => void = () => {};
      world.store.reserveAnswer = () =>
        new Promise((resolve, reject) => {
          answer = (result) => (result instanceof Error ? reject(result) : resolve(result));
        });
      const guard = world.dependencies.guard;
      const timeout = new ModelSwitchError('store_unavailable', 'The key store is unavailable. Please retry shortly.');
      const dependencies = {
        ...world.dependencies,
        guard: {
          run<T>(operation: string, call: () => Promise<T>): Promise<T> {
            if (operation !== 'reserveSpend') return guard.run(operation, call);
            void call();
            return Promise.reject(timeout);
          },
        },
      };
      const context = sampleContext();
      const reserving = Exchange.reserve(dependencies, context, preparedChat(context, world.clock), REQUEST_ID);
      return { ...world, reserving, answer: (result: Parameters<typeof answer>[0]) => answer(result) };
    }

    it('answers 503 at once, then releases the late reservation exactly once (nothing charged) and drain() waits for it', async () => {
      const world = lateWorld();
      await expect(world.reserving).rejects.toMatchObject({ status: 503, code: 'store_unavailable' });
      const draining = world.inFlight.drain();
      expect(await stillPending(draining)).toBe(true);
      world.clock.advance(2000);
      world.answer({ ok: true, holdId: 'late-hold' });
      await draining;
      await settled();
      expect(world.store.settlements).toEqual([settlement(0, START + 2000, undefined, 'late-hold')]);
      expect(world.logger.lines).toEqual([
        'warn: modelswitch-keys: released a reservation of $0.212 for key 7 that the store applied after the request was refused',
      ]);
    });

    it('releases nothing when the late answer is a refusal or a failure', async () => {
      for (const late of [{ ok: false, reason: 'spend_limit_reached' } as const, new Error('connection reset')]) {
        const world = lateWorld();
        await expect(world.reserving).rejects.toMatchObject({ status: 503 });
        world.answer(late);
        await world.inFlight.drain();
        expect(world.store.settlements).toEqual([]);
        expect(world.logger.lines).toEqual([]);
      }
    });

    it('logs a hand reconciliation when the release fails too', async () => {
      const world = lateWorld();
      world.store.settleFailures = 1;
      await expect(world.reserving).rejects.toMatchObject({ status: 503 });
      world.answer({ ok: true, holdId: 'late-hold' });
      await world.inFlight.drain();
      expect(world.store.settlements).toHaveLength(1);
      expect(world.logger.lines).toEqual([
        'error: modelswitch-keys: key store unavailable (settleSpend: connection reset); requests that need it answer 503 until it recovers',
        'error: modelswitch-keys: could not release a late reservation of $0.212 for key 7; reconcile by hand',
      ]);
    });
  });
});

describe('Exchange.settle on every ending', () => {
  it('2xx JSON with usage: charges the reported usage at the settlement time', async () => {
    const { store, logger, exchange } = await reservedExchange();
    exchange.answered(true);
    exchange.forwarded(300);
    exchange.reportUsage(USAGE);
    await exchange.settle('completed');
    expect(store.settlements).toEqual([settlement(COST, START + 1500, details())]);
    expect(logger.lines).toEqual([]);
  });

  it('2xx JSON without usage: charges the reservation and says so', async () => {
    const { store, logger, exchange } = await reservedExchange();
    exchange.answered(true);
    exchange.forwarded(300);
    exchange.reportUsage(undefined);
    await exchange.settle('completed');
    expect(store.settlements).toEqual([settlement(RESERVED, START + 1500, details(0, 0))]);
    expect(logger.lines).toEqual([
      'warn: modelswitch-keys: upstream mock reported no usage for model mock-model; charged the reserved maximum',
    ]);
  });

  it('SSE to the end: charges the usage of the final chunk, whatever came before it', async () => {
    const { store, logger, exchange } = await reservedExchange({ stream: true });
    expect(exchange.request.stripUsageChunk).toBe(true);
    exchange.answered(true);
    for (const bytes of [120, 118, 95]) exchange.forwarded(bytes);
    exchange.reportUsage({ promptTokens: 12, completionTokens: 3, cachedPromptTokens: 0 });
    exchange.reportUsage(USAGE);
    exchange.reportUsage(undefined);
    await exchange.settle('completed');
    expect(store.settlements).toEqual([settlement(COST, START + 1500, details())]);
    expect(logger.lines).toEqual([]);
  });

  it('client abort mid-stream after some bytes, before the usage: stops the upstream and charges the reservation', async () => {
    const { store, logger, exchange } = await reservedExchange({ stream: true });
    let upstreamStopped = 0;
    exchange.attach({ destroy: () => upstreamStopped++ });
    exchange.answered(true);
    exchange.forwarded(120);
    await exchange.clientClosed();
    expect({ upstreamStopped, settlements: store.settlements }).toEqual({
      upstreamStopped: 1,
      settlements: [settlement(RESERVED, START + 1500, details(0, 0))],
    });
    expect(logger.lines).toEqual([
      'warn: modelswitch-keys: the answer of upstream mock for model mock-model ended early (client disconnected) before it reported usage; charged the reserved maximum',
    ]);
  });

  it('client abort mid-stream after the usage arrived: charges the usage', async () => {
    const { store, exchange } = await reservedExchange({ stream: true });
    exchange.answered(true);
    exchange.forwarded(120);
    exchange.reportUsage(USAGE);
    await exchange.clientClosed();
    expect(store.settlements).toEqual([settlement(COST, START + 1500, details())]);
  });

  it('client abort before any byte reached it: charges nothing and releases the reservation', async () => {
    const { store, logger, exchange } = await reservedExchange({ stream: true });
    let upstreamStopped = 0;
    exchange.attach({ destroy: () => upstreamStopped++ });
    exchange.answered(true);
    await exchange.clientClosed();
    expect({ upstreamStopped, settlements: store.settlements, lines: logger.lines }).toEqual({
      upstreamStopped: 1,
      // Nothing reached the client, so nothing is charged; the answer it began still has its entry.
      settlements: [settlement(0, START + 1500, details(0, 0))],
      lines: [],
    });
  });

  it.each([
    ['upstream error', false],
    ['timeout', true],
  ])('%s before the answer: charges nothing (timedOut, for 504 rather than 502: %s)', async (_ending, timedOut) => {
    const { store, exchange } = await reservedExchange();
    if (timedOut) exchange.timeOut();
    await exchange.settle('failed');
    expect({ timedOut: exchange.timedOut, settlements: store.settlements }).toEqual({
      timedOut,
      settlements: [settlement(0, START + 1500)],
    });
  });

  it('upstream error answer (a 4xx or 5xx passed through): charges nothing, even after its bytes were forwarded', async () => {
    const { store, exchange } = await reservedExchange();
    exchange.answered(false);
    exchange.forwarded(90);
    await exchange.settle('completed');
    expect(store.settlements).toEqual([settlement(0, START + 1500)]);
  });

  it('upstream breaking off mid-stream: charges the reservation once bytes were forwarded', async () => {
    const { store, logger, exchange } = await reservedExchange({ stream: true });
    exchange.answered(true);
    exchange.forwarded(120);
    await exchange.settle('upstream_broke');
    expect(store.settlements).toEqual([settlement(RESERVED, START + 1500, details(0, 0))]);
    expect(logger.lines).toEqual([
      'warn: modelswitch-keys: the answer of upstream mock for model mock-model ended early (upstream broke off) before it reported usage; charged the reserved maximum',
    ]);
  });

  it('timeout mid-answer after bytes were forwarded: charges the reservation', async () => {
    const { store, exchange } = await reservedExchange();
    exchange.answered(true);
    exchange.forwarded(64);
    exchange.timeOut();
    await exchange.settle('failed');
    expect(store.settlements).toEqual([settlement(RESERVED, START + 1500, details(0, 0))]);
  });

  it('an unpriced model served free: charges nothing, whatever it reported', async () => {
    const world = exchangeWorld();
    const context = sampleContext();
    const exchange = await Exchange.reserve(
      world.dependencies,
      context,
      preparedChat(context, world.clock, { model: 'mock-unpriced' }),
      REQUEST_ID,
    );
    exchange.answered(true);
    exchange.forwarded(300);
    exchange.reportUsage(USAGE);
    await exchange.settle('completed');
    expect(world.store.reservations.map((r) => r.amount)).toEqual([0]);
    expect(world.store.settlements).toEqual([settlement(0, START, details(12, 8, { model: 'mock-unpriced' }))]);
  });

  it('usage that prices beyond the USD bound: charges the reservation instead', async () => {
    const { store, logger, exchange } = await reservedExchange();
    exchange.answered(true);
    exchange.reportUsage({ promptTokens: 1e18, completionTokens: 0, cachedPromptTokens: 0 });
    await exchange.settle('completed');
    // The entry keeps what a store can: a safe integer.
    expect(store.settlements).toEqual([settlement(RESERVED, START + 1500, details(Number.MAX_SAFE_INTEGER, 0))]);
    expect(logger.lines).toEqual([
      'warn: modelswitch-keys: upstream mock reported usage for model mock-model that prices to 1000000000000000.1 USD; charged the reserved maximum',
    ]);
  });

  it('usage that prices to exactly the USD bound ($1e12) is charged as it is; a token more is not', async () => {
    for (const [promptTokens, cost, lines] of [
      [1e15, 1e12, []],
      [1e15 + 1, RESERVED, [expect.stringContaining('prices to 1000000000000.0011 USD; charged the reserved maximum')]],
    ] as const) {
      const { store, logger, exchange } = await reservedExchange();
      exchange.answered(true);
      exchange.reportUsage({ promptTokens, completionTokens: 0, cachedPromptTokens: 0 });
      await exchange.settle('completed');
      expect(store.settlements).toEqual([settlement(cost, START + 1500, details(promptTokens, 0))]);
      expect(logger.lines).toEqual(lines);
    }
  });

  it('an error answer that reported usage is charged it, and its ledger entry has the details', async () => {
    const { store, logger, exchange } = await reservedExchange();
    exchange.answered(false);
    exchange.reportUsage(USAGE);
    await exchange.settle('completed');
    expect(store.settlements).toEqual([settlement(COST, START + 1500, details())]);
    expect(logger.lines).toEqual([]);
  });

  it("records the upstream's answer id and the model as a store keeps them (well-formed, at most 200 characters)", async () => {
    const model = `mock-family-${'\uD800'}${'x'.repeat(300)}`;
    const world = exchangeWorld();
    const context = sampleContext();
    const prepared = { ...preparedChat(context, world.clock), model };
    const exchange = await Exchange.reserve(world.dependencies, context, prepared, REQUEST_ID);
    exchange.answered(true);
    exchange.reportAnswerId('chatcmpl-first');
    exchange.reportAnswerId(undefined);
    exchange.reportUsage(USAGE);
    await exchange.settle('completed');
    const expectedModel = `mock-family-\uFFFD${'x'.repeat(200 - 13)}`;
    expect(expectedModel).toHaveLength(200);
    expect(world.store.settlements).toEqual([
      settlement(COST, START, details(12, 8, { model: expectedModel, upstreamId: 'chatcmpl-first' })),
    ]);
  });

  it('settles once, whichever ending comes first', async () => {
    const { store, exchange } = await reservedExchange();
    exchange.answered(true);
    exchange.forwarded(300);
    exchange.reportUsage(USAGE);
    const first = exchange.settle('completed');
    const second = exchange.clientClosed();
    expect(second).toBe(first);
    await Promise.all([first, second, exchange.settle('upstream_broke')]);
    expect(store.settlements).toEqual([settlement(COST, START + 1500, details())]);
  });

  it("counts the metered tokens against the key's tokens-per-minute, beside the settlement", async () => {
    const { store, exchange } = await reservedExchange({}, 1000);
    exchange.answered(true);
    exchange.reportUsage(USAGE);
    await exchange.settle('completed');
    expect(store.counterHits).toEqual([{ name: 'tokens:7:60000', windowMs: 60_000, now: START + 1500, amount: 20 }]);
    expect(store.settlements).toEqual([settlement(COST, START + 1500, details())]);
  });

  it('keeps the reservation for a hand reconciliation when the clock throws, and still resolves', async () => {
    const world = exchangeWorld();
    const context = sampleContext();
    let broken = false;
    const dependencies = {
      ...world.dependencies,
      now: () => {
        if (broken) throw new Error('clock broke');
        return world.clock.now();
      },
    };
    const exchange = await Exchange.reserve(dependencies, context, preparedChat(context, world.clock), REQUEST_ID);
    broken = true;
    await exchange.settle('completed');
    expect(world.store.settlements).toEqual([]);
    expect(world.logger.lines).toEqual([
      'error: modelswitch-keys: could not settle key 7 (reserved 0.212): clock broke; reconcile by hand',
    ]);
  });
});

describe('Exchange.settle when the store fails', () => {
  it('resolves at once, then retries in the background on the schedule until the settlement lands', async () => {
    const { store, scheduler, logger, inFlight, exchange } = await reservedExchange();
    store.settleFailures = 2;
    exchange.answered(true);
    exchange.reportUsage(USAGE);
    // The answer does not wait for the retries.
    await exchange.settle('completed');
    exchange.close();
    expect(store.settlements).toHaveLength(1);
    expect(scheduler.pending().map((t) => ({ ms: t.ms, held: t.held }))).toEqual([{ ms: 100, held: false }]);

    await scheduler.runNext();
    expect(store.settlements).toHaveLength(2);
    expect(scheduler.pending().map((t) => t.ms)).toEqual([400]);

    const draining = inFlight.drain();
    // From the first drain() on, a pending retry holds the process open.
    expect(scheduler.pending().map((t) => t.held)).toEqual([true]);
    expect(await stillPending(draining)).toBe(true);
    await scheduler.runNext();
    await draining;
    // The same settlement each time: the time of use is when the answer ended, not when a retry landed.
    expect(store.settlements).toEqual([
      settlement(COST, START + 1500, details()),
      settlement(COST, START + 1500, details()),
      settlement(COST, START + 1500, details()),
    ]);
    expect(scheduler.pending()).toEqual([]);
    expect(logger.lines).toEqual([
      'error: modelswitch-keys: key store unavailable (settleSpend: connection reset); requests that need it answer 503 until it recovers',
      'warn: modelswitch-keys: key store recovered',
    ]);
  });

  it('gives up after the last pause and asks for a hand reconciliation', async () => {
    const { store, scheduler, logger, inFlight, exchange } = await reservedExchange();
    store.settleFailures = 1 + SETTLE_RETRIES.length;
    exchange.answered(true);
    exchange.reportUsage(USAGE);
    await exchange.settle('completed');
    exchange.close();
    const pauses: number[] = [];
    while (scheduler.pending().length > 0) {
      pauses.push((scheduler.pending()[0] as { ms: number }).ms);
      await scheduler.runNext();
    }
    await inFlight.drain();
    expect(pauses).toEqual([100, 400, 1500, 4000, 9000]);
    expect(store.settlements).toHaveLength(6);
    expect(logger.lines.at(-1)).toBe('error: modelswitch-keys: could not settle key 7 (reserved 0.212, cost 0.028); reconcile by hand');
  });
});

describe('Exchange in flight', () => {
  it('counts for drain() from its reservation until its response closes, once', async () => {
    const { inFlight, exchange } = await reservedExchange();
    await exchange.settle('completed');
    const draining = inFlight.drain();
    expect(await stillPending(draining)).toBe(true);
    exchange.close();
    exchange.close();
    await draining;
    // A second close() did not count the exchange out twice: a new request is still waited for.
    const context = sampleContext();
    const world = exchangeWorld();
    const next = await Exchange.reserve({ ...world.dependencies, inFlight }, context, preparedChat(context, world.clock), REQUEST_ID);
    expect(await stillPending(inFlight.drain())).toBe(true);
    next.close();
    await inFlight.drain();
  });
});

describe('Exchange hold renewal', () => {
  const HALF_MARGIN = DEFAULT_PROXY_HOLD_MARGIN_MS / 2;

  it('renews the hold of an answer still streaming once half the margin has passed, to now + timeout + margin, one renewal at a time', async () => {
    const { store, clock, exchange } = await reservedExchange({ stream: true });
    exchange.answered(true);
    exchange.forwarded(100);
    expect(store.extensions).toEqual([]);
    clock.advance(HALF_MARGIN - 1500);
    exchange.forwarded(100);
    // The first renewal is still under way: the chunk right after it asks for none.
    exchange.forwarded(100);
    await settled();
    const renewedAt = START + HALF_MARGIN;
    expect(store.extensions).toEqual([
      { holdId: HOLD_ID, accountId: 'acct_test', expiresAt: renewedAt + DEFAULT_PROXY_TIMEOUT_MS + DEFAULT_PROXY_HOLD_MARGIN_MS },
    ]);
    clock.advance(HALF_MARGIN - 1);
    exchange.forwarded(100);
    await settled();
    expect(store.extensions).toHaveLength(1);
    clock.advance(1);
    exchange.forwarded(100);
    await settled();
    expect(store.extensions.map((extension) => extension.expiresAt)).toEqual([
      renewedAt + DEFAULT_PROXY_TIMEOUT_MS + DEFAULT_PROXY_HOLD_MARGIN_MS,
      renewedAt + HALF_MARGIN + DEFAULT_PROXY_TIMEOUT_MS + DEFAULT_PROXY_HOLD_MARGIN_MS,
    ]);
  });

  it('renews an error answer too, and nothing once the settlement has started', async () => {
    const { store, clock, exchange } = await reservedExchange({ stream: true });
    exchange.answered(false);
    clock.advance(HALF_MARGIN);
    exchange.forwarded(100);
    await settled();
    expect(store.extensions).toHaveLength(1);
    const settling = exchange.settle('completed');
    clock.advance(HALF_MARGIN);
    exchange.forwarded(100);
    await settling;
    await settled();
    expect(store.extensions).toHaveLength(1);
  });

  it('a renewal the store fails is tried again with the next data; the settlement is untouched', async () => {
    const { store, clock, logger, exchange } = await reservedExchange({ stream: true });
    store.extendAnswer = async () => {
      throw new Error('connection reset');
    };
    exchange.answered(true);
    clock.advance(HALF_MARGIN);
    exchange.forwarded(100);
    await settled();
    store.extendAnswer = async () => true;
    exchange.forwarded(100);
    await settled();
    expect(store.extensions).toHaveLength(2);
    exchange.reportUsage(USAGE);
    await exchange.settle('completed');
    expect(store.settlements).toEqual([settlement(COST, START + 1500 + HALF_MARGIN, details())]);
    expect(logger.lines).toEqual([
      'error: modelswitch-keys: key store unavailable (extendHold: connection reset); requests that need it answer 503 until it recovers',
      'warn: modelswitch-keys: key store recovered',
    ]);
  });

  it('a hold another instance released as expired is said once and renewed no more; the answer is still charged', async () => {
    const { store, clock, logger, exchange } = await reservedExchange({ stream: true });
    store.extendAnswer = async () => false;
    exchange.answered(true);
    clock.advance(HALF_MARGIN);
    exchange.forwarded(100);
    await settled();
    clock.advance(HALF_MARGIN);
    exchange.forwarded(100);
    await settled();
    expect(store.extensions).toHaveLength(1);
    exchange.reportUsage(USAGE);
    await exchange.settle('completed');
    expect(store.settlements).toEqual([settlement(COST, START + 1500 + 2 * HALF_MARGIN, details())]);
    expect(logger.lines).toEqual([
      'warn: modelswitch-keys: the hold of a request of key 7 was released as expired while its answer still ran (gateway clocks apart, or holdMarginMs too short); it is still charged when it ends',
    ]);
  });

  it('a renewal that finds the hold gone because its own answer settled meanwhile says nothing', async () => {
    const { store, clock, logger, exchange } = await reservedExchange({ stream: true });
    let answerRenewal: (live: boolean) => void = () => {};
    store.extendAnswer = () =>
      new Promise<boolean>((resolve) => {
        answerRenewal = resolve;
      });
    exchange.answered(true);
    clock.advance(HALF_MARGIN);
    exchange.forwarded(100);
    exchange.reportUsage(USAGE);
    await exchange.settle('completed');
    answerRenewal(false);
    await settled();
    expect(store.extensions).toHaveLength(1);
    expect(store.settlements).toEqual([settlement(COST, START + 1500 + HALF_MARGIN, details())]);
    expect(logger.lines).toEqual([]);
  });

  it('a clock that throws mid-stream skips the renewal without breaking the stream', async () => {
    const world = exchangeWorld();
    const context = sampleContext();
    let broken = false;
    const dependencies = {
      ...world.dependencies,
      now: () => {
        if (broken) throw new Error('clock broke');
        return world.clock.now();
      },
    };
    const exchange = await Exchange.reserve(dependencies, context, preparedChat(context, world.clock, { stream: true }), REQUEST_ID);
    broken = true;
    exchange.answered(true);
    expect(() => exchange.forwarded(100)).not.toThrow();
    expect(world.store.extensions).toEqual([]);
  });
});
