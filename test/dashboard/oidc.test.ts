import { type Server, createServer } from 'node:http';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type CryptoKey, SignJWT, UnsecuredJWT, exportJWK, generateKeyPair } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigurationError, MemoryKeyStore, createAccount, oidcIdentity } from '../../src/index.js';
import { fastHasher } from '../helpers.js';
import { DashboardClient, startDashboardApp } from './dashboard-app.js';

const ISSUER = 'https://login.example.test/';
const AUDIENCE = 'modelswitch-dashboard';
let server: Server;
let jwksUri: string;
let signingKey: CryptoKey;
let otherKey: CryptoKey;
let jwksRequests = 0;

beforeAll(async () => {
  const pair = await generateKeyPair('RS256');
  signingKey = pair.privateKey;
  otherKey = (await generateKeyPair('RS256')).privateKey;
  const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'test-key', alg: 'RS256', use: 'sig' };
  server = createServer((_req, res) => {
    jwksRequests++;
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify({ keys: [jwk] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  jwksUri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

function idToken(
  claims: Record<string, unknown> = {},
  options: { issuer?: string; audience?: string; expires?: string | number; key?: CryptoKey } = {},
) {
  return new SignJWT({ modelswitch_account: 'acct_1', email: 'ada@example.test', ...claims })
    .setProtectedHeader({ alg: 'RS256', kid: 'test-key' })
    .setIssuer(options.issuer ?? ISSUER)
    .setAudience(options.audience ?? AUDIENCE)
    .setSubject('user-1')
    .setIssuedAt()
    .setExpirationTime(options.expires ?? '10m')
    .sign(options.key ?? signingKey);
}

function requestWith(headers: Record<string, string>): IncomingMessage {
  return { headers } as unknown as IncomingMessage;
}

describe('oidcIdentity', () => {
  const identify = () => oidcIdentity({ issuer: ISSUER, audience: AUDIENCE, jwksUri, accountClaim: 'modelswitch_account' });

  it('maps a valid ID token (Bearer or cookie) to its account claim, fetching the JWKS from the provider', async () => {
    const token = await idToken();
    const before = jwksRequests;
    expect(await identify()(requestWith({ authorization: `Bearer ${token}` }))).toEqual({
      accountId: 'acct_1',
      subject: 'ada@example.test',
    });
    expect(await identify()(requestWith({ cookie: `other=1; id_token=${token}` }))).toEqual({
      accountId: 'acct_1',
      subject: 'ada@example.test',
    });
    expect(jwksRequests).toBeGreaterThan(before);
  });

  it('refuses expired, wrong-audience, wrong-issuer, foreign-key, unsigned and alg:none tokens, and tokens without the claim', async () => {
    const check = identify();
    const [header, payload] = (await idToken()).split('.');
    const noneHeader = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
    const tokens = {
      expired: await idToken({}, { expires: Math.floor(Date.now() / 1000) - 60 }),
      wrongAudience: await idToken({}, { audience: 'another-app' }),
      wrongIssuer: await idToken({}, { issuer: 'https://evil.example.test/' }),
      foreignKey: await idToken({}, { key: otherKey }),
      unsigned: `${header}.${payload}.`,
      algNone: `${noneHeader}.${payload}.`,
      unsecuredJwt: new UnsecuredJWT({ modelswitch_account: 'acct_1' })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setExpirationTime('10m')
        .encode(),
      noClaim: await idToken({ modelswitch_account: undefined }),
      garbage: 'not-a-token',
    };
    for (const [name, token] of Object.entries(tokens)) {
      expect(await check(requestWith({ authorization: `Bearer ${token}` })), name).toBeNull();
    }
    expect(await check(requestWith({}))).toBeNull();
  });

  it('is configured with coded errors: missing fields, a relative JWKS URL, none or HMAC algorithms', () => {
    const base = { issuer: ISSUER, audience: AUDIENCE, jwksUri: 'https://x.test/jwks', accountClaim: 'acct' };
    expect(() => oidcIdentity({ ...base, issuer: '' })).toThrow(ConfigurationError);
    expect(() => oidcIdentity({ ...base, jwksUri: '/jwks' })).toThrow(/jwksUri/);
    expect(() => oidcIdentity({ ...base, algorithms: ['none'] })).toThrow(/algorithms/);
    expect(() => oidcIdentity({ ...base, algorithms: ['HS256'] })).toThrow(/algorithms/);
  });

  it("signs a person into the dashboard through identify: their account's keys, no billing key needed", async () => {
    const store = new MemoryKeyStore();
    const account = await createAccount(store, { balance: 3 });
    const app = await startDashboardApp('express5', store, {
      hasher: fastHasher(),
      dashboard: { identify: oidcIdentity({ issuer: ISSUER, audience: AUDIENCE, jwksUri, accountClaim: 'modelswitch_account' }) },
    });
    try {
      const client = new DashboardClient(app.origin);
      client.cookie = `id_token=${await idToken({ modelswitch_account: account.id })}`;
      const session = await client.call('GET', 'api/session');
      expect(session.status).toBe(200);
      expect(session.body).toEqual({
        kind: 'identify',
        accountId: account.id,
        subject: 'ada@example.test',
        keyId: null,
        expiresAt: null,
        csrfToken: expect.stringMatching(/^[\w-]{43}$/),
      });
      client.csrfToken = (session.body as { csrfToken: string }).csrfToken;
      const created = await client.call('POST', 'api/keys', { name: 'from SSO' });
      expect(created.status).toBe(201);
      expect((await client.call('GET', 'api/account')).body).toMatchObject({ id: account.id, balance: 3 });
      // An account the store does not know identifies nobody.
      client.cookie = `id_token=${await idToken({ modelswitch_account: 'acct_missing' })}`;
      expect((await client.call('GET', 'api/session')).status).toBe(401);
    } finally {
      await app.close();
    }
  });
});
