import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Authenticator, ModelSwitchContext } from '../auth/authenticator.js';
import { DEFAULT_TRANSACTIONS_PAGE, DEFAULT_USAGE_DAYS, DEFAULT_USAGE_GROUP_BY, MAX_USAGE_DAYS } from '../defaults.js';
import { ModelSwitchError, invalidRequest } from '../errors/errors.js';
import { answerError, sendError, sendJson } from '../http/respond.js';
import { isoTime } from '../keys/public-key.js';
import { type PublicLedgerEntry, publicLedgerEntry } from '../keys/public-ledger-entry.js';
import { MAX_LEDGER_PAGE, roundUsd } from '../store/spend-rules.js';
import type { StoreGuard } from '../store/guard.js';
import type { AccountRecord, KeyStore, LedgerEntryType, LedgerQuery, UsageRow } from '../store/types.js';
import { trackRequest } from '../auth/request-metrics.js';
import { validateId } from './validation.js';

/** The answer of `GET /api/account`: the billing key's account, in USD. */
export interface AccountResponse {
  id: string;
  balance: number;
  /** Held by requests in flight. */
  reserved: number;
  /** `balance − reserved`: what new requests may spend. */
  available: number;
  isFreeTier: boolean;
  /** ISO 8601, UTC. */
  createdAt: string;
}

/** The answer of `GET /api/transactions`: a page of the account's ledger, newest first. */
export interface TransactionsResponse {
  transactions: PublicLedgerEntry[];
  /** Whether older entries matching the query exist: ask again with `before` = the last entry's id. */
  has_more: boolean;
}

/** What `group_by` may name: a UTC day, a key, a model. */
export type UsageGrouping = 'day' | 'key' | 'model';

/** Requests, tokens and USD of one group of `GET /api/usage` (or of all of them). */
export interface UsageTotals {
  requests: number;
  promptTokens: number;
  completionTokens: number;
  cost: number;
}

/** One group of `GET /api/usage`: the fields it is grouped by, and its totals. */
export interface UsageGroup extends UsageTotals {
  /** `YYYY-MM-DD` (UTC), with `group_by` `day`. */
  date?: string;
  /** With `group_by` `key`. */
  keyId?: number;
  /** With `group_by` `model` (`unknown` for a settlement without details). */
  model?: string;
}

/** The answer of `GET /api/usage`. */
export interface UsageResponse {
  usage: UsageGroup[];
  total: UsageTotals;
}

const ROUTES = { '/account': 'account', '/transactions': 'transactions', '/usage': 'usage' } as const;
type AccountRoute = (typeof ROUTES)[keyof typeof ROUTES];
const ALLOWED_METHODS = ['GET', 'HEAD'];
const ENTRY_TYPES: readonly LedgerEntryType[] = ['usage', 'credit', 'adjustment'];
const GROUPINGS: readonly UsageGrouping[] = ['day', 'key', 'model'];
const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
const DAY_MS = 86_400_000;

/**
 * The account routes of `keysRouter` (`GET /account`, `/transactions`, `/usage`), each scoped to
 * the billing key's own account: nothing of another account is read. Answers whether `path` was
 * one of them (then it answered, or will), so the router passes other paths on.
 */
export function accountRoutes(
  store: KeyStore,
  authenticator: Authenticator,
): (req: IncomingMessage, res: ServerResponse, path: string) => boolean {
  const { guard, now, logger } = authenticator;

  async function answer(req: IncomingMessage, res: ServerResponse, route: AccountRoute): Promise<void> {
    const context = await authenticator.admit(req, res);
    (req as IncomingMessage & { modelSwitch?: ModelSwitchContext }).modelSwitch = context;
    const query = queryOf(req.url);
    if (route === 'account') {
      for (const [name] of query) throw unknownParameter(name);
      // The account authentication read for this request: fresh from the store.
      sendJson(res, 200, accountAnswer(context.account));
    } else if (route === 'transactions') {
      sendJson(res, 200, await transactionsAnswer(store, guard, context.account.id, query));
    } else {
      sendJson(res, 200, await usageAnswer(store, guard, now(), context.account.id, query));
    }
  }

  return function accountRoute(req, res, path) {
    const route = ROUTES[(path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path) as keyof typeof ROUTES];
    if (route === undefined || req.method === 'OPTIONS') return false;
    trackRequest(authenticator.metrics, req, res, `/api/${route}`);
    if (!ALLOWED_METHODS.includes(req.method ?? '')) {
      sendError(
        res,
        new ModelSwitchError('method_not_allowed', `${req.method} is not supported on this route`, {
          headers: { Allow: ALLOWED_METHODS.join(', ') },
        }),
      );
      return true;
    }
    answer(req, res, route).catch((error: unknown) => answerError(res, error, logger));
    return true;
  };
}

