import { readFileSync } from 'node:fs';
import { Validator } from '@seriousme/openapi-schema-validator';
import express from 'express';
import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { OPENAPI_YAML_PATH, openApiYaml } from '../../scripts/openapi-yaml.js';
import { MemoryKeyStore, ModelSwitchError, type ModelSwitchErrorCode, keysRouter } from '../../src/index.js';
import { type DocumentedErrorCode, OPENAPI_CACHE_CONTROL, documentedError, openApiDocument } from '../../src/management/openapi.js';
import { FRAMEWORKS, buildApp } from '../app.js';
import { fastHasher, seedAccount } from '../helpers.js';
import { type Gateway, chat, startGateway } from '../proxy/harness.js';
import { NOT_ANSWERED_YET, theContract } from './contract.js';
import { takeViolations } from './recorder.js';

/**
 * Every code the package answers with (`route_not_found` is the host's own, for its unknown URLs).
 * A `Record`, so a code added to `ModelSwitchErrorCode` fails to compile here until it is named.
 */
// The dashboard's codes (session_required, csrf_check_failed) belong to its own JSON API, which the
// document leaves out: docs/dashboard.md lists it.
const PACKAGE_CODES: Record<Exclude<ModelSwitchErrorCode, 'route_not_found' | 'session_required' | 'csrf_check_failed'>, true> = {
  invalid_api_key: true,
  expired_api_key: true,
  wrong_key_type: true,
  key_deactivated: true,
  spend_limit_reached: true,
  insufficient_balance: true,
  rate_limit_exceeded: true,
  invalid_request: true,
  method_not_allowed: true,
  key_not_found: true,
  model_not_found: true,
  generation_not_found: true,
  model_not_allowed: true,
  request_too_large: true,
  unsupported_content_encoding: true,
  internal_error: true,
  upstream_error: true,
  store_unavailable: true,
  verification_busy: true,
  server_busy: true,
  upstream_timeout: true,
};

type Json = { [name: string]: unknown };
const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const;

/** Every operation of the document as `METHOD /path/{template}`. */
function operations(): string[] {
  const document = openApiDocument();
  return Object.entries(document.paths).flatMap(([path, item]) =>
    METHODS.filter((method) => item[method] !== undefined).map((method) => `${method.toUpperCase()} ${path}`),
  );
}

/** Every error code each response of the document names, with its status. */
function documentedCodes(): { operation: string; status: number; codes: string[]; types: string[] }[] {
  const document = openApiDocument();
  const found: { operation: string; status: number; codes: string[]; types: string[] }[] = [];
  const methodNotAllowed = (document.components.responses as Json).MethodNotAllowed;
  const paths: [string, Json][] = [
    ...Object.entries(document.paths),
    ['(any other method)', { get: { responses: { 405: methodNotAllowed } } }],
  ];
  for (const [path, item] of paths) {
    for (const method of METHODS) {
      const responses = (item[method] as Json | undefined)?.responses as Json | undefined;
      for (const [status, response] of Object.entries(responses ?? {})) {
        const schema = ((response as Json).content as Json | undefined)?.['application/json'] as Json | undefined;
        const restriction = ((schema?.schema as Json | undefined)?.allOf as Json[] | undefined)?.[1];
        const error = ((restriction?.properties as Json | undefined)?.error as Json | undefined)?.properties as Json | undefined;
        if (error === undefined) continue;
        found.push({
          operation: `${method.toUpperCase()} ${path}`,
          status: Number(status),
          codes: (error.code as Json).enum as string[],
          types: (error.type as Json).enum as string[],
        });
      }
    }
  }
  return found;
}

/** The code's status and type as the package answers it, or `undefined` for a code it does not have yet. */
function packageError(code: string): { status: number; type: string } | undefined {
  try {
    const error = new ModelSwitchError(code as ModelSwitchErrorCode, 'probe');
    return { status: error.status, type: error.type };
  } catch {
    return undefined;
  }
}

