import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Transform } from 'node:stream';
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib';
import { DEFAULT_MAX_JSON_DEPTH, SERVER_BUSY_RETRY_AFTER_SECONDS } from '../defaults.js';
import { ModelSwitchError, invalidRequest } from '../errors/errors.js';

/** What a JSON body reader produced: the raw bytes (to re-send upstream) and the parsed value. */
export interface JsonBody {
  /** The body as JSON text: decoded when it came compressed, serialized when a host's parser read it. */
  raw: Buffer;
  /** `undefined` for an empty body. */
  value: unknown;
}

/** What {@link readJsonBody} takes besides the size limit. Every field is optional. */
export interface JsonBodyOptions {
  /** Deepest nesting of arrays and objects accepted; deeper answers 400. Default {@link DEFAULT_MAX_JSON_DEPTH}. */
  maxDepth?: number;
  /** Bytes buffered across requests, shared by the requests of one router (see {@link BufferBudget}). */
  budget?: BufferBudget;
}

/**
 * A bound on the request-body bytes buffered at once across requests. A body takes its bytes as
 * they arrive and gives them back when its response closes (the proxy keeps the body until then to
 * send it upstream); a body that would pass the bound is refused with 503 `server_busy` and
 * `Retry-After`, so a flood of large bodies costs a known amount of memory rather than all of it.
 *
 * @example
 * ```ts
 * const budget = new BufferBudget(128 * 1024 * 1024);
 * const body = await readJsonBody(req, res, 4 * 1024 * 1024, { budget });
 * ```
 */
export class BufferBudget {
  private used = 0;
  constructor(readonly maxBytes: number) {}

  /** Bytes held now, by every body not yet given back. */
  get bytesHeld(): number {
    return this.used;
  }

  /** Takes `bytes` if they fit; `false` (taking nothing) if they do not. */
  take(bytes: number): boolean {
    if (this.used + bytes > this.maxBytes) return false;
    this.used += bytes;
    return true;
  }

  /** Gives back `bytes` taken before. */
  give(bytes: number): void {
    this.used = Math.max(0, this.used - bytes);
  }
}

function tooLarge(limitBytes: number): ModelSwitchError {
  return new ModelSwitchError('request_too_large', `Request body is larger than the limit of ${limitBytes} bytes`);
}

function tooDeep(maxDepth: number): ModelSwitchError {
  return invalidRequest(`Request body nests arrays and objects deeper than ${maxDepth} levels`, 'body');
}

function busy(): ModelSwitchError {
  return new ModelSwitchError('server_busy', 'The gateway is holding too many request bodies right now. Please retry shortly.', {
    headers: { 'Retry-After': String(SERVER_BUSY_RETRY_AFTER_SECONDS) },
  });
}

/** The content codings a body may come in (RFC 9110 §8.4.1), and how to undo each. */
const DECODERS: Readonly<Record<string, () => Transform>> = {
  gzip: createGunzip,
  'x-gzip': createGunzip,
  deflate: createInflate,
  br: createBrotliDecompress,
};

/** `undefined` for no coding (`identity`), the decoder's name, or `null` for one this reader cannot undo (415). */
function contentCoding(header: string | undefined): string | undefined | null {
  if (header === undefined) return undefined;
  const coding = header.trim().toLowerCase();
  if (coding === '' || coding === 'identity') return undefined;
  return Object.hasOwn(DECODERS, coding) ? coding : null;
}

/**
 * Reads and parses a JSON request body with a size limit, or takes the body a host's body parser
 * (`express.json()`) already produced. A body sent with `Content-Encoding: gzip`, `deflate` or `br`
 * is decoded, and `limitBytes` bounds it after decoding (a zip bomb is a 413 once the decoded bytes
 * pass the limit, never a buffer of the whole); any other coding answers 415
 * `unsupported_content_encoding`. Throws 413 `request_too_large` past the limit, 400
 * `invalid_request` for invalid JSON or nesting deeper than `maxDepth` (checked before parsing, so
 * nothing downstream recurses that deep), and 503 `server_busy` when the `budget` is spent.
 */
