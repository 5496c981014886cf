import { DEFAULT_ACCOUNT_BALANCE, DEFAULT_USAGE_DAYS, DEFAULT_USAGE_GROUP_BY } from '../defaults.js';
import type { ModelSwitchEvent } from '../events/events.js';
import { creditBalance, creditedEvent, createAccount, issueKey } from '../keys/accounts.js';
import { isoTime, publicKey } from '../keys/public-key.js';
import { isUtcDate, utcDay } from '../store/spend-rules.js';
import type { AccountRecord, KeyRecord, KeyStore, KeyType, LedgerEntry, UsageRow } from '../store/types.js';
import type { CliCommand } from './commands.js';
import { CliInputError, CliNotFoundError } from './errors.js';

/** The options parseArgs read, by name. */
export type CommandValues = Record<string, string | boolean | undefined>;

/** What a command prints: text for people, a JSON document for `--json`. */
export interface CommandOutput {
  text: string;
  json: unknown;
  /** The output holds a new key on purpose (printed once, not redacted): only `billing-key create`. */
  holdsNewKey?: boolean;
}

/** What a command runs against. */
export interface CommandContext {
  store: KeyStore;
  migrate(): Promise<{ line: string; json: Record<string, unknown> }>;
  now(): number;
  /** Reports a change the command made (actor `cli`); `runCli` delivers it after the output. */
  emit(event: ModelSwitchEvent): void;
}

/** `keys list`: keys read per page. */
const LIST_PAGE_SIZE = 1000;
const DAY_MS = 86_400_000;
const GROUPINGS = ['day', 'key', 'model'] as const;
type Grouping = (typeof GROUPINGS)[number];

/** Runs one parsed command. Throws CliInputError for bad input, CliNotFoundError for an unknown id; the store's own errors pass through. */
export async function runCommand(
  command: CliCommand,
  args: readonly string[],
  values: CommandValues,
  context: CommandContext,
): Promise<CommandOutput> {
  const [first = '', second = ''] = args;
  switch (command.words.join(' ')) {
    case 'migrate': {
      const result = await context.migrate();
      return { text: `${result.line}\n`, json: result.json };
    }
    case 'account create': {
      const balance = values.balance === undefined ? DEFAULT_ACCOUNT_BALANCE : usd(String(values.balance), '--balance', true);
      const id = values.id === undefined ? undefined : accountId(String(values.id));
      if (id !== undefined && (await context.store.getAccount(id)) !== null) throw new CliInputError(`account ${id} exists already`);
      const account = await createAccount(context.store, {
        ...(id === undefined ? {} : { id }),
        balance,
        isFreeTier: values['free-tier'] === true,
        now: context.now(),
      });
      return { text: `Account ${account.id} created\n${accountText(account)}`, json: accountJson(account) };
    }
    case 'account show': {
      const account = await requireAccount(context.store, accountId(first));
      return { text: accountText(account), json: accountJson(account) };
    }
    case 'account credit': {
      const id = accountId(first);
      const amount = usd(second, 'USD', false);
      const note = values.note === undefined ? null : String(values.note);
      const result = await creditBalance(context.store, id, amount, { reference: String(values.reference), note, now: context.now() });
      if (result === null) throw new CliNotFoundError(`no account ${id}`);
      const credited = creditedEvent(result, String(values.reference), 'cli');
      if (credited !== null) context.emit(credited);
      const text = result.applied
        ? `Credited ${amount} USD to ${id} (reference ${result.entry.reference}): balance ${result.account.balance} USD\n`
        : `Reference ${result.entry.reference} is already in ${id}'s ledger: nothing credited, balance ${result.account.balance} USD\n`;
      return { text, json: { applied: result.applied, account: accountJson(result.account), entry: entryJson(result.entry) } };
    }
    case 'billing-key create': {
      const account = await requireAccount(context.store, accountId(first));
      const name = String(values.name);
      if (name.length === 0 || [...name].length > 100) throw new CliInputError('--name must be 1–100 characters');
      const issued = await issueKey(context.store, { accountId: account.id, type: 'billing', name }, { now: context.now() });
      const json = { ...keyJson(issued.record, context.now()), key: issued.key };
      context.emit(keyEvent('key.created', issued.record, context.now()));
      return {
        text: `Billing key ${issued.record.id} "${name}" for account ${account.id}, shown once (only its hash is stored):\n${issued.key}\n`,
        json,
        holdsNewKey: true,
      };
    }
    case 'keys list': {
      const id = accountId(first);
      const type = values.type === undefined ? undefined : keyType(String(values.type));
      const keys: KeyRecord[] = [];
      for (const listed of type === undefined ? (['billing', 'proxy'] as const) : [type])
        keys.push(...(await allKeys(context.store, id, listed)));
      keys.sort((a, b) => a.id - b.id);
      const now = context.now();
      return { text: keysText(keys, now), json: keys.map((key) => keyJson(key, now)) };
    }
    case 'keys deactivate': {
      const id = keyId(first);
      const key = await context.store.updateKey(id, { active: false });
      if (key === null) throw new CliNotFoundError(`no key ${id}`);
      context.emit({
        type: 'key.updated',
        accountId: key.accountId,
        keyId: key.id,
        actor: 'cli',
        time: context.now(),
        changed: ['active'],
      });
      return { text: `Key ${id} (${key.prefix}…, "${key.name}") deactivated\n`, json: keyJson(key, context.now()) };
    }
    case 'keys delete': {
      const id = keyId(first);
      // Read first: the event names the key's account, which the deletion does not answer.
      const key = await context.store.getKey(id);
      if (key === null || !(await context.store.deleteKey(id))) throw new CliNotFoundError(`no key ${id}`);
      context.emit(keyEvent('key.deleted', key, context.now()));
      return { text: `Key ${id} deleted\n`, json: { id, deleted: true } };
    }
    case 'usage':
      return usage(context, accountId(first), values);
    default:
      throw new CliInputError(`unknown command '${command.words.join(' ')}'`);
  }
}

