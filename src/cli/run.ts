import { parseArgs } from 'node:util';
import { ConfigurationError } from '../errors/configuration-error.js';
import { redactKeys } from '../errors/redact.js';
import type { EventHandler, ModelSwitchEvent } from '../events/events.js';
import { errorText } from '../log.js';
import type { KeyStore } from '../store/types.js';
import {
  COMMANDS,
  type CliCommand,
  type CliOption,
  EXIT_NOT_FOUND,
  EXIT_OK,
  EXIT_STORE,
  EXIT_USAGE,
  GLOBAL_OPTIONS,
  commandHelp,
  generalHelp,
} from './commands.js';
import { CliInputError, CliNotFoundError } from './errors.js';
import { type CommandValues, runCommand } from './handlers.js';
import { type CliStore, openStore } from './open-store.js';

/**
 * Where the CLI reads its environment and writes its output: the process's in the bin, buffers in
 * tests.
 */
export interface CliIo {
  /** Writes text to standard output (the text ends with a newline). */
  stdout(text: string): void;
  /** Writes text to standard error (the text ends with a newline). */
  stderr(text: string): void;
  /** The environment: `MODELSWITCH_STORE` names the store when `--store` is not given. */
  env: Readonly<Record<string, string | undefined>>;
  /** A store to use instead of opening `--store` (tests, or a host embedding the CLI). Not closed by the CLI. */
  store?: KeyStore;
  /** The clock (epoch ms). Default `Date.now`. */
  now?: () => number;
  /**
   * Receives the changes a command made (`key.created` by `billing-key create`, `key.updated` by
   * `keys deactivate`, `key.deleted` by `keys delete`, `account.credited` by `account credit`), actor
   * `cli`, after the command's output was written and before `runCli` answers: a promise it returns
   * is awaited, so a process that exits on the answer loses nothing. What it throws (or its promise
   * rejecting) is one line on `stderr` and changes neither the output nor the exit code.
   */
  onEvent?: EventHandler;
}

/** Every option any command takes, so the first pass reads values wherever they stand. */
const ALL_OPTIONS: Record<string, CliOption> = Object.assign({}, GLOBAL_OPTIONS, ...COMMANDS.map((command) => command.options));

type ParseArgsOptions = NonNullable<Parameters<typeof parseArgs>[0]>['options'];

function parseOptions(options: Readonly<Record<string, CliOption>>): ParseArgsOptions {
  return Object.fromEntries(Object.entries(options).map(([name, option]) => [name, { type: option.type }]));
}

/** The command named by the first positionals, or `undefined`. */
function findCommand(positionals: readonly string[]): CliCommand | undefined {
  return COMMANDS.find((command) => command.words.every((word, index) => positionals[index] === word));
}

