import type { IncomingMessage, ServerResponse } from 'node:http';
import { ModelSwitchError, invalidRequest } from '../errors/errors.js';

/** What a JSON body reader produced: the raw bytes (to re-send upstream) and the parsed value. */
export interface JsonBody {
  raw: Buffer;
  /** `undefined` for an empty body. */
  value: unknown;
}

function tooLarge(limitBytes: number): ModelSwitchError {
  return new ModelSwitchError('request_too_large', `Request body is larger than the limit of ${limitBytes} bytes`);
}

/**
 * Reads and parses a JSON request body with a size limit, or takes the body a host's body parser
 * (`express.json()`) already produced. Throws 413 `request_too_large` past the limit and 400
 * `invalid_request` for invalid JSON. Never buffers more than `limitBytes`.
 */
export async function readJsonBody(req: IncomingMessage, res: ServerResponse, limitBytes: number): Promise<JsonBody> {
  const parsedByHost = (req as IncomingMessage & { body?: unknown }).body;
  // Express 4's body-parser sets `req.body = {}` even when it did not read the stream, so only
  // trust the host's body when the stream was consumed or there is no body to read.
  const consumed = req.readableEnded || (req as IncomingMessage & { _body?: boolean })._body === true;
  const hasBody = req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0;
  if (parsedByHost !== undefined && (consumed || !hasBody)) {
    const raw = Buffer.isBuffer(parsedByHost)
      ? parsedByHost
      : Buffer.from(typeof parsedByHost === 'string' ? parsedByHost : (JSON.stringify(parsedByHost) ?? ''));
    if (raw.length > limitBytes) throw tooLarge(limitBytes);
    const value = Buffer.isBuffer(parsedByHost) || typeof parsedByHost === 'string' ? parseJson(raw) : parsedByHost;
    return { raw, value };
  }
  if (req.readableEnded || req.destroyed) {
    // Something before us read the stream without leaving `req.body`: waiting would hang for ever.
    throw invalidRequest('The request body was already consumed by another middleware; mount this router before it');
  }
  const declared = Number(req.headers['content-length']);
  if (declared > limitBytes) {
    stopReading(req, res);
    throw tooLarge(limitBytes);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  const raw = await new Promise<Buffer>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limitBytes) {
        cleanup();
        stopReading(req, res);
        reject(tooLarge(limitBytes));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      resolve(Buffer.concat(chunks, size));
    };
    const onError = () => {
      cleanup();
      reject(invalidRequest('The request body could not be read'));
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onError);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onError);
  });
  return { raw, value: parseJson(raw) };
}

function parseJson(raw: Buffer): unknown {
  if (raw.length === 0) return undefined;
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    throw invalidRequest('Request body is not valid JSON');
  }
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
