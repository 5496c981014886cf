import { expect } from 'vitest';
import { API_KEY_PATTERN, type KeyStore, MemoryKeyStore, ModelSwitchError, type ModelSwitchErrorCode, issueKey } from '../../src/index.js';
import { type SeededAccount, type TestClock, fastHasher, recordingLogger, seedAccount, testClock } from '../helpers.js';
import type { FuzzAnswer, FuzzRequest } from './http.js';

/** Any whole key in a text, glued to other characters or not. */
const ANY_KEY = new RegExp(API_KEY_PATTERN.source.replaceAll('\\b', ''), 'g');
/** The secret part of a key value (after the 3-character type prefix and 10-character handle). */
const SECRET = { start: 13, end: 35 };

/** The codes the contract answers with, and the status of each (from ModelSwitchError itself). */
const KNOWN_CODES: readonly ModelSwitchErrorCode[] = [
  'invalid_api_key',
  'expired_api_key',
  'wrong_key_type',
  'key_deactivated',
  'spend_limit_reached',
  'insufficient_balance',
  'rate_limit_exceeded',
  'invalid_request',
  'method_not_allowed',
  'key_not_found',
  'model_not_found',
  'generation_not_found',
  'route_not_found',
  'request_too_large',
  'unsupported_content_encoding',
  'internal_error',
  'upstream_error',
  'store_unavailable',
  'verification_busy',
  'server_busy',
  'upstream_timeout',
];

/**
 * The store every fuzzed app shares, switchable into an outage: while `down`, every store call
 * rejects as a lost connection would (and changes nothing), so the only 5xx a property accepts,
 * 503 `store_unavailable`, has a real cause.
 */
export function switchableStore(inner: KeyStore): { store: KeyStore; setDown(down: boolean): void } {
  let down = false;
  const store = new Proxy(inner, {
    get(target, property, receiver) {
      // No in-process shortcut past the switch: every call goes through the promise API below.
      if (property === 'sync') return undefined;
      const value: unknown = Reflect.get(target, property, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => (down ? Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:6379')) : value.apply(target, args));
    },
  });
  return { store, setDown: (value) => (down = value) };
}

/** Two accounts with keys in every state, the clock, the logger, and every key value handed out. */
export interface FuzzWorld {
  store: KeyStore;
  setDown(down: boolean): void;
  hasher: ReturnType<typeof fastHasher>;
  clock: TestClock;
  logger: ReturnType<typeof recordingLogger>;
  main: SeededAccount;
  other: SeededAccount;
  /** Every key value that exists (seeded, and created over HTTP during the run). */
  keys: string[];
  /** Every key id that exists or existed. */
  ids: number[];
  accountIds: string[];
  /** Lines written to the console by code under test (the example logs there). */
  consoleLines: string[];
  /**
   * Whether an answer is an upstream's own, passed through unchanged (the contract lets an
   * upstream's 4xx JSON through): such an error need not be the package's shape. Default: none is.
   */
  isUpstreamAnswer: (answer: FuzzAnswer) => boolean;
  /** How many answers had each status and error code: printed with `FUZZ_STATS=1`, to see what a run reached. */
  stats: Map<string, number>;
}

/**
 * Seeds the world: the main account (balance $1000) with its billing key, a proxy key, a
 * deactivated key, an expired key, a key rate-limited to 1 request a minute and one with a
 * spend limit of $0.01; another account with its own billing and proxy keys.
 */
export async function createWorld(): Promise<FuzzWorld> {
  const switchable = switchableStore(new MemoryKeyStore());
  const store = switchable.store;
  const hasher = fastHasher();
  const clock = testClock();
  const logger = recordingLogger();
  const main = await seedAccount(store, { hasher, balance: 1000, now: clock.now() });
  const other = await seedAccount(store, { hasher, balance: 5, now: clock.now() });
  const at = { hasher, now: clock.now() };
  const extra = await Promise.all([
    issueKey(store, { accountId: main.account.id, type: 'proxy', name: 'deactivated' }, at),
    issueKey(store, { accountId: main.account.id, type: 'proxy', name: 'expired', expiresAt: clock.now() + 1000 }, at),
    issueKey(store, { accountId: main.account.id, type: 'proxy', name: 'limited', rateLimit: { requests: 1, interval: '1m' } }, at),
    issueKey(store, { accountId: main.account.id, type: 'proxy', name: 'capped', limit: 0.01, limitReset: 'daily' }, at),
  ]);
  await store.updateKey(extra[0].record.id, { active: false });
  const keys = [main.billingKey, main.proxyKey, other.billingKey, other.proxyKey, ...extra.map((k) => k.key)];
  const ids = [main.proxyKeyId, other.proxyKeyId, ...extra.map((k) => k.record.id)];
  for (const key of [main.billingKey, other.billingKey]) {
    const record = await store.getKeyByHandle(key.slice(3, 13));
    if (record) ids.push(record.id);
  }
  clock.advance(2000);
  return {
    store,
    setDown: switchable.setDown,
    hasher,
    clock,
    logger,
    main,
    other,
    keys,
    ids,
    accountIds: [main.account.id, other.account.id],
    consoleLines: [],
    stats: new Map(),
    isUpstreamAnswer: () => false,
  };
}

/**
 * What a refused request must leave as it was: every account, every key (all but `lastUsedAt`,
 * which records that a key was presented, and the counters, which count refused requests too),
 * every ledger entry and the usage aggregates.
 */
export async function snapshot(world: FuzzWorld): Promise<unknown> {
  const accounts = [];
  for (const id of world.accountIds) {
    const keys = [];
    for (const type of ['proxy', 'billing'] as const) {
      let after: number | undefined;
      for (;;) {
        const page = await world.store.listKeys(id, { type, limit: 1000, ...(after === undefined ? {} : { after }) });
        keys.push(...page.keys.map(({ lastUsedAt: _used, ...rest }) => rest));
        if (!page.hasMore) break;
        after = page.keys.at(-1)?.id;
      }
    }
    const ledger = [];
    let before: number | undefined;
    for (;;) {
      const page = await world.store.listLedger(id, { limit: 1000, ...(before === undefined ? {} : { before }) });
      ledger.push(...page.entries);
      if (!page.hasMore) break;
      before = page.entries.at(-1)?.id;
    }
    const usage = await world.store.getUsage(id, { from: '2026-11-01', to: '2026-12-31' });
    accounts.push({ account: await world.store.getAccount(id), keys, ledger, usage });
  }
  return accounts;
}

/** Waits until no spend is held any more: a proxied answer's settlement may land after its last byte. */
export async function settled(world: FuzzWorld): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    const accounts = await Promise.all(world.accountIds.map((id) => world.store.getAccount(id)));
    if (accounts.every((a) => a?.reserved === 0)) return;
    await new Promise((resolve) => (i < 100 ? setImmediate(resolve) : setTimeout(resolve, 1)));
  }
  throw new Error('a reservation was never settled or released');
}

