/**
 * The built `modelswitch-keys` bin, run as a process against real Redis and PostgreSQL: every
 * command, its JSON and text output, its exit codes, and errors as one line without a key.
 */
import request from 'supertest';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_KEY_PATTERN, KeyvKeyStore, type KeyStore, keysRouter } from '../../src/index.js';
import { PostgresKeyStore } from '../../src/store/postgres/index.js';
import { sampleKeyRecord } from '../../src/testing/index.js';
import { DATABASE_URL, dropSchema, postgresSkipReason, testSchema } from '../stores/postgres-env.js';
import { REDIS_URL, redisKeyv, redisSkipReason, removeKeys, runPrefix } from '../stores/redis-env.js';
import { type BinRun, ensureBuilt, runBin } from './built-bin.js';

/** A store the bin and this test both reach: the bin's --store arguments and the same store in-process. */
interface Target {
  name: string;
  skip: string | undefined;
  args: () => string[];
  open: () => KeyStore;
  setUp: () => Promise<void>;
  tearDown: () => Promise<void>;
}

const prefix = runPrefix();
const schema = testSchema();
const TARGETS: Target[] = [
  {
    name: 'Redis',
    skip: redisSkipReason,
    args: () => ['--store', REDIS_URL as string, '--prefix', prefix],
    open: () => new KeyvKeyStore(redisKeyv(REDIS_URL as string), { prefix }),
    setUp: async () => {},
    tearDown: async () => {
      await removeKeys(REDIS_URL as string, prefix);
    },
  },
  {
    name: 'PostgreSQL',
    skip: postgresSkipReason,
    args: () => ['--store', DATABASE_URL as string, '--schema', schema],
    open: () => new PostgresKeyStore({ connectionString: DATABASE_URL as string, schema }),
    setUp: async () => {},
    tearDown: async () => {
      await dropSchema(DATABASE_URL as string, schema);
    },
  },
];

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$/;

function json(run: BinRun): unknown {
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  return JSON.parse(run.stdout);
}

/** An error as the bin must write it: one line on stderr, nothing on stdout, no stack frame. */
function expectOneLineError(run: BinRun, code: number, message: string): void {
  expect(run).toEqual({ code, stdout: '', stderr: `modelswitch-keys: ${message}\n` });
}

beforeAll(async () => {
  await ensureBuilt();
}, 120_000);

