/**
 * The commands of the `modelswitch-keys` bin: their words, options and help text. One table, so
 * parsing, `--help` and the reference in docs/cli.md all follow it.
 */

/** An option of `node:util` `parseArgs`: a flag or a string value. */
export interface CliOption {
  readonly type: 'string' | 'boolean';
  /** The value's placeholder in the help (`USD`), for string options. */
  readonly value?: string;
  readonly description: string;
}

/** One command: the words that name it, its positional arguments and its own options. */
export interface CliCommand {
  /** `['account', 'create']`. */
  readonly words: readonly string[];
  /** Positional arguments after the words, in order (`['ID', 'USD']`); all required. */
  readonly positionals: readonly string[];
  readonly summary: string;
  readonly options: Readonly<Record<string, CliOption>>;
  /** Options that must be given. */
  readonly required?: readonly string[];
  /** Lines of explanation under the usage line. */
  readonly details?: readonly string[];
}

/** Options every command takes. */
export const GLOBAL_OPTIONS: Readonly<Record<string, CliOption>> = {
  store: {
    type: 'string',
    value: 'URL',
    description: 'redis://… or postgres://… (default: the MODELSWITCH_STORE environment variable)',
  },
  prefix: { type: 'string', value: 'PREFIX', description: 'Redis: the key prefix of the store (default modelswitch:)' },
  schema: { type: 'string', value: 'NAME', description: 'PostgreSQL: the schema of the store (default modelswitch)' },
  json: { type: 'boolean', description: 'print JSON (one document) instead of text' },
  events: {
    type: 'boolean',
    description: 'print what the command changed (key.created, key.updated, key.deleted, account.credited) as JSON lines on stderr',
  },
  help: { type: 'boolean', description: 'show this help' },
};

export const COMMANDS: readonly CliCommand[] = [
  {
    words: ['migrate'],
    positionals: [],
    summary: 'create or upgrade the PostgreSQL schema (Redis needs none)',
    options: {},
    details: ['Idempotent: safe to run on every deploy. Run it before the first gateway starts.'],
  },
  {
    words: ['account', 'create'],
    positionals: [],
    summary: 'create an account',
    options: {
      id: { type: 'string', value: 'ID', description: 'your own account id (default: a random acct_… id)' },
      balance: { type: 'string', value: 'USD', description: 'opening balance in USD (default 0), written to the ledger' },
      'free-tier': { type: 'boolean', description: 'mark the account as free tier' },
    },
  },
  {
    words: ['account', 'show'],
    positionals: ['ID'],
    summary: "show an account's balance and holds",
    options: {},
  },
  {
    words: ['account', 'credit'],
    positionals: ['ID', 'USD'],
    summary: "credit USD to an account's balance (a top-up)",
    options: {
      reference: {
        type: 'string',
        value: 'REF',
        description: 'idempotency reference, unique per account (a payment id): the same reference again credits nothing',
      },
      note: { type: 'string', value: 'TEXT', description: 'free text kept on the ledger entry' },
    },
    required: ['reference'],
  },
  {
    words: ['billing-key', 'create'],
    positionals: ['ACCOUNT'],
    summary: 'issue a billing key (mk-…) for the management API; the key is printed once',
    options: { name: { type: 'string', value: 'NAME', description: "the key's name, 1–100 characters" } },
    required: ['name'],
    details: ["Only the key's scrypt hash is stored: keep the printed key, it cannot be shown again."],
  },
  {
    words: ['keys', 'list'],
    positionals: ['ACCOUNT'],
    summary: "list an account's keys (never their values)",
    options: { type: { type: 'string', value: 'TYPE', description: 'proxy or billing (default: both)' } },
  },
  {
    words: ['keys', 'deactivate'],
    positionals: ['ID'],
    summary: 'deactivate a key: gateways refuse it from the next request',
    options: {},
  },
  {
    words: ['keys', 'delete'],
    positionals: ['ID'],
    summary: 'delete a key for good',
    options: {},
  },
  {
    words: ['usage'],
    positionals: ['ACCOUNT'],
    summary: "an account's metered usage per UTC day, key or model",
    options: {
      from: { type: 'string', value: 'YYYY-MM-DD', description: 'first UTC day (default: 29 days before --to)' },
      to: { type: 'string', value: 'YYYY-MM-DD', description: 'last UTC day (default: today)' },
      'group-by': { type: 'string', value: 'FIELD', description: 'day, key or model (default day)' },
    },
  },
];

/** `modelswitch-keys account credit ID USD --reference REF [--note TEXT]`. */
export function usageLine(command: CliCommand): string {
  const options = Object.entries(command.options).map(([name, option]) => {
    const text = option.type === 'string' ? `--${name} ${option.value ?? 'VALUE'}` : `--${name}`;
    return command.required?.includes(name) ? text : `[${text}]`;
  });
  return ['modelswitch-keys', ...command.words, ...command.positionals, ...options].join(' ');
}

function optionLines(options: Readonly<Record<string, CliOption>>): string[] {
  const rows = Object.entries(options).map(([name, option]) => [
    option.type === 'string' ? `--${name} ${option.value ?? 'VALUE'}` : `--${name}`,
    option.description,
  ]);
  const width = Math.max(...rows.map(([flag]) => (flag as string).length));
  return rows.map(([flag, description]) => `  ${(flag as string).padEnd(width)}  ${description}`);
}

/** The help of one command. */
export function commandHelp(command: CliCommand): string {
  const lines = [`Usage: ${usageLine(command)}`, '', `${command.summary[0]?.toUpperCase()}${command.summary.slice(1)}.`];
  if (command.details) lines.push(...command.details);
  if (Object.keys(command.options).length > 0) lines.push('', 'Options:', ...optionLines(command.options));
  lines.push('', 'Global options:', ...optionLines(GLOBAL_OPTIONS));
  return `${lines.join('\n')}\n`;
}

/** Exit codes of the bin. */
export const EXIT_OK = 0;
/** The account or key named does not exist. */
export const EXIT_NOT_FOUND = 1;
/** Bad input: an unknown command or option, a missing or malformed argument. */
export const EXIT_USAGE = 2;
/** The store failed: unreachable, timed out, refused, or a PostgreSQL schema not migrated. */
export const EXIT_STORE = 3;

/** The help of the bin as a whole. */
export function generalHelp(): string {
  const width = Math.max(...COMMANDS.map((command) => command.words.join(' ').length));
  const lines = [
    'Usage: modelswitch-keys COMMAND [arguments] [options]',
    '',
    'Manage the accounts, keys and balances of a modelswitch-keys store.',
    '',
    'Commands:',
    ...COMMANDS.map((command) => `  ${command.words.join(' ').padEnd(width)}  ${command.summary}`),
    '',
    'Global options:',
    ...optionLines(GLOBAL_OPTIONS),
    '',
    'The store is --store or MODELSWITCH_STORE: redis://[:password@]host:6379 or postgres://user@host:5432/db.',
    "Run 'modelswitch-keys COMMAND --help' for a command's arguments.",
    `Exit codes: ${EXIT_OK} done, ${EXIT_NOT_FOUND} the account or key does not exist, ${EXIT_USAGE} bad input, ${EXIT_STORE} the store failed.`,
  ];
  return `${lines.join('\n')}\n`;
}