/** A `key.created` or `key.deleted` event of `key`, made by the CLI. */
function keyEvent(type: 'key.created' | 'key.deleted', key: KeyRecord, time: number): ModelSwitchEvent {
  return { type, accountId: key.accountId, keyId: key.id, actor: 'cli', time };
}

async function usage(context: CommandContext, id: string, values: CommandValues): Promise<CommandOutput> {
  const to = values.to === undefined ? utcDay(context.now()) : date(String(values.to), '--to');
  const from =
    values.from === undefined
      ? utcDay(Date.parse(`${to}T00:00:00Z`) - (DEFAULT_USAGE_DAYS - 1) * DAY_MS)
      : date(String(values.from), '--from');
  const groupBy = values['group-by'] === undefined ? DEFAULT_USAGE_GROUP_BY : grouping(String(values['group-by']));
  const rows = await context.store.getUsage(id, { from, to });
  const groups = new Map<string, { group: string; requests: number; promptTokens: number; completionTokens: number; cost: number }>();
  for (const row of rows) {
    const group = groupOf(row, groupBy);
    const total = groups.get(group) ?? { group, requests: 0, promptTokens: 0, completionTokens: 0, cost: 0 };
    total.requests += row.requests;
    total.promptTokens += row.promptTokens;
    total.completionTokens += row.completionTokens;
    total.cost += row.cost;
    groups.set(group, total);
  }
  const totals = [...groups.values()]
    .map((total) => ({ ...total, cost: Math.round(total.cost * 1e10) / 1e10 }))
    .sort((a, b) => (groupBy === 'key' ? Number(a.group) - Number(b.group) : a.group < b.group ? -1 : a.group > b.group ? 1 : 0));
  const json = {
    accountId: id,
    from,
    to,
    groupBy,
    rows: totals.map(({ group, ...total }) => ({ [groupBy]: groupBy === 'key' ? Number(group) : group, ...total })),
  };
  const table = [
    [groupBy.toUpperCase(), 'REQUESTS', 'PROMPT TOKENS', 'COMPLETION TOKENS', 'USD'],
    ...totals.map((total) => [total.group, total.requests, total.promptTokens, total.completionTokens, total.cost].map(String)),
  ];
  const text =
    totals.length === 0 ? `No usage for ${id} from ${from} to ${to}\n` : `Usage of ${id} from ${from} to ${to}\n${columns(table)}`;
  return { text, json };
}

function groupOf(row: UsageRow, groupBy: Grouping): string {
  if (groupBy === 'key') return String(row.keyId);
  if (groupBy === 'model') return row.model;
  return row.date;
}

