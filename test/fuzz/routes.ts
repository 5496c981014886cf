import fc from 'fast-check';
import * as gen from './arbitraries.js';
import type { FuzzWorld } from './world.js';

/** A path (with its query) and a method: one that fits the path most of the time, so requests get past the 405 to the checks behind it. */
export type Route = fc.Arbitrary<{ path: string; method: string }>;

function fitting(path: fc.Arbitrary<string>, methods: string[]): fc.Arbitrary<[string, string]> {
  return fc.tuple(path, fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...methods) }, { weight: 1, arbitrary: gen.method }));
}

/** The management API's routes (`/api` by default) with its query parameters, and key bodies. */
export function keysRoutes(world: FuzzWorld, mount = '/api'): { route: Route; body: fc.Arbitrary<Buffer | undefined> } {
  const known = world.keys;
  const ids = () => world.ids;
  const futureDate = fc
    .integer({ min: -400, max: 4000 })
    .map((days) => JSON.stringify(new Date(world.clock.now() + days * 86_400_000).toISOString()));
  const duration = fc
    .tuple(fc.constantFrom('0', '1', '90', '7', '-1', '1.5', '100000'), fc.constantFrom('s', 'm', 'h', 'd', 'w', ''))
    .map(([n, unit]) => JSON.stringify(`${n}${unit}`));
  const keyFields = {
    name: fc.oneof({ weight: 2, arbitrary: fc.constant('"fuzz key"') }, { weight: 3, arbitrary: gen.jsonString(known) }),
    expires_at: fc.oneof(futureDate, gen.jsonNumber),
    limit: gen.jsonNumber,
    limit_reset: fc.constantFrom('"daily"', '"weekly"', '"monthly"', '"yearly"', 'null', '"DAILY"'),
    rate_limit: gen.routeObject({ requests: gen.jsonNumber, interval: duration, tokens: gen.jsonNumber }, known),
    active: fc.constantFrom('true', 'false', '"true"', '0', 'null'),
    models: fc.oneof(
      fc.constant('null'),
      fc.array(gen.jsonString(known), { maxLength: 3 }).map((m) => `[${m.join(',')}]`),
    ),
    grace_period: fc.oneof(duration, gen.jsonNumber),
  };
  const path = fc.oneof(
    { weight: 8, arbitrary: fitting(fc.constantFrom('/keys', '/keys/'), ['GET', 'POST']) },
    {
      weight: 12,
      arbitrary: fitting(
        gen.idText(ids).map((id) => `/keys/${id}`),
        ['GET', 'PATCH', 'PUT', 'DELETE'],
      ),
    },
    {
      weight: 1,
      arbitrary: fitting(
        gen.idText(ids).map((id) => `/keys/${id}/rotate`),
        ['POST'],
      ),
    },
    { weight: 1, arbitrary: fitting(fc.constantFrom('/account', '/transactions', '/usage', '/openapi.json', '', '/'), ['GET']) },
    {
      weight: 1,
      arbitrary: fitting(
        fc.array(gen.segment, { minLength: 1, maxLength: 4 }).map((s) => `/${s.join('/')}`),
        ['GET'],
      ),
    },
    { weight: 1, arbitrary: fitting(fc.constantFrom('//keys', '/keys//1', '/%6Beys', '/KEYS'), ['GET']) },
  );
  return {
    route: fc
      .tuple(path, gen.query(['limit', 'after', 'before', 'key_id', 'type', 'from', 'to', 'group_by'], known))
      .map(([[p, method], query]) => ({ path: mount + p + query, method })),
    body: gen.body(gen.routeObject(keyFields, known, ['name']), known),
  };
}

/** The inference API's routes (`/v1` by default), and inference bodies for the mock's models. */
export function inferenceRoutes(world: FuzzWorld, mount = '/v1'): { route: Route; body: fc.Arbitrary<Buffer | undefined> } {
  const known = world.keys;
  const tokens = fc.oneof({ weight: 2, arbitrary: fc.integer({ min: 1, max: 200 }).map(String) }, { weight: 1, arbitrary: gen.jsonNumber });
  const message = gen.routeObject(
    {
      role: fc.constantFrom('"user"', '"system"', '"assistant"', '"tool"', '"x"'),
      content: gen.jsonString(known),
      name: gen.jsonString(known),
    },
    known,
    ['role', 'content'],
  );
  const inferenceFields = {
    model: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom('"mock-model"', '"gpt-4o-mini"', '"mock-family-a"') },
      { weight: 1, arbitrary: fc.constantFrom('"mock-unpriced"', '"mock-family-b"', '"unknown-model"', '""', '"MOCK-MODEL"', '"gpt-4o"') },
      { weight: 1, arbitrary: gen.jsonString(known) },
    ),
    messages: fc.array(message, { maxLength: 3 }).map((items) => `[${items.join(',')}]`),
    prompt: gen.jsonString(known),
    input: fc.oneof(
      gen.jsonString(known),
      fc.array(gen.jsonString(known), { maxLength: 3 }).map((items) => `[${items.join(',')}]`),
    ),
    max_tokens: tokens,
    max_completion_tokens: tokens,
    max_output_tokens: tokens,
    n: fc.oneof(fc.constantFrom('1', '2', '3'), gen.jsonNumber),
    best_of: fc.oneof(fc.constantFrom('1', '2'), gen.jsonNumber),
    stream: fc.constantFrom('true', 'false', '"true"', '1', 'null'),
    stream_options: gen.routeObject({ include_usage: fc.constantFrom('true', 'false', '"yes"') }, known),
    temperature: gen.jsonNumber,
    user: gen.jsonString(known),
  };
  const path = fc.oneof(
    { weight: 12, arbitrary: fitting(fc.constantFrom('/chat/completions', '/completions', '/embeddings', '/responses'), ['POST']) },
    {
      weight: 1,
      arbitrary: fitting(fc.constantFrom('/chat/completions/', '//chat/completions', '/%63hat/completions', '/CHAT/completions'), ['POST']),
    },
    { weight: 2, arbitrary: fitting(fc.constantFrom('/models', '/auth/key', '/whoami', '/generation'), ['GET']) },
    {
      weight: 1,
      arbitrary: fitting(
        gen.segment.map((id) => `/models/${id}`),
        ['GET'],
      ),
    },
    {
      weight: 1,
      arbitrary: fitting(
        fc.array(gen.segment, { minLength: 1, maxLength: 3 }).map((s) => `/${s.join('/')}`),
        ['GET', 'POST'],
      ),
    },
  );
  return {
    route: fc
      .tuple(path, gen.query(['api-version', 'stream', 'model', 'id'], known))
      .map(([[p, method], query]) => ({ path: mount + p + query, method })),
    body: gen.body(gen.routeObject(inferenceFields, known, ['model', 'messages']), known),
  };
}
