import { type AccountRecord, KeyHasher, type KeyStore, createAccount, issueKey } from '../src/index.js';
import { keyWithHandle, parseApiKey } from '../src/keys/api-key.js';
import type { Logger } from '../src/log.js';

/** scrypt at logN 10 (about 1 ms): tests check behaviour, the benchmark checks the real cost. */
export function fastHasher(): KeyHasher {
  return new KeyHasher({ scrypt: { logN: 10 } });
}

/** A clock tests move by hand instead of sleeping. */
export interface TestClock {
  now: () => number;
  advance: (ms: number) => void;
  set: (epochMs: number) => void;
}

export function testClock(start = Date.parse('2026-11-22T12:00:00Z')): TestClock {
  let current = start;
  return {
    now: () => current,
    advance: (ms) => {
      current += ms;
    },
    set: (epochMs) => {
      current = epochMs;
    },
  };
}

/** A logger that keeps every line, so tests can assert what was (and was not) logged. */
export function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return {
    lines,
    warn: (message) => lines.push(`warn: ${message}`),
    error: (message) => lines.push(`error: ${message}`),
  };
}

/** An account with a billing key and a proxy key. */
export interface SeededAccount {
  account: AccountRecord;
  billingKey: string;
  proxyKey: string;
  proxyKeyId: number;
}

export async function seedAccount(
  store: KeyStore,
  options: { hasher: KeyHasher; balance?: number; now?: number; isFreeTier?: boolean },
): Promise<SeededAccount> {
  const account = await createAccount(store, {
    balance: options.balance ?? 10,
    isFreeTier: options.isFreeTier ?? false,
    ...(options.now === undefined ? {} : { now: options.now }),
  });
  const at = options.now === undefined ? {} : { now: options.now };
  const billing = await issueKey(store, { accountId: account.id, type: 'billing', name: 'billing' }, { hasher: options.hasher, ...at });
  const proxy = await issueKey(
    store,
    { accountId: account.id, type: 'proxy', name: 'My Production Key' },
    { hasher: options.hasher, ...at },
  );
  return { account, billingKey: billing.key, proxyKey: proxy.key, proxyKeyId: proxy.record.id };
}

/** A parsed raw HTTP answer. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

/**
 * Sends exact request bytes (duplicate headers, tabs, raw non-ASCII) to a listening server and
 * parses the answer; supertest would normalise or refuse such requests.
 */
export async function rawRequest(port: number, head: string | Buffer): Promise<RawResponse> {
  const { connect } = await import('node:net');
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (chunk) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const [headText = '', ...rest] = text.split('\r\n\r\n');
      const [statusLine = '', ...headerLines] = headText.split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of headerLines) {
        const colon = line.indexOf(':');
        headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
      }
      const bodyText = rest.join('\r\n\r\n');
      resolve({ status: Number(statusLine.split(' ')[1]), headers, body: bodyText ? JSON.parse(bodyText) : undefined });
    });
    socket.write(head);
  });
}

/** The whole error body of a 400 `invalid_request`, with `param` when the answer names one. */
export function invalid(message: string, param?: string) {
  return { error: { message, type: 'invalid_request_error', code: 'invalid_request', ...(param === undefined ? {} : { param }) } };
}

/** A well-formed key with the same handle as `key`, another secret and a valid checksum: what an attacker who knows a handle sends. */
export function forgeSameHandle(key: string): string {
  const parsed = parseApiKey(key);
  if (parsed === null) throw new TypeError('forgeSameHandle: not a well-formed key');
  return keyWithHandle(parsed.type, parsed.handle).value;
}