/**
 * The answer of `GET /api/account` for an account record (the dashboard's Billing page shows the same).
 *
 * @example
 * ```ts
 * accountAnswer(account); // { id: 'acct_…', balance: 10, reserved: 0, available: 10, isFreeTier: false, createdAt: '…' }
 * ```
 */
export function accountAnswer(account: AccountRecord): AccountResponse {
  const { id, balance, reserved, isFreeTier, createdAt } = account;
  return { id, balance, reserved, available: roundUsd(balance - reserved), isFreeTier, createdAt: isoTime(createdAt) };
}

/**
 * The answer of `GET /api/transactions?limit=&before=&key_id=&type=` for one account (the dashboard
 * pages its transactions table with it). Throws 400 for a bad or unknown query parameter.
 */
export async function transactionsAnswer(
  store: KeyStore,
  guard: StoreGuard,
  accountId: string,
  query: URLSearchParams,
): Promise<TransactionsResponse> {
  const request: LedgerQuery = { limit: DEFAULT_TRANSACTIONS_PAGE };
  for (const [name, value] of checkedQuery(query)) {
    if (name === 'limit') request.limit = pageSize(value);
    else if (name === 'before') request.before = validateId(value, 'before');
    // Another account's key id reads this account's entries of that key: none. No 404, so
    // nothing tells whether the key exists elsewhere.
    else if (name === 'key_id') request.keyId = validateId(value, 'key_id');
    else if (name === 'type') request.type = entryType(value);
    else throw unknownParameter(name);
  }
  const page = await guard.run('listLedger', () => store.listLedger(accountId, request));
  return { transactions: page.entries.map(publicLedgerEntry), has_more: page.hasMore };
}

/**
 * The answer of `GET /api/usage?from=&to=&group_by=` for one account at time `now` (the dashboard's
 * totals and chart come from it). Throws 400 for a bad or unknown query parameter.
 */
export async function usageAnswer(
  store: KeyStore,
  guard: StoreGuard,
  now: number,
  accountId: string,
  query: URLSearchParams,
): Promise<UsageResponse> {
  let from: number | undefined;
  let to: number | undefined;
  let grouping: readonly UsageGrouping[] = [DEFAULT_USAGE_GROUP_BY];
  for (const [name, value] of checkedQuery(query)) {
    if (name === 'from') from = utcDate(value, 'from');
    else if (name === 'to') to = utcDate(value, 'to');
    else if (name === 'group_by') grouping = groupBy(value);
    else throw unknownParameter(name);
  }
  to ??= Math.floor(now / DAY_MS) * DAY_MS;
  from ??= to - (DEFAULT_USAGE_DAYS - 1) * DAY_MS;
  if (from > to) throw invalidRequest(`from must not be after to (${dateOf(to)})`, 'from');
  if ((to - from) / DAY_MS + 1 > MAX_USAGE_DAYS) {
    throw invalidRequest(`from and to may span at most ${MAX_USAGE_DAYS} days (both included)`, 'from');
  }
  const range = { from: dateOf(from), to: dateOf(to) };
  const rows = await guard.run('getUsage', () => store.getUsage(accountId, range));
  return summarize(rows, grouping);
}

/** The query parameters; a parameter given twice is refused (which one would count is a guess). */
function queryOf(url: string | undefined): URLSearchParams {
  return checkedQuery(new URLSearchParams((url ?? '').split('?')[1] ?? ''));
}

