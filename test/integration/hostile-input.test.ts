import request from 'supertest';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startGateway as startExample } from '../../examples/gateway.js';
import { API_KEY_PATTERN, MemoryKeyStore, ModelSwitchError, generateApiKey, redactKeys } from '../../src/index.js';
import { FRAMEWORKS, buildApp } from '../app.js';
import { type SeededAccount, fastHasher, seedAccount, testClock, invalid } from '../helpers.js';
import { type Gateway, startGateway } from '../proxy/harness.js';

const hasher = fastHasher();
/** Any whole key in a text, glued to other characters or not. */
const ANY_KEY = new RegExp(API_KEY_PATTERN.source.replaceAll('\\b', ''));

/** Status and JSON body of an answer, after checking that its text holds no key at all. */
async function answerWithoutKey(res: Response): Promise<{ status: number; body: unknown }> {
  const text = await res.text();
  expect(text).not.toMatch(ANY_KEY);
  return { status: res.status, body: JSON.parse(text) };
}

/** `ms-abcd…redacted`: what a key becomes in any message. */
function redacted(key: string): string {
  return `${key.slice(0, 7)}…redacted`;
}

describe('redactKeys', () => {
  const key = generateApiKey('proxy').value;
  const billing = generateApiKey('billing').value;

  it('replaces every key by its public prefix, glued to other text, cut short or percent-encoded', () => {
    expect(redactKeys(`model ${key}`)).toBe(`model ${redacted(key)}`);
    expect(redactKeys(`x${key}y and ${billing}`)).toBe(`x${redacted(key)} and ${redacted(billing)}`);
    expect(redactKeys(`/api/${key.slice(0, 30)}`)).toBe(`/api/${redacted(key)}`);
    const encoded = key.replace('-', '%2D');
    expect(redactKeys(`GET /api/${encoded}`)).toBe(`GET /api/${redacted(key)}`);
    expect(redactKeys(`GET /api/${encodeURIComponent(encodeURIComponent(encoded))}`)).toBe(`GET /api/${redacted(key)}`);
  });

  it('redacts every key this package issues, and leaves text without one as the very same string', () => {
    for (let i = 0; i < 200; i++) {
      const value = generateApiKey(i % 2 === 0 ? 'proxy' : 'billing').value;
      expect(ANY_KEY.test(redactKeys(`a${value}b`))).toBe(false);
    }
    for (const text of ['Unknown field name', 'ms-marco-MiniLM', 'The model gpt-4o-mini', '100% sure', 'ms-abc', '']) {
      expect(redactKeys(text)).toBe(text);
    }
  });

  it('is applied to the message and param of every ModelSwitchError', () => {
    const error = new ModelSwitchError('invalid_request', `Unknown field ${key}`, { param: key });
    expect(error.toJSON()).toEqual(invalid(`Unknown field ${redacted(key)}`, redacted(key)));
    expect(error.stack).not.toContain(key);
  });
});

