import { ClientRequest, type IncomingMessage, type OutgoingHttpHeaders, Server, type ServerResponse } from 'node:http';
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Socket } from 'node:net';
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib';
import { type RecordedAnswer, isProxied, templateOf, violationsOf } from './contract.js';

/**
 * Checks every answer an HTTP server of this test process sends against the OpenAPI document
 * (`src/management/openapi.ts`), whichever helper or test built the app: `test/openapi/setup.ts`
 * installs it for every test file (vitest `setupFiles`) and fails a test that received an answer the
 * document does not describe.
 *
 * Two kinds of server answer are not the package's and are left alone: a mock upstream's (a server
 * that received a request from the proxy: a request a server of this process sends while it answers
 * one of its own links the two) and the
 * host's own routes (paths the document does not describe). A gateway answer that passes an
 * upstream's through is checked for the gateway's own headers only: its status and body are the
 * upstream's.
 */

/** Bodies are kept up to this size to be checked; an answer is far smaller, a larger one is not the package's JSON. */
const MAX_KEPT_BYTES = 1024 * 1024;
const INSTALLED = Symbol.for('modelswitch-keys.test.openapi-recorder');

interface Tracked {
  method: string;
  url: string;
  chunks: Buffer[];
  bytes: number;
  /** Stopped keeping the body (too large, or not JSON). */
  dropped: boolean;
  /** Headers given to `writeHead` (Node does not always show them in `getHeaders()`). */
  writeHeadHeaders: OutgoingHttpHeaders;
  /** The proxy sent this request upstream and the upstream answered. */
  passthrough: boolean;
  /** The client's port, read on arrival: a destroyed socket no longer has one. */
  remotePort: number | undefined;
  checked: boolean;
}

const tracked = new WeakMap<IncomingMessage, Tracked>();
/** The request a server of this process is answering, in whatever that answer runs. */
const answering = new AsyncLocalStorage<Tracked>();
/** Local ports of the proxy's sockets to upstreams: a server request from one of them is an upstream's. */
const proxyPorts = new Set<number>();
/** Servers found to be upstreams (mocks): none of their answers is checked. */
const upstreamServers = new WeakSet<Server>();
const violations: string[] = [];
/** Ports that servers of this process listen on: a request to another local port goes to a gateway in a child process. */
const localPorts = new Set<number>();
/** How many answers were checked against the document (answers to documented paths), for `answersChecked()`. */
let checkedCount = 0;

/** Installs the recorder in this process once (idempotent). */
export function installRecorder(): void {
  const registry = globalThis as typeof globalThis & { [INSTALLED]?: true };
  if (registry[INSTALLED]) return;
  registry[INSTALLED] = true;
  const serverEmit = Server.prototype.emit;
  const emit = serverEmit as (this: Server, event: string | symbol, ...args: unknown[]) => boolean;
  Server.prototype.emit = function recordingEmit(this: Server, event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'listening') {
      const address = this.address();
      if (typeof address === 'object' && address !== null) localPorts.add(address.port);
    }
    if (event !== 'request') return emit.call(this, event, ...args);
    const entry = track(this, args[0] as IncomingMessage, args[1] as ServerResponse);
    // Whatever the server does for this request runs with it as the context, awaits included: a
    // request it sends on the way is the proxy's upstream request.
    return entry === undefined ? emit.call(this, event, ...args) : answering.run(entry, () => emit.call(this, event, ...args));
  };
  const clientEnd = ClientRequest.prototype.end;
  ClientRequest.prototype.end = function recordingClientEnd(this: ClientRequest, ...args: unknown[]): ClientRequest {
    const gateway = answering.getStore();
    if (gateway !== undefined) linkUpstream(gateway, this);
    return (clientEnd as (this: ClientRequest, ...args: unknown[]) => ClientRequest).call(this, ...args);
  };
  const originalFetch = globalThis.fetch;
  globalThis.fetch = async function recordingFetch(input: Parameters<typeof fetch>[0], init?: RequestInit): Promise<Response> {
    const response = await originalFetch(input, init);
    try {
      checkFromClient(input, init, response);
    } catch (error) {
      violations.push(`fetch ${String(input)}: the check failed: ${error instanceof Error ? error.message : String(error)}`);
    }
    return response;
  };
}

/**
 * An answer of a gateway in a child process (the several-processes tests), which the server side
 * of this process never sees: checked from what `fetch` received. Whether a proxied answer is an
 * upstream's is read from `Cache-Control`: the package writes `no-store` on every answer of its own,
 * and passes an upstream's through with the upstream's (a stream's is `no-cache, no-transform`).
 */
