import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, type Server, createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Gateway, MOCK_PRICE, chat, post, startGateway } from './harness.js';

/**
 * The proxy to an `https:` upstream, as every real provider is: a TLS server on 127.0.0.1 with a
 * certificate made for the test (by `openssl`, which the machine has; without it these tests skip,
 * with the reason). The certificate is trusted only through an upstream's own `agent`: the
 * router's own pool checks certificates against Node's CAs, as it must with a provider.
 */
const OPENSSL_MISSING = (() => {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return undefined;
  } catch {
    return 'openssl is not installed: no certificate for a local TLS upstream';
  }
})();
if (OPENSSL_MISSING !== undefined && process.env.CI === 'true') throw new Error(`CI=true: ${OPENSSL_MISSING}`);

const COMPLETION = {
  id: 'chatcmpl-tls',
  object: 'chat.completion',
  created: 1_700_000_000,
  model: 'mock-model',
  choices: [{ index: 0, message: { role: 'assistant', content: 'Hello', refusal: null }, logprobs: null, finish_reason: 'stop' }],
  usage: { prompt_tokens: 12, completion_tokens: 8, total_tokens: 20 },
};

interface Arrival {
  method: string | undefined;
  url: string | undefined;
  headers: IncomingHttpHeaders;
  body: string;
}

let directory: string | undefined;
let tls: { key: Buffer; cert: Buffer } | undefined;
let server: Server | undefined;
let gateway: Gateway | undefined;
const arrivals: Arrival[] = [];

beforeAll(() => {
  if (OPENSSL_MISSING !== undefined) return;
  directory = mkdtempSync(join(tmpdir(), 'modelswitch-tls-'));
  const keyFile = join(directory, 'key.pem');
  const certFile = join(directory, 'cert.pem');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile].concat([
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ]),
    { stdio: 'ignore' },
  );
  tls = { key: readFileSync(keyFile), cert: readFileSync(certFile) };
});

afterAll(() => {
  if (directory !== undefined) rmSync(directory, { recursive: true, force: true });
});

afterEach(async () => {
  await gateway?.proxy.close();
  await gateway?.close();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server?.closeAllConnections();
  gateway = undefined;
  server = undefined;
  arrivals.length = 0;
});

/** A TLS upstream answering every request with COMPLETION; answers `https://127.0.0.1:<port>`. */
async function startTlsUpstream(): Promise<string> {
  const { key, cert } = tls as { key: Buffer; cert: Buffer };
  server = createServer({ key, cert }, (req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (part: Buffer) => parts.push(part));
    req.on('end', () => {
      arrivals.push({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(parts).toString('utf8') });
      const text = JSON.stringify(COMPLETION);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    });
  });
  await new Promise<void>((resolve) => (server as Server).listen(0, '127.0.0.1', resolve));
  return `https://127.0.0.1:${((server as Server).address() as AddressInfo).port}`;
}

async function start(target: string, agent?: HttpsAgent): Promise<Gateway> {
  gateway = await startGateway({
    proxy: {
      upstreams: [{ name: 'tls', target, apiKey: 'sk-upstream-secret', models: ['mock-model'], ...(agent ? { agent } : {}) }],
      pricing: { 'mock-model': MOCK_PRICE },
    },
  });
  return gateway;
}

describe.skipIf(OPENSSL_MISSING !== undefined)('proxyRouter to an https: upstream', () => {
  it("sends the request over TLS to the target's path and query, with the upstream's credential and Host, and passes the answer through", async () => {
    const origin = await startTlsUpstream();
    const agent = new HttpsAgent({ keepAlive: true, ca: (tls as { cert: Buffer }).cert });
    const gw = await start(`${origin}/openai/deployments/d?api-version=2024-10-21`, agent);
    const res = await post(gw, '/chat/completions?trace=1', chat());
    expect({ status: res.status, type: res.headers.get('content-type'), body: JSON.parse(res.text) }).toEqual({
      status: 200,
      type: 'application/json',
      body: COMPLETION,
    });
    expect(
      arrivals.map(({ method, url, headers, body }) => ({
        method,
        url,
        host: headers.host,
        authorization: headers.authorization,
        body: JSON.parse(body),
      })),
    ).toEqual([
      {
        method: 'POST',
        url: '/openai/deployments/d/chat/completions?api-version=2024-10-21&trace=1',
        host: new URL(origin).host,
        authorization: 'Bearer sk-upstream-secret',
        body: expect.objectContaining({ model: 'mock-model' }),
      },
    ]);
    agent.destroy();
  });

  it("refuses an upstream whose certificate Node's CAs do not vouch for: 502, nothing charged", async () => {
    const origin = await startTlsUpstream();
    const gw = await start(`${origin}/v1`);
    const res = await post(gw, '/chat/completions', chat());
    expect({ status: res.status, body: JSON.parse(res.text) }).toEqual({
      status: 502,
      body: {
        error: {
          message: 'The upstream tls could not be reached or answered with an invalid response.',
          type: 'api_error',
          code: 'upstream_error',
        },
      },
    });
    expect(arrivals).toEqual([]);
    const key = await gw.store.getKey(gw.proxyKeyId);
    expect({ usage: key?.usage, reserved: key?.reserved }).toEqual({ usage: 0, reserved: 0 });
  });
});

if (OPENSSL_MISSING !== undefined) {
  describe('proxyRouter to an https: upstream', () => {
    it.skip(OPENSSL_MISSING, () => {});
  });
}