/**
 * Runs the `modelswitch-keys` CLI on `argv` (the arguments after the bin's name) and answers its
 * exit code: 0 done, 1 the account or key does not exist, 2 bad input, 3 the store failed. Errors
 * are one line on `io.stderr`, never a stack trace, and every line written goes through
 * `redactKeys` except the one that prints a new billing key.
 *
 * @example
 * ```ts
 * const code = await runCli(['account', 'create', '--balance', '10', '--json'], {
 *   stdout: (text) => process.stdout.write(text),
 *   stderr: (text) => process.stderr.write(text),
 *   env: process.env,
 * });
 * ```
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const fail = (code: number, message: string): number => {
    io.stderr(`modelswitch-keys: ${redactKeys(message)}\n`);
    return code;
  };
  let first: ReturnType<typeof parseArgs>;
  try {
    first = parseArgs({ args: [...argv], options: parseOptions(ALL_OPTIONS), allowPositionals: true, strict: false });
  } catch (error) {
    return fail(EXIT_USAGE, parseErrorMessage(error, undefined));
  }
  const command = findCommand(first.positionals);
  if (command === undefined) {
    if (first.positionals.length === 0 || first.positionals[0] === 'help') {
      io.stdout(generalHelp());
      return first.positionals.length === 0 && first.values.help !== true ? EXIT_USAGE : EXIT_OK;
    }
    return fail(EXIT_USAGE, `unknown command '${first.positionals.slice(0, 2).join(' ')}' (run modelswitch-keys --help)`);
  }
  const name = command.words.join(' ');
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: parseOptions({ ...GLOBAL_OPTIONS, ...command.options }),
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    return fail(EXIT_USAGE, parseErrorMessage(error, name));
  }
  if (parsed.values.help === true) {
    io.stdout(commandHelp(command));
    return EXIT_OK;
  }
  const positionals = parsed.positionals.slice(command.words.length);
  if (positionals.length !== command.positionals.length) {
    const expected = command.positionals.length === 0 ? 'no arguments' : command.positionals.join(' ');
    return fail(EXIT_USAGE, `${name} takes ${expected} (run modelswitch-keys ${name} --help)`);
  }
  for (const option of command.required ?? []) {
    if (parsed.values[option] === undefined) return fail(EXIT_USAGE, `${name} needs --${option} (run modelswitch-keys ${name} --help)`);
  }
  const values = parsed.values as CommandValues;
  let opened: CliStore | undefined;
  try {
    if (io.store === undefined) {
      opened = await openStore({
        url: stringValue(values.store) ?? io.env.MODELSWITCH_STORE,
        prefix: stringValue(values.prefix),
        schema: stringValue(values.schema),
      });
    }
    const store = io.store ?? (opened as CliStore).store;
    const events: ModelSwitchEvent[] = [];
    const output = await runCommand(command, positionals, values, {
      store,
      migrate: opened?.migrate ?? (async () => ({ line: 'The given store needs no migration', json: { applied: [] } })),
      now: io.now ?? Date.now,
      emit: (event) => events.push(event),
    });
    const text = values.json === true ? `${JSON.stringify(output.json, null, 2)}\n` : output.text;
    io.stdout(output.holdsNewKey === true ? text : redactKeys(text));
    await deliverEvents(events, values.events === true, io);
    return EXIT_OK;
  } catch (error) {
    if (error instanceof CliInputError || error instanceof ConfigurationError) return fail(EXIT_USAGE, error.message);
    if (error instanceof CliNotFoundError) return fail(EXIT_NOT_FOUND, error.message);
    // A store's own argument checks throw TypeError before anything is written: bad input too.
    if (error instanceof TypeError && !isConnectionError(error)) return fail(EXIT_USAGE, error.message);
    return fail(EXIT_STORE, storeFailureMessage(error, values));
  } finally {
    await opened?.close().catch(() => {});
  }
}

/**
 * Hands each event to `io.onEvent` (awaited: the command is done, and the bin exits on the answer)
 * and, with `--events`, writes it as one JSON line on stderr. A failing handler is one line on
 * stderr; the command succeeded all the same.
 */
async function deliverEvents(events: readonly ModelSwitchEvent[], print: boolean, io: CliIo): Promise<void> {
  for (const event of events) {
    if (print) io.stderr(`${redactKeys(JSON.stringify(event))}\n`);
    if (io.onEvent === undefined) continue;
    try {
      await io.onEvent(event);
    } catch (error) {
      io.stderr(`modelswitch-keys: ${redactKeys(`the onEvent handler failed on ${event.type} (cli): ${errorText(error)}`)}\n`);
    }
  }
}

function stringValue(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** parseArgs' messages explain `--` at length; one short line says what was wrong. */
function parseErrorMessage(error: unknown, command: string | undefined): string {
  const help = command === undefined ? 'modelswitch-keys --help' : `modelswitch-keys ${command} --help`;
  const code = (error as { code?: unknown }).code;
  const message = error instanceof Error ? error.message : String(error);
  const option = /'(-[^' ]*)/.exec(message)?.[1];
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') return `unknown option ${option ?? ''}${command ? ` for ${command}` : ''} (run ${help})`;
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') return `${option ?? 'an option'} needs a value (run ${help})`;
  return `${message.split('\n')[0]} (run ${help})`;
}

/** pg reports an unreachable server with connection error codes, some on a TypeError-free Error; Redis likewise. */
function isConnectionError(error: TypeError): boolean {
  return typeof (error as { code?: unknown }).code === 'string';
}

/** One line for a store failure: what failed, never the URL (it may hold a password). */
function storeFailureMessage(error: unknown, values: CommandValues): string {
  const code = (error as { code?: unknown }).code;
  // PostgreSQL: undefined_table / invalid_schema_name: the schema was never migrated.
  if (code === '42P01' || code === '3F000') {
    const schema = stringValue(values.schema);
    return `the PostgreSQL schema${schema ? ` ${schema}` : ''} is not migrated: run modelswitch-keys migrate`;
  }
  return `the store failed: ${describeError(error)}`;
}

function describeError(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) return describeError(error.errors[0]);
  if (error instanceof Error) {
    const message = error.message.split('\n')[0] ?? '';
    if (message !== '') return message;
    const code = (error as { code?: unknown }).code;
    return typeof code === 'string' ? code : error.name;
  }
  return String(error);
}