describe.each(TARGETS)('modelswitch-keys on $name', (target) => {
  const skip = target.skip;
  let store: KeyStore;
  const bin = (...args: string[]) => runBin([...args, ...target.args()]);

  beforeAll(async () => {
    if (skip) return;
    await target.setUp();
    store = target.open();
  });
  afterAll(async () => {
    if (skip) return;
    await store.close?.();
    await target.tearDown();
  });

  it.skipIf(skip)('migrates (PostgreSQL: once, then up to date; Redis: nothing to do)', async () => {
    const first = json(await bin('migrate', '--json'));
    const again = await bin('migrate');
    if (target.name === 'Redis') {
      expect(first).toEqual({ kind: 'redis', applied: [] });
      expect(again).toEqual({ code: 0, stdout: 'Redis needs no migration: nothing to do\n', stderr: '' });
    } else {
      expect(first).toEqual({ kind: 'postgres', schema, version: 1, applied: [{ version: 1, name: expect.any(String) }] });
      expect(again).toEqual({ code: 0, stdout: `Schema ${schema} is up to date at version 1\n`, stderr: '' });
    }
  });

  it.skipIf(skip)('creates an account with an opening balance, shows it, and credits it once per reference', async () => {
    const created = json(await bin('account', 'create', '--balance', '10', '--free-tier', '--json')) as { id: string; createdAt: string };
    expect(created).toEqual({
      id: expect.stringMatching(/^acct_[\w-]{16}$/),
      balance: 10,
      reserved: 0,
      isFreeTier: true,
      createdAt: expect.stringMatching(ISO),
    });
    const id = created.id;

    expect(await bin('account', 'show', id)).toEqual({
      code: 0,
      stdout: [
        `account    ${id}`,
        'balance    10 USD',
        'reserved   0 USD (held by requests in flight)',
        'free tier  yes',
        `created    ${created.createdAt}`,
        '',
      ].join('\n'),
      stderr: '',
    });

    const credit = json(await bin('account', 'credit', id, '2.50', '--reference', 'pay_1', '--note', 'invoice 7', '--json'));
    expect(credit).toEqual({
      applied: true,
      account: { id, balance: 12.5, reserved: 0, isFreeTier: true, createdAt: created.createdAt },
      entry: {
        id: expect.any(Number),
        type: 'credit',
        amount: 2.5,
        balanceAfter: 12.5,
        reference: 'pay_1',
        note: 'invoice 7',
        createdAt: expect.stringMatching(ISO),
      },
    });
    // Already credited: nothing changed, so --events prints nothing.
    expect(await bin('account', 'credit', id, '2.50', '--reference', 'pay_1', '--events')).toEqual({
      code: 0,
      stdout: `Reference pay_1 is already in ${id}'s ledger: nothing credited, balance 12.5 USD\n`,
      stderr: '',
    });
    // The ledger holds the opening balance and one credit: the balance replays from it.
    const ledger = await store.listLedger(id, { limit: 10 });
    expect(ledger.entries.map((entry) => [entry.type, entry.amount, entry.balanceAfter, entry.reference])).toEqual([
      ['credit', 2.5, 12.5, 'pay_1'],
      ['credit', 10, 10, 'opening'],
    ]);
  });

  it.skipIf(skip)('issues a billing key printed once that the management API accepts; lists, deactivates and deletes keys', async () => {
    const { id } = json(await bin('account', 'create', '--json')) as { id: string };
    const issued = await bin('billing-key', 'create', id, '--name', 'ops');
    expect(issued.code).toBe(0);
    expect(issued.stderr).toBe('');
    const key = /^(mk-\w+)$/m.exec(issued.stdout)?.[1] as string;
    expect(key).toMatch(API_KEY_PATTERN);
    const record = await store.getKeyByHandle(key.slice(3, 13));
    expect(issued.stdout).toBe(`Billing key ${record?.id} "ops" for account ${id}, shown once (only its hash is stored):\n${key}\n`);

    const app = express().use('/api', keysRouter(store));
    const listed = await request(app).get('/api/keys').set('Authorization', `Bearer ${key}`);
    expect(listed.status).toBe(200);

    const keyId = record?.id as number;
    const list = json(await bin('keys', 'list', id, '--json'));
    expect(list).toEqual([
      {
        id: keyId,
        name: 'ops',
        prefix: key.slice(0, 7),
        active: true,
        createdAt: expect.stringMatching(ISO),
        expiresAt: null,
        lastUsedAt: expect.anything(),
        usage: 0,
        limit: null,
        limitReset: null,
        rateLimit: null,
        models: null,
        type: 'billing',
        accountId: id,
      },
    ]);
    expect(JSON.stringify(list)).not.toContain(key.slice(13));
    expect(await bin('keys', 'list', id, '--type', 'proxy')).toEqual({ code: 0, stdout: 'No keys\n', stderr: '' });

    expect(await bin('keys', 'deactivate', String(keyId))).toEqual({
      code: 0,
      stdout: `Key ${keyId} (${key.slice(0, 7)}…, "ops") deactivated\n`,
      stderr: '',
    });
    expect((await request(app).get('/api/keys').set('Authorization', `Bearer ${key}`)).status).toBe(403);
    // --events: what the command changed, one JSON line on stderr after the output, actor cli.
    const deleted = await bin('keys', 'delete', String(keyId), '--events');
    expect({ ...deleted, stderr: deleted.stderr.split('\n').map((line) => (line === '' ? line : JSON.parse(line))) }).toEqual({
      code: 0,
      stdout: `Key ${keyId} deleted\n`,
      stderr: [{ type: 'key.deleted', accountId: id, keyId, actor: 'cli', time: expect.any(Number) }, ''],
    });
    expectOneLineError(await bin('keys', 'delete', String(keyId), '--events'), 1, `no key ${keyId}`);
    expectOneLineError(await bin('keys', 'deactivate', String(keyId)), 1, `no key ${keyId}`);
  });

  it.skipIf(skip)('sums usage by day, key or model from the usage aggregates', async () => {
    const { id } = json(await bin('account', 'create', '--balance', '5', '--json')) as { id: string };
    const key = await store.insertKey(sampleKeyRecord(id, { name: 'app' }));
    const settle = (model: string, day: string, cost: number, n: number) =>
      store.settleSpend({
        keyId: key.id,
        accountId: id,
        holdId: null,
        cost,
        period: null,
        now: Date.parse(`${day}T12:00:00Z`),
        usage: { model, promptTokens: 10, completionTokens: 5, requestId: `req_${model}_${day}_${n}`, upstreamId: null },
      });
    await settle('gpt-4o-mini', '2026-03-01', 0.25, 1);
    await settle('gpt-4o-mini', '2026-03-02', 0.5, 2);
    await settle('gpt-4o', '2026-03-02', 1, 3);
    await settle('gpt-4o', '2026-04-01', 1, 4);

    expect(json(await bin('usage', id, '--from', '2026-03-01', '--to', '2026-03-31', '--group-by', 'model', '--json'))).toEqual({
      accountId: id,
      from: '2026-03-01',
      to: '2026-03-31',
      groupBy: 'model',
      rows: [
        { model: 'gpt-4o', requests: 1, promptTokens: 10, completionTokens: 5, cost: 1 },
        { model: 'gpt-4o-mini', requests: 2, promptTokens: 20, completionTokens: 10, cost: 0.75 },
      ],
    });
    expect(await bin('usage', id, '--from', '2026-03-01', '--to', '2026-04-30')).toEqual({
      code: 0,
      stdout: [
        `Usage of ${id} from 2026-03-01 to 2026-04-30`,
        'DAY         REQUESTS  PROMPT TOKENS  COMPLETION TOKENS  USD',
        '2026-03-01  1         10             5                  0.25',
        '2026-03-02  2         20             10                 1.5',
        '2026-04-01  1         10             5                  1',
        '',
      ].join('\n'),
      stderr: '',
    });
    expect(json(await bin('usage', id, '--from', '2026-03-01', '--to', '2026-04-30', '--group-by', 'key', '--json'))).toMatchObject({
      rows: [{ key: key.id, requests: 4, promptTokens: 40, completionTokens: 20, cost: 2.75 }],
    });
  });

  it.skipIf(skip)('answers an unknown account with exit code 1, and bad input with exit code 2, one line each', async () => {
    expectOneLineError(await bin('account', 'show', 'acct_nobody'), 1, 'no account acct_nobody');
    expectOneLineError(await bin('account', 'credit', 'acct_nobody', '5', '--reference', 'r'), 1, 'no account acct_nobody');
    expectOneLineError(await bin('billing-key', 'create', 'acct_nobody', '--name', 'x'), 1, 'no account acct_nobody');
    expectOneLineError(
      await bin('account', 'credit', 'acct_nobody', 'ten', '--reference', 'r'),
      2,
      'USD must be an amount above 0 in USD, at most 1e12 (e.g. 10 or 2.50)',
    );
    const pasted = 'mk-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ab';
    expectOneLineError(await bin('account', 'show', pasted), 1, 'no account mk-AbCd…redacted');
  });
});