/** Every secret of a key this world knows, and any whole key, found in `text`. */
export function keysIn(world: FuzzWorld, text: string): string[] {
  const found = [...text.matchAll(ANY_KEY)].map((m) => m[0]);
  for (const key of world.keys) {
    if (text.includes(key.slice(SECRET.start, SECRET.end))) found.push(`the secret of ${key.slice(0, 7)}…`);
  }
  return found;
}

/**
 * The properties every answer has:
 * - no 5xx but a 503 `store_unavailable` during a store outage;
 * - every error (≥ 400) is the contract's JSON, `{"error":{"message","type","code","param"?}}`, its
 *   status the code's, `no-store`, a 401 with its challenge, a 429 with `Retry-After`, a 405 with `Allow`;
 * - no key value anywhere in the answer (the exceptions: the new key in a 201 of `POST /api/keys` and
 *   in a 200 of `POST /api/keys/:id/rotate`, each recorded as a key of the world from then on).
 */
export function checkAnswer(world: FuzzWorld, req: FuzzRequest, answer: FuzzAnswer, outage: boolean): void {
  const label = `${req.method} ${req.path} → ${answer.status} ${answer.text.slice(0, 300)}`;
  let whole = answer.whole;
  const rotated = answer.status === 200 && req.method === 'POST' && /\/rotate\/?(\?|$)/.test(req.path);
  if ((answer.status === 201 || rotated) && req.method === 'POST') {
    const created = JSON.parse(answer.text) as { key?: unknown; id?: unknown };
    expect(typeof created.key, label).toBe('string');
    world.keys.push(created.key as string);
    if (typeof created.id === 'number') world.ids.push(created.id);
    whole = whole.replace(created.key as string, '<the new key>');
  }
  expect(keysIn(world, whole), label).toEqual([]);
  if (answer.status >= 500) {
    expect({ outage, status: answer.status, text: answer.text }, label).toEqual({
      outage: true,
      status: 503,
      text: answer.text,
    });
  }
  if (answer.status < 400) return;
  if (world.isUpstreamAnswer(answer)) {
    // An upstream's own error, passed through: OpenAI's error shape, and a client error (a 5xx of the upstream is a 502).
    expect({ status: answer.status < 500, body: JSON.parse(answer.text) }, label).toEqual({
      status: true,
      body: { error: expect.objectContaining({ message: expect.any(String), type: expect.any(String) }) },
    });
    return;
  }
  expect(answer.headers['content-type'], label).toBe('application/json');
  expect(answer.headers['cache-control'], label).toBe('no-store');
  if (req.method === 'HEAD') return;
  const body = JSON.parse(answer.text) as { error: { code: ModelSwitchErrorCode; param?: string } };
  expect(Object.keys(body), label).toEqual(['error']);
  const { code, param } = body.error;
  expect(KNOWN_CODES, label).toContain(code);
  if (outage && answer.status >= 500) expect(code, label).toBe('store_unavailable');
  const expected = new ModelSwitchError(code, 'x');
  expect(body, label).toEqual({
    error: {
      message: expect.any(String),
      type: expected.type,
      code,
      ...(param === undefined ? {} : { param: expect.any(String) }),
    },
  });
  expect(answer.status, label).toBe(expected.status);
  if (answer.status === 401) expect(answer.headers['www-authenticate'], label).toMatch(/^Bearer realm="modelswitch"/);
  if (answer.status === 429 && code === 'rate_limit_exceeded') expect(answer.headers['retry-after'], label).toMatch(/^[1-9][0-9]*$/);
  if (answer.status === 405) expect(answer.headers.allow, label).toMatch(/^[A-Z]+(, [A-Z]+)*$/);
}

