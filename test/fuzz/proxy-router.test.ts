import fc from 'fast-check';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { type MockUpstream, startTestUpstream } from '../proxy/mock-upstream.js';
import * as gen from './arbitraries.js';
import { FRAMEWORKS, type Framework, proxyApps } from './apps.js';
import { checkProperty } from './fuzz-run.js';
import { inferenceRoutes } from './routes.js';
import { type Listening, listen, send } from './http.js';
import { type FuzzWorld, createWorld, printStats, runCase } from './world.js';

/**
 * proxyRouter in front of a mock upstream (behind modelSwitchAuth, and alone), fed random
 * inference requests: every OpenAI route and others, bodies from the routes' own fields (models
 * served, unpriced and unknown, output caps and `n` at the edges, streams) to hostile ones. Besides
 * the properties of world.ts: spend is settled after every answer (no hold is left), and a refused
 * request never reaches the upstream.
 */
describe('fuzz: proxyRouter', () => {
  let world: FuzzWorld;
  let upstream: MockUpstream;
  const servers = {} as Record<Framework, Listening>;

  beforeAll(async () => {
    world = await createWorld();
    upstream = await startTestUpstream();
    const { apps } = proxyApps(world, upstream.url);
    for (const framework of FRAMEWORKS) servers[framework] = await listen(apps[framework]);
  });
  afterAll(async () => {
    printStats(world, 'proxyRouter answers');
    for (const framework of FRAMEWORKS) await servers[framework]?.close();
    await upstream?.close();
  });

  it('answers every request with a 2xx or the error JSON, never a 5xx but a store outage, never a key; refused requests change nothing and reach no upstream', async () => {
    const { route, body } = inferenceRoutes(world);
    const requests = gen.request({
      route,
      authorization: fc.constant(undefined).chain(() => gen.authorization(world.main.proxyKey, world.keys)),
      headers: gen.headers(world.keys),
      body,
    });
    const cases = fc.record({
      req: requests,
      framework: fc.constantFrom(...FRAMEWORKS),
      outage: fc.integer({ min: 0, max: 19 }).map((n) => n === 0),
    });
    await checkProperty('test/fuzz/proxy-router.test.ts', cases, async ({ req, framework, outage }) => {
      const sentUpstream = upstream.requests.length;
      const answer = await runCase(world, servers[framework].port, req, outage, send);
      if (answer.status >= 400) {
        const reached = upstream.requests.slice(sentUpstream).map((r) => `${r.method} ${r.url}`);
        if (reached.length > 0) throw new Error(`a refused request (${answer.status}) reached the upstream: ${reached.join(', ')}`);
      }
      for (const received of upstream.requests.slice(sentUpstream)) {
        const text = JSON.stringify(received);
        const found = [...world.keys].filter((key) => text.includes(key.slice(13, 35)));
        if (found.length > 0) throw new Error('a key reached the upstream');
      }
    });
  });
});
