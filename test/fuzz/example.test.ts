import fc from 'fast-check';
import { afterAll, beforeAll, describe, it, vi } from 'vitest';
import { type RunningGateway, startGateway as startExample } from '../../examples/gateway.js';
import * as gen from './arbitraries.js';
import { checkProperty } from './fuzz-run.js';
import { send } from './http.js';
import { inferenceRoutes, keysRoutes } from './routes.js';
import { type FuzzWorld, createWorld, printStats, runCase } from './world.js';

/**
 * The example gateway (`npm run example`, on the in-memory store and its offline mock upstream),
 * fed requests to any path: its management API, its inference API and everything else (its own
 * 404). Log lines are what it writes to the console. See world.ts for the properties.
 */
describe('fuzz: the example gateway', () => {
  let world: FuzzWorld;
  let example: RunningGateway;

  beforeAll(async () => {
    world = await createWorld();
    // The example's mock upstream marks its answers; its own 4xx errors pass through the proxy unchanged.
    world.isUpstreamAnswer = (answer) => answer.headers['x-modelswitch-mock'] === 'true';
    // The offline mock upstream, whatever the environment says.
    vi.stubEnv('OPENAI_API_KEY', '');
    for (const level of ['log', 'info', 'warn', 'error'] as const) {
      vi.spyOn(console, level).mockImplementation((...args: unknown[]) => {
        world.consoleLines.push(args.map(String).join(' '));
      });
    }
    example = await startExample({ port: 0, store: world.store, log: () => {} });
    world.keys.push(example.billingKey);
    const record = await world.store.getKeyByHandle(example.billingKey.slice(3, 13));
    if (record) world.accountIds.push(record.accountId);
  });
  afterAll(async () => {
    await example?.close();
    vi.restoreAllMocks();
    vi.unstubAllEnvs();
    printStats(world, 'example answers');
  });

  it('answers every request with a 2xx or the error JSON, never a 5xx but a store outage, never a key; refused requests change nothing', async () => {
    const port = Number(new URL(example.url).port);
    const keys = keysRoutes(world);
    const inference = inferenceRoutes(world);
    const anywhere = fc
      .tuple(fc.array(gen.segment, { maxLength: 3 }), gen.method)
      .map(([segments, method]) => ({ path: `/${segments.join('/')}`, method }));
    const requests = fc.oneof(
      gen.request({
        route: keys.route,
        authorization: fc.constant(undefined).chain(() => gen.authorization(example.billingKey, world.keys)),
        headers: gen.headers(world.keys),
        body: keys.body,
      }),
      gen.request({
        route: inference.route,
        authorization: fc.constant(undefined).chain(() => gen.authorization(world.main.proxyKey, world.keys)),
        headers: gen.headers(world.keys),
        body: inference.body,
      }),
      gen.request({
        route: anywhere,
        authorization: fc.constant(undefined).chain(() => gen.authorization(world.main.proxyKey, world.keys)),
        headers: gen.headers(world.keys),
        body: gen.body(gen.jsonValue(world.keys), world.keys),
      }),
    );
    const cases = fc.record({ req: requests, outage: fc.integer({ min: 0, max: 19 }).map((n) => n === 0) });
    await checkProperty('test/fuzz/example.test.ts', cases, async ({ req, outage }) => {
      await runCase(world, port, req, outage, send);
    });
  });
});