describe.each(FRAMEWORKS)('keysRouter under %s never echoes a key, and refuses names it would show', (framework) => {
  let store: MemoryKeyStore;
  let seeded: SeededAccount;
  let app: ReturnType<typeof buildApp>;
  const key = generateApiKey('proxy').value;

  beforeEach(async () => {
    store = new MemoryKeyStore();
    seeded = await seedAccount(store, { hasher, now: testClock().now() });
    app = buildApp(framework, store, { hasher, now: testClock().now });
  });

  const admin = () => ({ Authorization: `Bearer ${seeded.billingKey}` });

  it('redacts a key sent as a field name or a query parameter name', async () => {
    const field = await request(app)
      .post('/api/keys')
      .set(admin())
      .send({ name: 'ok', [key]: 1 });
    expect({ status: field.status, body: field.body }).toEqual({
      status: 400,
      body: invalid(`Unknown field ${redacted(key)}`, redacted(key)),
    });
    const query = await request(app).get(`/api/keys/1?${key}=1`).set(admin());
    expect({ status: query.status, body: query.body }).toEqual({
      status: 400,
      body: invalid(`Unknown query parameter ${redacted(key)}`, redacted(key)),
    });
    expect(JSON.stringify([field.body, query.body])).not.toMatch(ANY_KEY);
  });

  it.each([
    ['a key', `backup of ${key}`, 'name must not contain an API key'],
    ['a key glued to text', `x${key}x`, 'name must not contain an API key'],
    ['a percent-encoded key', key.replace('-', '%2D'), 'name must not contain an API key'],
    ['a key percent-encoded twice', `see ${key.replace('-', '%252D')}`, 'name must not contain an API key'],
    ['a C1 control character', 'Prod\u0085uction', 'name must not contain control characters'],
    ['a C1 CSI', '\u009b31mred', 'name must not contain control characters'],
    ['only a zero-width space', '\u200b', 'name must not be blank'],
    ['only joiners and a BOM', '\u200d\u200c\ufeff', 'name must not be blank'],
    ['only a word joiner and spaces', ' \u2060 ', 'name must not be blank'],
    ['only Hangul fillers', '\u3164\u3164', 'name must not be blank'],
    ['a right-to-left override', 'invoice\u202Egnp.exe', 'name must not contain bidirectional text controls'],
    ['a left-to-right isolate', 'Prod \u2066beta\u2069', 'name must not contain bidirectional text controls'],
    ['a pop directional formatting', 'team\u202C', 'name must not contain bidirectional text controls'],
    ['only no-break and ideographic spaces', '\u00a0\u3000', 'name must not be blank'],
  ])('refuses a name with %s (400), on create and on update, storing nothing', async (_case, name, message) => {
    const created = await request(app).post('/api/keys').set(admin()).send({ name });
    expect({ status: created.status, body: created.body }).toEqual({ status: 400, body: invalid(message, 'name') });
    const updated = await request(app).patch(`/api/keys/${seeded.proxyKeyId}`).set(admin()).send({ name });
    expect({ status: updated.status, body: updated.body }).toEqual({ status: 400, body: invalid(message, 'name') });
    expect((await store.getKey(seeded.proxyKeyId))?.name).toBe('My Production Key');
    expect(JSON.stringify([created.body, updated.body])).not.toMatch(ANY_KEY);
  });

  it('still takes names with visible text around invisible characters, emoji sequences, accents and right-to-left marks', async () => {
    for (const name of ['Prod\u200bKey', '👨‍👩‍👧 family', 'Zürich – dev', 'ms-production', 'מפתח\u200F prod', 'مفتاح\u061C 2']) {
      const created = await request(app).post('/api/keys').set(admin()).send({ name });
      expect({ status: created.status, name: created.body.name }).toEqual({ status: 201, name });
    }
  });

  it('refuses a body nested deeper than 64 levels with 400, before parsing it', async () => {
    const deep = `{"name":${'['.repeat(65)}${']'.repeat(65)}}`;
    const res = await request(app).post('/api/keys').set(admin()).set('Content-Type', 'application/json').send(deep);
    expect({ status: res.status, body: res.body }).toEqual({
      status: 400,
      body: invalid('Request body nests arrays and objects deeper than 64 levels', 'body'),
    });
    const atLimit = `{"name":${'['.repeat(63)}${']'.repeat(63)}}`;
    const ok = await request(app).post('/api/keys').set(admin()).set('Content-Type', 'application/json').send(atLimit);
    expect({ status: ok.status, body: ok.body }).toEqual({ status: 400, body: invalid('name must be a string', 'name') });
  });
});

describe('the proxy and the example never echo a key', () => {
  let gateway: Gateway | undefined;
  afterEach(async () => {
    await gateway?.close();
    gateway = undefined;
  });

  it('answers {"model":"ms-…"} with a 404 that names the model without its key', async () => {
    gateway = await startGateway();
    const key = generateApiKey('proxy').value;
    for (const model of [key, `gpt-${key}`]) {
      const res = await fetch(`${gateway.url}/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${gateway.proxyKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model, messages: [] }),
      });
      expect(await answerWithoutKey(res)).toEqual({
        status: 404,
        body: {
          error: {
            message: `The model '${redactKeys(model)}' does not exist or is not served by this gateway.`,
            type: 'not_found_error',
            code: 'model_not_found',
            param: 'model',
          },
        },
      });
    }
    expect(gateway.upstream.requests).toEqual([]);
  });

  it("answers the example's unknown routes (GET /api/ms-…, encoded too) without the key", async () => {
    const example = await startExample({ port: 0, store: new MemoryKeyStore(), log: () => {} });
    try {
      const key = generateApiKey('proxy').value;
      for (const path of [`/api/${key}`, `/api/x${key}`, `/api/${key.replace('-', '%2D')}`]) {
        const res = await fetch(`${example.url}${path}`);
        expect(await answerWithoutKey(res)).toEqual({
          status: 404,
          body: {
            error: {
              message: `Unknown route: GET ${redactKeys(decodeURIComponent(path))}`,
              type: 'invalid_request_error',
              code: 'route_not_found',
            },
          },
        });
      }
      expect({ headers: example.server.headersTimeout, request: example.server.requestTimeout }).toEqual({
        headers: 10_000,
        request: 30_000,
      });
    } finally {
      await example.close();
    }
  });
});