async function allKeys(store: KeyStore, accountId: string, type: KeyType): Promise<KeyRecord[]> {
  const keys: KeyRecord[] = [];
  let after: number | undefined;
  for (;;) {
    const page = await store.listKeys(accountId, { type, limit: LIST_PAGE_SIZE, ...(after === undefined ? {} : { after }) });
    keys.push(...page.keys);
    if (!page.hasMore || page.keys.length === 0) return keys;
    after = page.keys[page.keys.length - 1]?.id;
  }
}

async function requireAccount(store: KeyStore, id: string): Promise<AccountRecord> {
  const account = await store.getAccount(id);
  if (account === null) throw new CliNotFoundError(`no account ${id}`);
  return account;
}

function accountId(value: string): string {
  if (!/^[\w.:@-]{1,128}$/.test(value)) throw new CliInputError('an account id is 1–128 characters of letters, digits, _ . : @ -');
  return value;
}

function keyId(value: string): number {
  const id = /^[1-9]\d{0,15}$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(id)) throw new CliInputError('a key id is a positive integer (see keys list)');
  return id;
}

function keyType(value: string): KeyType {
  if (value !== 'proxy' && value !== 'billing') throw new CliInputError('--type must be proxy or billing');
  return value;
}

function grouping(value: string): Grouping {
  const found = GROUPINGS.find((candidate) => candidate === value);
  if (found === undefined) throw new CliInputError(`--group-by must be ${GROUPINGS.join(', ')}`);
  return found;
}

function date(value: string, option: string): string {
  if (!isUtcDate(value)) throw new CliInputError(`${option} must be a UTC date written YYYY-MM-DD`);
  return value;
}

/** A decimal USD amount: `10`, `2.50`, `-3` (when negative amounts are allowed). */
function usd(value: string, name: string, allowNegative: boolean): number {
  const pattern = allowNegative ? /^-?\d{1,13}(\.\d{1,10})?$/ : /^\d{1,13}(\.\d{1,10})?$/;
  const amount = pattern.test(value) ? Number(value) : Number.NaN;
  if (!Number.isFinite(amount) || Math.abs(amount) > 1e12 || (!allowNegative && amount <= 0)) {
    throw new CliInputError(`${name} must be ${allowNegative ? 'an amount' : 'an amount above 0'} in USD, at most 1e12 (e.g. 10 or 2.50)`);
  }
  return amount;
}

function accountJson(account: AccountRecord) {
  return {
    id: account.id,
    balance: account.balance,
    reserved: account.reserved,
    isFreeTier: account.isFreeTier,
    createdAt: isoTime(account.createdAt),
  };
}

function accountText(account: AccountRecord): string {
  return columns([
    ['account', account.id],
    ['balance', `${account.balance} USD`],
    ['reserved', `${account.reserved} USD (held by requests in flight)`],
    ['free tier', account.isFreeTier ? 'yes' : 'no'],
    ['created', isoTime(account.createdAt)],
  ]);
}

function entryJson(entry: LedgerEntry) {
  return {
    id: entry.id,
    type: entry.type,
    amount: entry.amount,
    balanceAfter: entry.balanceAfter,
    reference: entry.reference,
    note: entry.note,
    createdAt: isoTime(entry.createdAt),
  };
}

function keyJson(key: KeyRecord, now: number) {
  return { ...publicKey(key, now), type: key.type, accountId: key.accountId };
}

function keysText(keys: readonly KeyRecord[], now: number): string {
  if (keys.length === 0) return 'No keys\n';
  return columns([
    ['ID', 'TYPE', 'PREFIX', 'ACTIVE', 'USAGE', 'LIMIT', 'LAST USED', 'NAME'],
    ...keys.map((key) => {
      const shown = publicKey(key, now);
      return [
        String(key.id),
        key.type,
        key.prefix,
        key.active ? 'yes' : 'no',
        String(shown.usage),
        key.limit === null ? '-' : `${key.limit}${key.limitReset ? `/${key.limitReset}` : ''}`,
        shown.lastUsedAt ?? 'never',
        key.name,
      ];
    }),
  ]);
}

/** Rows as left-aligned columns, two spaces apart. */
function columns(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) {
    for (const [index, cell] of row.entries()) widths[index] = Math.max(widths[index] ?? 0, cell.length);
  }
  return rows
    .map((row) => `${row.map((cell, index) => (index === row.length - 1 ? cell : cell.padEnd(widths[index] ?? 0))).join('  ')}\n`)
    .join('');
}
