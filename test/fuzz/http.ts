import { type IncomingHttpHeaders, type RequestListener, type Server, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One generated request, sent as it is (no header or body normalisation beyond what Node's client insists on). */
export interface FuzzRequest {
  method: string;
  path: string;
  headers: Array<[string, string]>;
  /** The body bytes; `undefined` sends none. */
  body: Buffer | undefined;
  /** Send the body in two writes with chunked transfer coding instead of one with Content-Length. */
  chunked: boolean;
}

export interface FuzzAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  /** The answer's body as text (UTF-8). */
  text: string;
  /** Every header line and the body, for scanning the whole answer. */
  whole: string;
}

/** A server on 127.0.0.1 for one app; `close()` ends its connections. */
export interface Listening {
  port: number;
  close(): Promise<void>;
}

export async function listen(app: RequestListener): Promise<Listening> {
  const server: Server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Sends `req` on a fresh connection (so an answer that closes its socket early affects no other
 * case) and reads the whole answer.
 */
export function send(port: number, req: FuzzRequest): Promise<FuzzAnswer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of req.headers) {
      const known = headers[name];
      headers[name] = known === undefined ? value : [...(Array.isArray(known) ? known : [known]), value];
    }
    if (req.body !== undefined && req.chunked) headers['transfer-encoding'] = 'chunked';
    let answered = false;
    const outgoing = request({ host: '127.0.0.1', port, method: req.method, path: req.path, headers, agent: false }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const lines: string[] = [];
        for (let i = 0; i < res.rawHeaders.length; i += 2) lines.push(`${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}`);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, whole: `${lines.join('\n')}\n\n${text}` });
      });
    });
    // A server may answer (a 413, say) and close before the whole body is written: the answer counts.
    outgoing.on('error', (error) => {
      if (!answered) reject(error);
    });
    if (req.body === undefined) {
      outgoing.end();
    } else if (req.chunked) {
      const half = Math.floor(req.body.length / 2);
      outgoing.write(req.body.subarray(0, half));
      outgoing.end(req.body.subarray(half));
    } else {
      outgoing.setHeader('content-length', req.body.length);
      outgoing.end(req.body);
    }
  });
}