describe('the OpenAPI document', () => {
  it('is a valid OpenAPI 3.1 document (@seriousme/openapi-schema-validator)', async () => {
    const validator = new Validator();
    const result = await validator.validate(openApiDocument());
    expect(result).toEqual({ valid: true });
    expect(validator.version).toBe('3.1');
  });

  it('compiles every schema in it under Ajv 2020 strict mode', () => {
    const contract = theContract();
    const schemas: object[] = [];
    const visit = (node: unknown, key: string): void => {
      if (typeof node !== 'object' || node === null) return;
      if (key === 'schema') schemas.push(node);
      for (const [name, value] of Object.entries(node)) visit(value, name);
    };
    visit(contract.document.paths, '');
    visit(contract.document.components.headers, '');
    expect(schemas.length).toBeGreaterThan(100);
    for (const schema of schemas) expect(() => contract.validator(schema as never)).not.toThrow();
  });

  it('is what docs/openapi.yaml holds (run npm run openapi after changing src/management/openapi.ts)', () => {
    const committed = readFileSync(OPENAPI_YAML_PATH, 'utf8');
    expect(committed === openApiYaml(), 'docs/openapi.yaml is stale: run npm run openapi').toBe(true);
    expect(parse(committed)).toEqual(openApiDocument());
  });

  it('states each error code with the status and type the package answers it with', () => {
    const pending: string[] = [];
    for (const { operation, status, codes, types } of documentedCodes()) {
      for (const code of codes) {
        const answered = packageError(code);
        if (answered === undefined) {
          pending.push(code);
          continue;
        }
        expect({ operation, code, status, type: types.includes(answered.type) }).toEqual({
          operation,
          code,
          status: answered.status,
          type: true,
        });
        expect(documentedError(code as DocumentedErrorCode)).toEqual(answered);
      }
    }
    // Codes of routes still to come are listed as pending; once the package has one, it must leave the list.
    expect([...new Set(pending)].sort()).toEqual(
      [...NOT_ANSWERED_YET]
        .filter((entry) => entry.startsWith('error '))
        .map((entry) => entry.slice(6))
        .sort(),
    );
  });

  it('names every error code the package answers with', () => {
    const named = new Set(documentedCodes().flatMap(({ codes }) => codes));
    expect(Object.keys(PACKAGE_CODES).filter((code) => !named.has(code))).toEqual([]);
  });

  it('documents 401 with WWW-Authenticate, 429 with Retry-After and every authenticated answer with the RateLimit headers', () => {
    const document = openApiDocument();
    for (const [path, item] of Object.entries(document.paths)) {
      for (const method of METHODS) {
        const operation = item[method] as Json | undefined;
        if (operation === undefined || (operation.security as unknown[]).length === 0) continue;
        const responses = operation.responses as Record<string, Json>;
        expect(Object.keys(responses['401']?.headers as Json), `${method} ${path}`).toContain('WWW-Authenticate');
        expect(Object.keys(responses['429']?.headers as Json), `${method} ${path}`).toContain('Retry-After');
        for (const [status, response] of Object.entries(responses)) {
          expect(Object.keys(response.headers as Json), `${method} ${path} ${status}`).toEqual(
            expect.arrayContaining(['RateLimit-Policy', 'RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset', 'RateLimit']),
          );
        }
      }
    }
  });
});

describe('GET /api/openapi.json', () => {
  for (const framework of FRAMEWORKS) {
    it(`answers the document without a key, cacheable, on ${framework}`, async () => {
      const app = buildApp(framework, new MemoryKeyStore(), { hasher: fastHasher() });
      const res = await request(app).get('/api/openapi.json');
      expect({ status: res.status, type: res.headers['content-type'], cache: res.headers['cache-control'], body: res.body }).toEqual({
        status: 200,
        type: 'application/json',
        cache: OPENAPI_CACHE_CONTROL,
        body: openApiDocument(),
      });
      expect(res.headers['content-length']).toBe(String(Buffer.byteLength(JSON.stringify(openApiDocument()))));
    });
  }

  it('reads no key: an invalid Authorization header changes nothing', async () => {
    const app = buildApp('express5', new MemoryKeyStore(), { hasher: fastHasher() });
    const res = await request(app).get('/api/openapi.json').set('Authorization', 'Bearer mk-invalid');
    expect({ status: res.status, cache: res.headers['cache-control'], body: res.body }).toEqual({
      status: 200,
      cache: 'public, max-age=300',
      body: openApiDocument(),
    });
  });

  it('answers HEAD with the headers only, and other methods 405 with Allow', async () => {
    const app = buildApp('express5', new MemoryKeyStore(), { hasher: fastHasher() });
    const head = await request(app).head('/api/openapi.json');
    expect({ status: head.status, cache: head.headers['cache-control'], body: head.text }).toEqual({
      status: 200,
      cache: OPENAPI_CACHE_CONTROL,
      body: undefined,
    });
    const post = await request(app).post('/api/openapi.json').send({});
    expect({ status: post.status, allow: post.headers.allow, cache: post.headers['cache-control'], body: post.body }).toEqual({
      status: 405,
      allow: 'GET, HEAD',
      cache: 'no-store',
      body: { error: { message: 'POST is not supported on this route', type: 'invalid_request_error', code: 'method_not_allowed' } },
    });
  });
});

