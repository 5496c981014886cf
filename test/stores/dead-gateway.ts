/**
 * The dead-gateway scenario of the several-processes tests (Redis and PostgreSQL): a key (limit
 * $0.3) and an account ($0.25) that one stream's $0.236 reservation pins both; a gateway process
 * (upstream timeout 5 s + hold margin 1 s: its hold's deadline is 6 s after its fixed clock)
 * reserves for a stream and is killed with SIGKILL mid-stream, so nobody settles. Every process
 * runs on a fixed clock, so "after the deadline" is a process started 6 s later on the clock: no
 * test waits for it.
 */
import type { ChildProcess } from 'node:child_process';
import { expect, vi } from 'vitest';
import type { KeyHasher, KeyStore } from '../../src/index.js';
import { type SeededAccount, seedAccount } from '../helpers.js';
import { chat, deferred } from '../proxy/harness.js';
import type { MockUpstream } from '../proxy/mock-upstream.js';
import type { HoldOptions } from './gateway-processes.js';

/** What a gateway process of either test file offers this scenario. */
export interface GatewayLike {
  child: ChildProcess;
  v1: string;
  stderr: string[];
}

/** The test file's store, processes and mock upstream. */
export interface DeadGatewayWorld {
  store: KeyStore;
  hasher: KeyHasher;
  /** The fixed clock of the running processes (GATEWAY_NOW). */
  now: number;
  mock: MockUpstream;
  /** Starts one more gateway process with these variables (GATEWAY_NOW, GATEWAY_HOLDS) added. */
  start(env: Record<string, string>): Promise<GatewayLike>;
  stop(child: ChildProcess): Promise<number | string | null>;
  /** The file's running processes, on the fixed clock: at least two. */
  running: readonly GatewayLike[];
}

/** The doomed process's hold options: its deadline is `DEADLINE_MS` after its clock. */
const DOOMED_HOLDS: HoldOptions = { timeoutMs: 5000, holdMarginMs: 1000 };
const DEADLINE_MS = 6000;
/** The stream's reservation: 100 output tokens and its prompt estimated from the body's bytes. */
const STREAM_RESERVED = 0.236;
/** What the mock's usage (12 prompt + 8 completion tokens) costs. */
const COST = 0.028;

function send(gateway: GatewayLike, key: string, stream = false): Promise<Response> {
  return fetch(`${gateway.v1}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(chat({ stream })),
  });
}

async function pinned(world: DeadGatewayWorld, seeded: SeededAccount) {
  const key = await world.store.getKey(seeded.proxyKeyId);
  const account = await world.store.getAccount(seeded.account.id);
  return { keyReserved: key?.reserved, accountReserved: account?.reserved, balance: account?.balance };
}

/** Seeds the key and account, kills a gateway mid-stream, and checks its hold pins both until the deadline. */
async function killedMidStream(world: DeadGatewayWorld): Promise<SeededAccount> {
  const { store, mock } = world;
  const seeded = await seedAccount(store, { hasher: world.hasher, balance: 0.25, now: world.now });
  await store.updateKey(seeded.proxyKeyId, { limit: 0.3 });
  const doomed = await world.start({ GATEWAY_NOW: String(world.now), GATEWAY_HOLDS: JSON.stringify(DOOMED_HOLDS) });
  const gate = deferred();
  mock.behaviour = { holdBeforeFirstChunk: gate.promise };
  try {
    const streaming = await send(doomed, seeded.proxyKey, true);
    expect(streaming.status).toBe(200);
    doomed.child.kill('SIGKILL');
    expect(await world.stop(doomed.child)).toBe('SIGKILL');
  } finally {
    gate.resolve();
    mock.behaviour = {};
  }
  expect(await pinned(world, seeded)).toEqual({ keyReserved: STREAM_RESERVED, accountReserved: STREAM_RESERVED, balance: 0.25 });
  // Before the deadline the dead process's hold still counts on every other process.
  const refused = await send(world.running[1] as GatewayLike, seeded.proxyKey);
  expect({ status: refused.status, code: ((await refused.json()) as { error: { code: string } }).error.code }).toEqual({
    status: 403,
    code: 'spend_limit_reached',
  });
  return seeded;
}

/** Only the request served after the deadline is charged, nothing stays held, and the ledger says so. */
async function expectOnlyTheServedRequestCharged(world: DeadGatewayWorld, seeded: SeededAccount): Promise<void> {
  const key = await world.store.getKey(seeded.proxyKeyId);
  const account = await world.store.getAccount(seeded.account.id);
  expect({ keyReserved: key?.reserved, accountReserved: account?.reserved }).toEqual({ keyReserved: 0, accountReserved: 0 });
  expect(key?.usage).toBeCloseTo(COST, 10);
  expect(account?.balance).toBeCloseTo(0.25 - COST, 10);
  const entries = (await world.store.listLedger(seeded.account.id, { limit: 10 })).entries;
  expect(entries.map((entry) => [entry.type, entry.amount])).toEqual([
    ['usage', -COST],
    ['credit', 0.25],
  ]);
}

/** After the deadline, a process's next reservation of the key releases the dead hold (once) and serves the request. */
export async function releasedByTheNextRequest(world: DeadGatewayWorld): Promise<void> {
  const seeded = await killedMidStream(world);
  const later = await world.start({ GATEWAY_NOW: String(world.now + DEADLINE_MS) });
  const served = await send(later, seeded.proxyKey, true);
  expect(served.status).toBe(200);
  // Read to its end: a stream's last byte follows its settlement.
  expect(await served.text()).toContain('data: [DONE]');
  expect(await world.stop(later.child)).toBe(0);
  expect(later.stderr).toEqual([]);
  await expectOnlyTheServedRequestCharged(world, seeded);
}

/** After the deadline, a process's sweeper frees the key's full limit and the account's whole balance with no request at all. */
export async function releasedByASweeper(world: DeadGatewayWorld): Promise<void> {
  const seeded = await killedMidStream(world);
  const sweeping = await world.start({
    GATEWAY_NOW: String(world.now + DEADLINE_MS),
    GATEWAY_HOLDS: JSON.stringify({ holdSweepIntervalMs: 20 } satisfies HoldOptions),
  });
  await vi.waitFor(async () => expect(await pinned(world, seeded)).toEqual({ keyReserved: 0, accountReserved: 0, balance: 0.25 }), {
    timeout: 5000,
    interval: 20,
  });
  // A stream, read to its end: its last byte follows its settlement. (A JSON answer's Content-Length
  // lets the client finish reading before the gateway has settled it.)
  const served = await send(world.running[2] as GatewayLike, seeded.proxyKey, true);
  expect(served.status).toBe(200);
  expect(await served.text()).toContain('data: [DONE]');
  await expectOnlyTheServedRequestCharged(world, seeded);
  expect(await world.stop(sweeping.child)).toBe(0);
  expect(sweeping.stderr).toEqual([
    'warn: modelswitch-keys: released 1 expired spend holds (requests whose gateway stopped before settling them)',
  ]);
}
