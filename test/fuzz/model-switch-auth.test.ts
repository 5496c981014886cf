import fc from 'fast-check';
import { afterAll, beforeAll, describe, it } from 'vitest';
import * as gen from './arbitraries.js';
import { FRAMEWORKS, type Framework, managementApps } from './apps.js';
import { checkProperty } from './fuzz-run.js';
import { type Listening, listen, send } from './http.js';
import { type FuzzWorld, createWorld, printStats, runCase } from './world.js';

/**
 * modelSwitchAuth (with keyInfoRoute and a host route behind it) under every framework, fed
 * Authorization headers of every shape: each key of the world (active, deactivated, expired,
 * rate-limited, another account's, a billing key), broken checksums, other schemes, junk,
 * duplicated headers, keys in the query. See world.ts for the properties.
 */
describe('fuzz: modelSwitchAuth', () => {
  let world: FuzzWorld;
  const servers = {} as Record<Framework, Listening>;

  beforeAll(async () => {
    world = await createWorld();
    const apps = managementApps(world);
    for (const framework of FRAMEWORKS) servers[framework] = await listen(apps[framework]);
  });
  afterAll(async () => {
    printStats(world, 'modelSwitchAuth answers');
    for (const framework of FRAMEWORKS) await servers[framework]?.close();
  });

  it('answers every request with a 2xx or the error JSON, never a 5xx but a store outage, never a key; refused requests change nothing', async () => {
    const known = world.keys;
    const route = fc.tuple(
      fc.oneof(
        { weight: 4, arbitrary: fc.constantFrom('/v1/auth/key', '/v1/whoami', '/v1/whoami/', '/v1/auth/key/') },
        { weight: 1, arbitrary: fc.array(gen.segment, { minLength: 1, maxLength: 3 }).map((s) => `/v1/${s.join('/')}`) },
        { weight: 1, arbitrary: fc.constantFrom('/v1', '/v1/', '/V1/auth/key', '/v1//auth/key', '/v1/auth/%6Bey') },
      ),
      fc.oneof({ weight: 6, arbitrary: fc.constant('GET') }, { weight: 1, arbitrary: gen.method }),
    );
    const authorization = fc
      .constant(undefined)
      .chain(() =>
        fc.oneof(
          { weight: 1, arbitrary: gen.authorization(world.main.proxyKey, world.keys) },
          { weight: 1, arbitrary: fc.constantFrom(...world.keys).map((key) => `Bearer ${key}`) },
        ),
      );
    const requests = gen
      .request({
        route: fc
          .tuple(route, gen.query(['x', 'x', 'x', 'x', 'access_token', 'api_key', 'key', 'token'], known))
          .map(([[path, method], query]) => ({
            path: path + query,
            method,
          })),
        authorization,
        headers: gen.headers(known),
        body: fc.oneof({ weight: 4, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: gen.body(gen.jsonValue(known), known) }),
      })
      .chain((req) =>
        // Sometimes a second Authorization header (RFC 9110: a request must not carry two).
        fc
          .oneof(
            { weight: 9, arbitrary: fc.constant(null) },
            { weight: 1, arbitrary: fc.constantFrom(...world.keys).map((key) => `Bearer ${key}`) },
          )
          .map((second) => (second === null ? req : { ...req, headers: [...req.headers, ['authorization', second] as [string, string]] })),
      );
    const cases = fc.record({
      req: requests,
      framework: fc.constantFrom(...FRAMEWORKS),
      outage: fc.integer({ min: 0, max: 19 }).map((n) => n === 0),
    });
    await checkProperty('test/fuzz/model-switch-auth.test.ts', cases, async ({ req, framework, outage }) => {
      await runCase(world, servers[framework].port, req, outage, send);
    });
  });
});
