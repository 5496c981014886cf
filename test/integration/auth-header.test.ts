import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryKeyStore, generateApiKey, parseApiKey } from '../../src/index.js';
import { FRAMEWORKS, buildApp } from '../app.js';
import { type SeededAccount, fastHasher, forgeSameHandle, rawRequest, seedAccount } from '../helpers.js';

const MALFORMED = { error: { message: 'Missing or invalid Authorization header', type: 'authentication_error', code: 'invalid_api_key' } };
const INVALID_KEY = { error: { message: 'Invalid API key', type: 'authentication_error', code: 'invalid_api_key' } };
const CHALLENGE = 'Bearer realm="modelswitch"';
const TOKEN_CHALLENGE = 'Bearer realm="modelswitch", error="invalid_token"';

describe.each(FRAMEWORKS)('Authorization header parsing under %s', (framework) => {
  const store = new MemoryKeyStore();
  const hasher = fastHasher();
  let server: Server;
  let port: number;
  let seeded: SeededAccount;

  beforeAll(async () => {
    seeded = await seedAccount(store, { hasher });
    server = createServer(buildApp(framework, store, { hasher }));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  /** GET /v1/whoami with the given header lines (already formatted), on a fresh connection. */
  function get(headerLines: string[], path = '/v1/whoami') {
    return rawRequest(
      port,
      Buffer.from(
        `GET ${path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n${headerLines.map((l) => `${l}\r\n`).join('')}\r\n`,
        'utf8',
      ),
    );
  }

  async function expectRejected(headerLines: string[], body: unknown, challenge: string, path?: string) {
    const response = await get(headerLines, path);
    expect({
      status: response.status,
      body: response.body,
      challenge: response.headers['www-authenticate'],
      type: response.headers['content-type'],
    }).toEqual({
      status: 401,
      body,
      challenge,
      type: 'application/json',
    });
  }

  async function expectAccepted(headerLines: string[]) {
    const response = await get(headerLines);
    expect({ status: response.status, body: response.body }).toEqual({
      status: 200,
      body: { keyId: seeded.proxyKeyId, accountId: seeded.account.id },
    });
  }

  it('answers 401 with a bare challenge when the header is missing', () => expectRejected([], MALFORMED, CHALLENGE));
  it('answers 401 when the header is empty', () => expectRejected(['Authorization:'], MALFORMED, CHALLENGE));
  it('answers 401 for "Bearer" alone', () => expectRejected(['Authorization: Bearer'], MALFORMED, CHALLENGE));
  it('answers 401 for "Bearer" followed only by spaces', () => expectRejected(['Authorization: Bearer     '], MALFORMED, CHALLENGE));
  it('accepts a lowercase scheme', () => expectAccepted([`Authorization: bearer ${seeded.proxyKey}`]));
  it('accepts an upper-case scheme', () => expectAccepted([`Authorization: BEARER ${seeded.proxyKey}`]));
  it('accepts several spaces after the scheme', () => expectAccepted([`Authorization: Bearer    ${seeded.proxyKey}`]));
  it('answers 401 for a tab after the scheme (RFC 9110 allows only spaces)', () =>
    expectRejected([`Authorization: Bearer\t${seeded.proxyKey}`], MALFORMED, TOKEN_CHALLENGE));
  it('answers 401 with a bare challenge for another scheme', () =>
    expectRejected(['Authorization: Basic dXNlcjpwYXNz'], MALFORMED, CHALLENGE));
  it('answers 401 for two Authorization headers, even when both hold the valid key', () =>
    expectRejected([`Authorization: Bearer ${seeded.proxyKey}`, `Authorization: Bearer ${seeded.proxyKey}`], MALFORMED, TOKEN_CHALLENGE));
  it('answers 401 for a key in the query string, even with a valid header', () =>
    expectRejected([`Authorization: Bearer ${seeded.proxyKey}`], MALFORMED, TOKEN_CHALLENGE, `/v1/whoami?api_key=${seeded.proxyKey}`));
  it('answers 401 for an access_token query parameter (RFC 6750 §2.3 is refused)', () =>
    expectRejected([], MALFORMED, TOKEN_CHALLENGE, '/v1/whoami?access_token=abc'));
  it('answers 401 for non-ASCII characters in the token', () =>
    expectRejected([`Authorization: Bearer ${seeded.proxyKey.slice(0, 20)}é${seeded.proxyKey.slice(21)}`], MALFORMED, TOKEN_CHALLENGE));
  it('answers 401 for a 10 KB token without reading the store', () =>
    expectRejected([`Authorization: Bearer ms-${'a'.repeat(10_240)}`], INVALID_KEY, TOKEN_CHALLENGE));
  it('answers 401 for an ms- key with a bad checksum', () => {
    const last = seeded.proxyKey.at(-1) === 'A' ? 'B' : 'A';
    return expectRejected([`Authorization: Bearer ${seeded.proxyKey.slice(0, -1)}${last}`], INVALID_KEY, TOKEN_CHALLENGE);
  });
  it('answers 401 for a well-formed key nobody issued', () =>
    expectRejected([`Authorization: Bearer ${generateApiKey('proxy').value}`], INVALID_KEY, TOKEN_CHALLENGE));
  it('answers 401 for the right handle with a wrong secret', async () => {
    const forged = forgeSameHandle(seeded.proxyKey);
    expect(parseApiKey(forged)?.handle).toBe(parseApiKey(seeded.proxyKey)?.handle);
    await expectRejected([`Authorization: Bearer ${forged}`], INVALID_KEY, TOKEN_CHALLENGE);
  });
});
