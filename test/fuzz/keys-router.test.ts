import fc from 'fast-check';
import { afterAll, beforeAll, describe, it } from 'vitest';
import * as gen from './arbitraries.js';
import { FRAMEWORKS, type Framework, managementApps } from './apps.js';
import { checkProperty } from './fuzz-run.js';
import { keysRoutes } from './routes.js';
import { type Listening, listen, send } from './http.js';
import { type FuzzWorld, createWorld, printStats, runCase } from './world.js';

/**
 * keysRouter (and modelSwitchAuth beside it) under every framework, fed random requests: methods,
 * paths and ids, query strings, Authorization headers, Content-Type/Encoding, and bodies from
 * the route's own fields to deep, wide, broken and binary ones. See world.ts for the properties.
 */
describe('fuzz: keysRouter', () => {
  let world: FuzzWorld;
  const servers = {} as Record<Framework, Listening>;

  beforeAll(async () => {
    world = await createWorld();
    const apps = managementApps(world);
    for (const framework of FRAMEWORKS) servers[framework] = await listen(apps[framework]);
  });
  afterAll(async () => {
    printStats(world, 'keysRouter answers');
    for (const framework of FRAMEWORKS) await servers[framework]?.close();
  });

  it('answers every request with a 2xx or the error JSON, never a 5xx but a store outage, never a key; refused requests change nothing', async () => {
    const { route, body } = keysRoutes(world);
    const requests = gen.request({
      route,
      authorization: fc.constant(undefined).chain(() => gen.authorization(world.main.billingKey, world.keys)),
      headers: gen.headers(world.keys),
      body,
    });
    const cases = fc.record({
      req: requests,
      framework: fc.constantFrom(...FRAMEWORKS),
      outage: fc.integer({ min: 0, max: 19 }).map((n) => n === 0),
    });
    await checkProperty('test/fuzz/keys-router.test.ts', cases, async ({ req, framework, outage }) => {
      await runCase(world, servers[framework].port, req, outage, send);
    });
  });
});