export async function readJsonBody(
  req: IncomingMessage,
  res: ServerResponse,
  limitBytes: number,
  options: JsonBodyOptions = {},
): Promise<JsonBody> {
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_JSON_DEPTH;
  const hold = holdFor(options.budget, res);
  const parsedByHost = (req as IncomingMessage & { body?: unknown }).body;
  // Express 4's body-parser sets `req.body = {}` even when it did not read the stream, so only
  // trust the host's body when the stream was consumed or there is no body to read.
  const consumed = req.readableEnded || (req as IncomingMessage & { _body?: boolean })._body === true;
  const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
  if (parsedByHost !== undefined && (consumed || !hasBody)) return hostBody(parsedByHost, limitBytes, maxDepth, hold);
  if (req.readableEnded || req.destroyed) {
    // Something before us read the stream without leaving `req.body`: waiting would hang for ever.
    throw invalidRequest('The request body was already consumed by another middleware; mount this router before it');
  }
  const coding = contentCoding(req.headers['content-encoding']);
  if (coding === null) {
    stopReading(req, res);
    throw new ModelSwitchError(
      'unsupported_content_encoding',
      'Content-Encoding must be gzip, deflate, br or identity (one coding) for a JSON request body',
    );
  }
  const declared = Number(req.headers['content-length']);
  if (declared > limitBytes) {
    stopReading(req, res);
    throw tooLarge(limitBytes);
  }
  const raw = await readStream(req, res, limitBytes, coding === undefined ? undefined : (DECODERS[coding] as () => Transform)(), hold);
  if (exceedsDepth(raw, maxDepth)) throw tooDeep(maxDepth);
  return { raw, value: parseJson(raw) };
}

/** A body a host's parser produced: checked for depth before it is serialized (which recurses), then counted. */
function hostBody(parsed: unknown, limitBytes: number, maxDepth: number, hold: Hold | undefined): JsonBody {
  const isText = Buffer.isBuffer(parsed) || typeof parsed === 'string';
  if (!isText && valueDepthExceeds(parsed, maxDepth)) throw tooDeep(maxDepth);
  const raw = Buffer.isBuffer(parsed) ? parsed : Buffer.from(typeof parsed === 'string' ? parsed : (JSON.stringify(parsed) ?? ''));
  if (raw.length > limitBytes) throw tooLarge(limitBytes);
  if (hold !== undefined && !hold.take(raw.length)) throw busy();
  if (!isText) return { raw, value: parsed };
  if (exceedsDepth(raw, maxDepth)) throw tooDeep(maxDepth);
  return { raw, value: parseJson(raw) };
}

/** One request's share of a {@link BufferBudget}, given back once when its response closes. */
interface Hold {
  take(bytes: number): boolean;
}

function holdFor(budget: BufferBudget | undefined, res: ServerResponse): Hold | undefined {
  if (budget === undefined) return undefined;
  let taken = 0;
  let open = true;
  res.once('close', () => {
    open = false;
    budget.give(taken);
    taken = 0;
  });
  return {
    take(bytes) {
      if (!open || !budget.take(bytes)) return false;
      taken += bytes;
      return true;
    },
  };
}

/**
 * The request's bytes, decoded by `decoder` when there is one; at most `limitBytes` of them (the
 * bytes on the wire are bounded by it too), each counted in `hold` as it is kept.
 */