/** `query` itself, once no parameter is given twice. */
function checkedQuery(query: URLSearchParams): URLSearchParams {
  const seen = new Set<string>();
  for (const [name] of query) {
    if (seen.has(name)) throw invalidRequest(`${name} may be given once`, name);
    seen.add(name);
  }
  return query;
}

function unknownParameter(name: string): ModelSwitchError {
  return invalidRequest(`Unknown query parameter ${name}`, name);
}

/** `limit`: an integer 1–1000. */
function pageSize(value: string): number {
  const limit = /^[0-9]{1,4}$/.test(value) ? Number(value) : 0;
  if (limit < 1 || limit > MAX_LEDGER_PAGE) throw invalidRequest(`limit must be an integer from 1 to ${MAX_LEDGER_PAGE}`, 'limit');
  return limit;
}

function entryType(value: string): LedgerEntryType {
  const type = ENTRY_TYPES.find((candidate) => candidate === value);
  if (type === undefined) throw invalidRequest(`type must be one of ${ENTRY_TYPES.join(', ')}`, 'type');
  return type;
}

/** A UTC date `YYYY-MM-DD` that exists, as the epoch ms of its midnight. */
function utcDate(value: string, param: string): number {
  const match = DATE.exec(value);
  const [year, month, day] = match ? [Number(match[1]), Number(match[2]), Number(match[3])] : [0, 0, 0];
  const time = Date.UTC(year, month - 1, day);
  const date = new Date(time);
  if (!match || year < 1970 || date.getUTCFullYear() !== year || date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day) {
    throw invalidRequest(`${param} must be a UTC date YYYY-MM-DD, e.g. 2026-11-01`, param);
  }
  return time;
}

function dateOf(time: number): string {
  return new Date(time).toISOString().slice(0, 10);
}

/** `group_by`: a comma-separated list of `day`, `key`, `model`, each at most once. */
function groupBy(value: string): readonly UsageGrouping[] {
  const names = value.split(',');
  const grouping: UsageGrouping[] = [];
  for (const name of names) {
    const found = GROUPINGS.find((candidate) => candidate === name);
    if (found === undefined || grouping.includes(found)) {
      throw invalidRequest(`group_by must list any of ${GROUPINGS.join(', ')}, each once, separated by commas`, 'group_by');
    }
    grouping.push(found);
  }
  return grouping;
}

/** The usage aggregates summed into the requested groups (sorted by day, key, model), and their total. */
function summarize(rows: readonly UsageRow[], grouping: readonly UsageGrouping[]): UsageResponse {
  const byDay = grouping.includes('day');
  const byKey = grouping.includes('key');
  const byModel = grouping.includes('model');
  const groups = new Map<string, UsageGroup>();
  const total: UsageTotals = { requests: 0, promptTokens: 0, completionTokens: 0, cost: 0 };
  for (const row of rows) {
    const name = JSON.stringify([byDay ? row.date : 0, byKey ? row.keyId : 0, byModel ? row.model : 0]);
    let group = groups.get(name);
    if (group === undefined) {
      group = {
        ...(byDay ? { date: row.date } : {}),
        ...(byKey ? { keyId: row.keyId } : {}),
        ...(byModel ? { model: row.model } : {}),
        requests: 0,
        promptTokens: 0,
        completionTokens: 0,
        cost: 0,
      };
      groups.set(name, group);
    }
    for (const totals of [group, total]) {
      totals.requests += row.requests;
      totals.promptTokens += row.promptTokens;
      totals.completionTokens += row.completionTokens;
      totals.cost += row.cost;
    }
  }
  const usage = [...groups.values()].map((group) => ({ ...group, cost: roundUsd(group.cost) }));
  usage.sort((a, b) => compare(a.date ?? '', b.date ?? '') || (a.keyId ?? 0) - (b.keyId ?? 0) || compare(a.model ?? '', b.model ?? ''));
  return { usage, total: { ...total, cost: roundUsd(total.cost) } };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
