/** `runCli` in-process on a memory store: help for every command and the refusals of bad input (exit code 2). */
import { describe, expect, it } from 'vitest';
import { COMMANDS, commandHelp, generalHelp } from '../../src/cli/commands.js';
import { type CliIo, runCli } from '../../src/cli/run.js';
import { MemoryKeyStore } from '../../src/index.js';

async function cli(args: string[], store = new MemoryKeyStore()): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
    env: {},
    store,
    now: () => Date.UTC(2026, 2, 15),
  };
  const code = await runCli(args, io);
  return { code, stdout, stderr };
}

describe('runCli help', () => {
  it('prints the general help for --help and help (exit 0), and for no command at all (exit 2)', async () => {
    expect(await cli(['--help'])).toEqual({ code: 0, stdout: generalHelp(), stderr: '' });
    expect(await cli(['help'])).toEqual({ code: 0, stdout: generalHelp(), stderr: '' });
    expect(await cli([])).toEqual({ code: 2, stdout: generalHelp(), stderr: '' });
  });

  it.each(COMMANDS.map((command) => [command.words.join(' '), command] as const))('prints the help of %s', async (_name, command) => {
    const run = await cli([...command.words, '--help']);
    expect(run).toEqual({ code: 0, stdout: commandHelp(command), stderr: '' });
    expect(run.stdout.startsWith(`Usage: modelswitch-keys ${command.words.join(' ')}`)).toBe(true);
  });
});

describe('runCli refuses bad input with one line and exit code 2', () => {
  const cases: Array<[string[], string]> = [
    [['acount', 'create'], "unknown command 'acount create' (run modelswitch-keys --help)"],
    [['account', 'create', '--balance'], '--balance needs a value (run modelswitch-keys account create --help)'],
    [['account', 'create', '--balance', '1e3'], '--balance must be an amount in USD, at most 1e12 (e.g. 10 or 2.50)'],
    [['account', 'create', '--id', 'has space'], 'an account id is 1–128 characters of letters, digits, _ . : @ -'],
    [['account', 'create', '--name', 'x'], 'unknown option --name for account create (run modelswitch-keys account create --help)'],
    [['account', 'show'], 'account show takes ID (run modelswitch-keys account show --help)'],
    [['account', 'show', 'a', 'b'], 'account show takes ID (run modelswitch-keys account show --help)'],
    [['account', 'credit', 'a', '5'], 'account credit needs --reference (run modelswitch-keys account credit --help)'],
    [
      ['account', 'credit', 'a', '-5', '--reference', 'r'],
      'unknown option -5 for account credit (run modelswitch-keys account credit --help)',
    ],
    [['account', 'credit', 'a', '0', '--reference', 'r'], 'USD must be an amount above 0 in USD, at most 1e12 (e.g. 10 or 2.50)'],
    [['billing-key', 'create', 'a'], 'billing-key create needs --name (run modelswitch-keys billing-key create --help)'],
    [['keys', 'list', 'a', '--type', 'admin'], '--type must be proxy or billing'],
    [['keys', 'delete', '0'], 'a key id is a positive integer (see keys list)'],
    [['keys', 'deactivate', '1.5'], 'a key id is a positive integer (see keys list)'],
    [['usage', 'a', '--from', '2026-02-30'], '--from must be a UTC date written YYYY-MM-DD'],
    [['usage', 'a', '--group-by', 'hour'], '--group-by must be day, key, model'],
    [['migrate', 'now'], 'migrate takes no arguments (run modelswitch-keys migrate --help)'],
    [
      ['keys', 'list', 'a', '--ms-AbCdEfGhIjKlMnOp'],
      'unknown option --ms-AbCd…redacted for keys list (run modelswitch-keys keys list --help)',
    ],
  ];
  it.each(cases)('%j', async (args, message) => {
    expect(await cli(args)).toEqual({ code: 2, stdout: '', stderr: `modelswitch-keys: ${message}\n` });
  });
});

describe('runCli on a store', () => {
  it('creates an account with a negative opening balance (an adjustment) and shows the --json account', async () => {
    const store = new MemoryKeyStore();
    const created = await cli(['account', 'create', '--id', 'team-1', '--balance=-2.5', '--json'], store);
    expect(created).toEqual({
      code: 0,
      stdout: `${JSON.stringify({ id: 'team-1', balance: -2.5, reserved: 0, isFreeTier: false, createdAt: '2026-03-15T00:00:00Z' }, null, 2)}\n`,
      stderr: '',
    });
    expect((await store.listLedger('team-1', { limit: 10 })).entries.map((entry) => [entry.type, entry.amount, entry.reference])).toEqual([
      ['adjustment', -2.5, 'opening'],
    ]);
  });

  it('refuses an account id that exists already (exit code 2), changing nothing', async () => {
    const store = new MemoryKeyStore();
    await cli(['account', 'create', '--id', 'team-1', '--balance', '3'], store);
    expect(await cli(['account', 'create', '--id', 'team-1', '--balance', '5'], store)).toEqual({
      code: 2,
      stdout: '',
      stderr: 'modelswitch-keys: account team-1 exists already\n',
    });
    expect((await store.getAccount('team-1'))?.balance).toBe(3);
  });

  it('prints a new billing key in full (the only output that holds a key), as text and as JSON', async () => {
    const store = new MemoryKeyStore();
    await cli(['account', 'create', '--id', 'team-1'], store);
    const text = await cli(['billing-key', 'create', 'team-1', '--name', 'ops'], store);
    expect(text.stdout).toMatch(/^Billing key 1 "ops" for account team-1, shown once \(only its hash is stored\):\nmk-[0-9A-Za-z]{38}\n$/);
    const json = await cli(['billing-key', 'create', 'team-1', '--name', 'ci', '--json'], store);
    expect(JSON.parse(json.stdout)).toMatchObject({
      id: 2,
      name: 'ci',
      type: 'billing',
      accountId: 'team-1',
      key: expect.stringMatching(/^mk-[0-9A-Za-z]{38}$/),
    });
  });
});