function readStream(
  req: IncomingMessage,
  res: ServerResponse,
  limitBytes: number,
  decoder: Transform | undefined,
  hold: Hold | undefined,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  let wireSize = 0;
  return new Promise<Buffer>((resolve, reject) => {
    let done = false;
    const fail = (error: ModelSwitchError) => {
      if (done) return;
      done = true;
      cleanup();
      decoder?.destroy();
      stopReading(req, res);
      reject(error);
    };
    const keep = (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limitBytes) return fail(tooLarge(limitBytes));
      if (hold !== undefined && !hold.take(chunk.length)) return fail(busy());
      chunks.push(chunk);
    };
    const finish = () => {
      if (done) return;
      done = true;
      cleanup();
      resolve(Buffer.concat(chunks, size));
    };
    const onWire = (chunk: Buffer) => {
      wireSize += chunk.length;
      if (wireSize > limitBytes) return fail(tooLarge(limitBytes));
      // The decoder buffers what it is given: a slow reader of its output must hold the request back.
      if (decoder !== undefined && !decoder.write(chunk)) {
        req.pause();
        decoder.once('drain', () => req.resume());
      }
    };
    const onAborted = () => fail(invalidRequest('The request body could not be read'));
    const onCorrupt = () => fail(invalidRequest('The request body could not be decoded (Content-Encoding)'));
    const cleanup = () => {
      req.off('data', decoder === undefined ? keep : onWire);
      req.off('end', onRequestEnd);
      req.off('error', onAborted);
      req.off('aborted', onAborted);
      if (decoder !== undefined) {
        decoder.off('data', keep);
        decoder.off('end', finish);
        decoder.off('error', onCorrupt);
        // A late error of a destroyed decoder must not be an unhandled 'error' event.
        decoder.on('error', () => {});
      }
    };
    const onRequestEnd = () => (decoder === undefined ? finish() : decoder.end());
    if (decoder !== undefined) {
      decoder.on('data', keep);
      decoder.on('end', finish);
      decoder.on('error', onCorrupt);
    }
    req.on('data', decoder === undefined ? keep : onWire);
    req.on('end', onRequestEnd);
    req.on('error', onAborted);
    req.on('aborted', onAborted);
  });
}

function parseJson(raw: Buffer): unknown {
  if (raw.length === 0) return undefined;
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    throw invalidRequest('Request body is not valid JSON');
  }
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACKET = 0x5b;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACKET = 0x5d;
const CLOSE_BRACE = 0x7d;

/**
 * Whether JSON text nests arrays and objects deeper than `maxDepth`, read byte by byte (brackets
 * inside strings do not count). Run before `JSON.parse`, so a deep body costs one linear pass and
 * never reaches the recursive code after it (`JSON.stringify`, validation), whose stack it would
 * overflow. Invalid JSON may pass: the parse refuses it next.
 */
export function exceedsDepth(raw: Buffer, maxDepth: number): boolean {
  // Too few brackets to be too deep: the usual body costs one native search, not a loop.
  if (countBrackets(raw, maxDepth + 1) <= maxDepth) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < raw.length; i++) {
    const byte = raw[i];
    if (inString) {
      if (byte === BACKSLASH) i++;
      else if (byte === QUOTE) inString = false;
    } else if (byte === QUOTE) {
      inString = true;
    } else if (byte === OPEN_BRACKET || byte === OPEN_BRACE) {
      if (++depth > maxDepth) return true;
    } else if (byte === CLOSE_BRACKET || byte === CLOSE_BRACE) {
      depth--;
    }
  }
  return false;
}

/** How many `[` and `{` bytes `raw` holds, counting no further than `stopAt`. */
function countBrackets(raw: Buffer, stopAt: number): number {
  let count = 0;
  for (const bracket of [OPEN_BRACKET, OPEN_BRACE]) {
    for (let at = raw.indexOf(bracket); at >= 0 && count < stopAt; at = raw.indexOf(bracket, at + 1)) count++;
  }
  return count;
}

/** Whether a parsed value nests arrays and objects deeper than `maxDepth`; walked without recursion. */
function valueDepthExceeds(value: unknown, maxDepth: number): boolean {
  const pending: Array<{ value: unknown; depth: number }> = [{ value, depth: 0 }];
  const seen = new Set<object>();
  while (pending.length > 0) {
    const next = pending.pop() as { value: unknown; depth: number };
    if (typeof next.value !== 'object' || next.value === null) continue;
    const depth = next.depth + 1;
    if (depth > maxDepth) return true;
    // A host's parser makes trees; a cycle would make JSON.stringify throw, which answers 500.
    if (seen.has(next.value)) continue;
    seen.add(next.value);
    for (const child of Object.values(next.value)) pending.push({ value: child, depth });
  }
  return false;
}

/** Answering before the body is read: drop the rest of it and close the connection afterwards. */
function stopReading(req: IncomingMessage, res: ServerResponse): void {
  if (!res.headersSent) res.setHeader('Connection', 'close');
  req.resume();
}

/** Whether a value is a plain JSON object (not an array, not null). */
export function isJsonObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