function checkFromClient(input: Parameters<typeof fetch>[0], init: RequestInit | undefined, response: Response): void {
  const url = new URL(input instanceof Request ? input.url : String(input));
  const local = url.hostname === '127.0.0.1' || url.hostname === 'localhost' || url.hostname === '[::1]';
  if (!local || localPorts.has(Number(url.port)) || templateOf(url.pathname) === undefined) return;
  const headers: Record<string, string> = {};
  // fetch decodes a compressed body itself: the body read below is the plain one.
  response.headers.forEach((value, name) => {
    if (name !== 'content-encoding') headers[name] = value;
  });
  const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
  const record = (body: Buffer | undefined) => {
    checkedCount++;
    const answer: RecordedAnswer = {
      method,
      url: url.pathname + url.search,
      status: response.status,
      headers,
      body,
      passthrough: headers['cache-control'] !== 'no-store' && isProxied(url.pathname),
    };
    try {
      for (const violation of violationsOf(answer)) violations.push(`${violation} (a gateway process)`);
    } catch (error) {
      violations.push(`${method} ${url.pathname}: the check failed: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  if ((headers['content-type'] ?? '').includes('text/event-stream') || response.body === null) {
    record(undefined);
    return;
  }
  response
    .clone()
    .arrayBuffer()
    .then(
      (body) => record(Buffer.from(body)),
      // The test cut the answer off: its status and headers still count.
      () => record(undefined),
    );
}

/** How many answers of this test file were checked against the document so far. */
export function answersChecked(): number {
  return checkedCount;
}

/** The violations found since the last call, which clears them. */
export function takeViolations(): string[] {
  return violations.splice(0);
}

function linkUpstream(gateway: Tracked, upstreamRequest: ClientRequest): void {
  upstreamRequest.once('response', () => {
    gateway.passthrough = true;
  });
  upstreamRequest.on('socket', (socket: Socket) => {
    if (socket.localPort !== undefined) proxyPorts.add(socket.localPort);
    else socket.once('connect', () => socket.localPort !== undefined && proxyPorts.add(socket.localPort));
  });
}

function track(server: Server, req: IncomingMessage, res: ServerResponse): Tracked | undefined {
  if (upstreamServers.has(server)) return undefined;
  const entry: Tracked = {
    method: req.method ?? 'GET',
    // Saved now: Express rewrites req.url below a mount and leaves it so when a router answers.
    url: req.url ?? '/',
    chunks: [],
    bytes: 0,
    dropped: templateOf(req.url ?? '/') === undefined,
    writeHeadHeaders: {},
    passthrough: false,
    remotePort: req.socket.remotePort,
    checked: false,
  };
  tracked.set(req, entry);
  const keep = (chunk: unknown, encoding: unknown) => {
    if (entry.dropped || chunk === undefined || chunk === null || typeof chunk === 'function') return;
    const buffer =
      typeof chunk === 'string'
        ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
        : Buffer.from(chunk as Uint8Array);
    entry.bytes += buffer.length;
    if (entry.bytes > MAX_KEPT_BYTES || String(res.getHeader('content-type') ?? '').includes('text/event-stream')) {
      entry.dropped = true;
      entry.chunks = [];
      return;
    }
    entry.chunks.push(buffer);
  };
  const write = res.write;
  res.write = function recordingWrite(this: ServerResponse, chunk: unknown, ...rest: unknown[]) {
    keep(chunk, rest[0]);
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  } as ServerResponse['write'];
  const end = res.end;
  res.end = function recordingEnd(this: ServerResponse, chunk?: unknown, ...rest: unknown[]) {
    keep(chunk, rest[0]);
    return (end as (...args: unknown[]) => ServerResponse).call(this, chunk, ...rest);
  } as ServerResponse['end'];
  const writeHead = res.writeHead;
  res.writeHead = function recordingWriteHead(this: ServerResponse, ...args: unknown[]) {
    const headers = args.find((arg) => typeof arg === 'object' && arg !== null);
    if (headers !== undefined && !Array.isArray(headers)) Object.assign(entry.writeHeadHeaders, headers);
    return (writeHead as (...args: unknown[]) => ServerResponse).apply(this, args);
  } as ServerResponse['writeHead'];
  res.once('finish', () => check(server, res, entry, true));
  res.once('close', () => check(server, res, entry, false));
  return entry;
}

function check(server: Server, res: ServerResponse, entry: Tracked, finished: boolean): void {
  if (entry.checked) return;
  entry.checked = true;
  const remotePort = entry.remotePort;
  if (remotePort !== undefined && proxyPorts.has(remotePort)) {
    // An upstream (a mock in the test): its answers are the provider's, not the package's.
    upstreamServers.add(server);
    return;
  }
  if (templateOf(entry.url) === undefined || !res.headersSent) return;
  const headers: Record<string, string> = {};
  const all = { ...lowerCased(entry.writeHeadHeaders), ...lowerCased(res.getHeaders()) };
  for (const [name, value] of Object.entries(all)) {
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  const answer: RecordedAnswer = {
    method: entry.method,
    url: entry.url,
    status: res.statusCode,
    headers,
    body: finished && !entry.dropped ? decoded(Buffer.concat(entry.chunks), headers['content-encoding']) : undefined,
    passthrough: entry.passthrough,
  };
  checkedCount++;
  try {
    for (const violation of violationsOf(answer)) violations.push(violation);
  } catch (error) {
    // Thrown in a response event, it would be an uncaught exception blamed on some later test.
    violations.push(`${entry.method} ${entry.url}: the check failed: ${error instanceof Error ? error.message : String(error)}`);
  }
}

function lowerCased(headers: OutgoingHttpHeaders): OutgoingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).map(([name, value]) => [name.toLowerCase(), value]));
}

/** The body as sent before a compression middleware encoded it. */
function decoded(body: Buffer, coding: string | undefined): Buffer | undefined {
  try {
    if (coding === 'gzip') return gunzipSync(body);
    if (coding === 'deflate') return inflateSync(body);
    if (coding === 'br') return brotliDecompressSync(body);
  } catch {
    return undefined;
  }
  return body;
}