/** No log line of the host logger or the console holds a key. */
export function checkLogs(world: FuzzWorld): void {
  expect(keysIn(world, [...world.logger.lines, ...world.consoleLines].join('\n'))).toEqual([]);
}

/** The store as the last case left it (settled), so the next case need not read it again. */
const lastSnapshot = new WeakMap<FuzzWorld, unknown>();

/**
 * One fuzz case end to end: maybe take the store down, send, check the answer and the logs, wait
 * for settlement, and for a refused request (≥ 400) check that the store is exactly as before. The
 * clock moves a second per case, so rate limits refill over a run.
 */
export async function runCase(
  world: FuzzWorld,
  port: number,
  req: FuzzRequest,
  outage: boolean,
  send: (port: number, req: FuzzRequest) => Promise<FuzzAnswer>,
): Promise<FuzzAnswer> {
  world.clock.advance(1000);
  const before = lastSnapshot.get(world) ?? (await snapshot(world));
  world.setDown(outage);
  let answer: FuzzAnswer;
  try {
    answer = await send(port, req);
  } finally {
    world.setDown(false);
  }
  count(world, req, answer);
  checkAnswer(world, req, answer, outage);
  checkLogs(world);
  await settled(world);
  const after = await snapshot(world);
  lastSnapshot.set(world, after);
  const last = `${outage ? '(store down) ' : ''}${req.method} ${req.path} → ${answer.status} ${answer.text.slice(0, 200)}`;
  if (answer.status >= 400) {
    const changed = differences(before, after);
    if (changed.length > 0) {
      throw new Error(
        `${req.method} ${req.path} → ${answer.status} changed the store:\n${changed.join('\n')}\nafter:\n${(previous.get(world) ?? []).join('\n')}`,
      );
    }
  }
  previous.set(world, [last, ...(previous.get(world) ?? [])].slice(0, 5));
  return answer;
}

/** The last cases, newest first, named when a case fails on a change one of them may have left behind. */
const previous = new WeakMap<FuzzWorld, string[]>();

/** Counts the answer's status and code (and with `FUZZ_STATS=messages`, the method and the error message). */
function count(world: FuzzWorld, req: FuzzRequest, answer: FuzzAnswer): void {
  const detailed = process.env.FUZZ_STATS === 'messages';
  let outcome = `${detailed || req.method === 'HEAD' ? `${req.method} ` : ''}${answer.status}`;
  if (answer.status >= 400 && req.method !== 'HEAD') {
    const { error } = JSON.parse(answer.text) as { error?: { code?: string; message?: string } };
    outcome += world.isUpstreamAnswer(answer) ? ' from the upstream' : ` ${error?.code}`;
    if (detailed) outcome += `: ${error?.message?.slice(0, 60)}`;
  }
  world.stats.set(outcome, (world.stats.get(outcome) ?? 0) + 1);
}

/** With `FUZZ_STATS=1` (or `messages`), prints how many answers had each status and code. */
export function printStats(world: FuzzWorld, title: string): void {
  if (!process.env.FUZZ_STATS) return;
  const rows = [...world.stats].sort((a, b) => b[1] - a[1]).map(([outcome, count]) => `  ${String(count).padStart(5)} ${outcome}`);
  console.log(`${title}:\n${rows.join('\n')}`);
}

/** Where two snapshots differ, as `path: before → after` lines (a failure then says what changed). */
function differences(before: unknown, after: unknown, path = ''): string[] {
  if (Object.is(before, after)) return [];
  if (typeof before !== 'object' || typeof after !== 'object' || before === null || after === null) {
    return [`${path || '(root)'}: ${JSON.stringify(before)} → ${JSON.stringify(after)}`];
  }
  const names = new Set([...Object.keys(before), ...Object.keys(after)]);
  return [...names].flatMap((name) =>
    differences((before as Record<string, unknown>)[name], (after as Record<string, unknown>)[name], `${path}.${name}`),
  );
}