describe('modelswitch-keys without a working store', () => {
  it('says how to name a store (exit code 2) when none is given', async () => {
    expectOneLineError(
      await runBin(['account', 'show', 'a']),
      2,
      'no store: pass --store redis://… or postgres://…, or set MODELSWITCH_STORE',
    );
    expectOneLineError(
      await runBin(['account', 'show', 'a', '--store', 'mysql://root:hunter2@db/x']),
      2,
      '--store must be a redis://, rediss://, postgres:// or postgresql:// URL',
    );
  });

  it('answers exit code 3 in one line, without the URL or its password, when the store is unreachable', async () => {
    const redis = await runBin(['account', 'show', 'a'], { MODELSWITCH_STORE: 'redis://:hunter2@127.0.0.1:1' });
    expect(redis.code).toBe(3);
    expect(redis.stdout).toBe('');
    expect(redis.stderr).toMatch(/^modelswitch-keys: the store failed: [^\n]+\n$/);
    expect(redis.stderr).not.toContain('hunter2');
    const postgres = await runBin(['account', 'show', 'a', '--store', 'postgres://postgres:hunter2@127.0.0.1:1/test']);
    expect(postgres).toEqual({ code: 3, stdout: '', stderr: 'modelswitch-keys: the store failed: connect ECONNREFUSED 127.0.0.1:1\n' });
  });

  it.skipIf(postgresSkipReason)('answers exit code 3 and says to migrate when the PostgreSQL schema was never migrated', async () => {
    expectOneLineError(
      await runBin(['account', 'show', 'a', '--store', DATABASE_URL as string, '--schema', 'ms_never_migrated']),
      3,
      'the PostgreSQL schema ms_never_migrated is not migrated: run modelswitch-keys migrate',
    );
  });

  it('prints help for the bin and for every command, exit code 0', async () => {
    const general = await runBin(['--help']);
    expect(general.code).toBe(0);
    expect(general.stdout).toMatch(/^Usage: modelswitch-keys COMMAND/);
    const help = await runBin(['billing-key', 'create', '--help']);
    expect(help).toEqual({
      code: 0,
      stdout: expect.stringMatching(/^Usage: modelswitch-keys billing-key create ACCOUNT --name NAME\n/),
      stderr: '',
    });
  });
});