describe('the routes of the document', () => {
  let gateway: Gateway;
  let app: express.Express;
  beforeEach(async () => {
    gateway = await startGateway();
    // The management API beside the proxy, on the same store, as the README mounts both.
    gateway.app.use('/api', keysRouter(gateway.store, { hasher: fastHasher(), now: gateway.clock.now }));
    app = gateway.app;
  });
  afterEach(() => gateway.close());

  /** A request the package answers for each operation (the delete last: it removes the key). */
  function samples(): { operation: string; send: () => request.Test }[] {
    const billing = { Authorization: `Bearer ${gateway.billingKey}` };
    const proxy = { Authorization: `Bearer ${gateway.proxyKey}` };
    const id = gateway.proxyKeyId;
    return [
      { operation: 'GET /api/keys', send: () => request(app).get('/api/keys').set(billing) },
      { operation: 'POST /api/keys', send: () => request(app).post('/api/keys').set(billing).send({ name: 'Another' }) },
      { operation: 'GET /api/keys/{id}', send: () => request(app).get(`/api/keys/${id}`).set(billing) },
      { operation: 'PUT /api/keys/{id}', send: () => request(app).put(`/api/keys/${id}`).set(billing).send({ name: 'Renamed' }) },
      { operation: 'PATCH /api/keys/{id}', send: () => request(app).patch(`/api/keys/${id}`).set(billing).send({ limit: 5 }) },
      { operation: 'POST /api/keys/{id}/rotate', send: () => request(app).post(`/api/keys/${id}/rotate`).set(billing).send({}) },
      { operation: 'GET /api/account', send: () => request(app).get('/api/account').set(billing) },
      { operation: 'GET /api/transactions', send: () => request(app).get('/api/transactions').set(billing) },
      { operation: 'GET /api/usage', send: () => request(app).get('/api/usage').set(billing) },
      { operation: 'GET /api/openapi.json', send: () => request(app).get('/api/openapi.json') },
      { operation: 'GET /v1/auth/key', send: () => request(app).get('/v1/auth/key').set(proxy) },
      { operation: 'GET /v1/generation', send: () => request(app).get('/v1/generation?id=req_unknown').set(proxy) },
      { operation: 'GET /v1/models', send: () => request(app).get('/v1/models').set(proxy) },
      { operation: 'GET /v1/models/{model}', send: () => request(app).get('/v1/models/mock-model').set(proxy) },
      { operation: 'POST /v1/chat/completions', send: () => request(app).post('/v1/chat/completions').set(proxy).send(chat()) },
      {
        operation: 'POST /v1/completions',
        send: () => request(app).post('/v1/completions').set(proxy).send({ model: 'mock-model', prompt: 'Say hello' }),
      },
      {
        operation: 'POST /v1/embeddings',
        send: () => request(app).post('/v1/embeddings').set(proxy).send({ model: 'mock-model', input: 'hello' }),
      },
      {
        operation: 'POST /v1/responses',
        send: () => request(app).post('/v1/responses').set(proxy).send({ model: 'mock-model', input: 'hi' }),
      },
      { operation: 'DELETE /api/keys/{id}', send: () => request(app).delete(`/api/keys/${id}`).set(billing) },
    ];
  }

  it('has a sample request for each operation', () => {
    expect(
      samples()
        .map(({ operation }) => operation)
        .sort(),
    ).toEqual(operations().sort());
  });

  it('are each answered by the package, except those NOT_ANSWERED_YET (which must leave the list once they are)', async () => {
    const answered: string[] = [];
    for (const { operation, send } of samples()) {
      const res = await send();
      // Unanswered, the request falls through to Express's own 404 page (text/html).
      if (String(res.headers['content-type']).startsWith('application/json')) answered.push(operation);
    }
    const routes = operations();
    expect(routes.filter((operation) => !answered.includes(operation)).sort()).toEqual(
      [...NOT_ANSWERED_YET].filter((entry) => !entry.startsWith('error ')).sort(),
    );
    expect(takeViolations()).toEqual([]);
  });
});

describe('the recorder (test/openapi/recorder.ts)', () => {
  it('finds an answer on a documented path that the document does not describe', async () => {
    const app = express();
    // A host route pretending to be the package's listing, with a body the document does not allow.
    app.get('/api/keys', (_req, res) => {
      res.setHeader('Cache-Control', 'no-store');
      res.json({ keys: [{ id: 'one' }] });
    });
    app.get('/api/keys/:id', (_req, res) => {
      res.status(418).json({});
    });
    await request(app).get('/api/keys');
    await request(app).get('/api/keys/1');
    const found = takeViolations();
    expect(found).toHaveLength(2);
    expect(found[0]).toMatch(
      /^GET \/api\/keys → 200: body must have required property 'has_more', body\/keys\/0 must have required property 'name', /,
    );
    expect(found[1]).toBe('GET /api/keys/1 → 418: status 418 is not documented for GET /api/keys/{id}');
  });

  it('leaves the host routes alone, and the upstream answers the proxy passes through', async () => {
    const gateway = await startGateway();
    try {
      const store = gateway.store;
      const seeded = await seedAccount(store, { hasher: fastHasher(), now: gateway.clock.now() });
      gateway.app.get('/v1/host-route', (_req, res) => {
        res.status(299).send('anything');
      });
      await request(gateway.app).get('/v1/host-route').set('Authorization', `Bearer ${seeded.proxyKey}`);
      // The mock upstream answers the same path with a body of its own: passed through, not checked.
      gateway.upstream.behaviour.error = { status: 400, body: { error: { message: 'bad', type: 'upstream_error_kind', code: 7 } } };
      const res = await request(gateway.app).post('/v1/chat/completions').set('Authorization', `Bearer ${seeded.proxyKey}`).send(chat());
      expect({ status: res.status, body: res.body }).toEqual({
        status: 400,
        body: { error: { message: 'bad', type: 'upstream_error_kind', code: 7 } },
      });
      expect(takeViolations()).toEqual([]);
    } finally {
      await gateway.close();
    }
  });
});
