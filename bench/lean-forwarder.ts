/**
 * The lean forwarder of scenario 6: the least a Node gateway can do and still read the body it
 * forwards. A `node:http` handler that parses the JSON body (as any gateway must, to route by
 * `model`), sends it re-serialized to the upstream over a keep-alive `http.Agent`, and pipes the
 * answer back. No auth, no metering, no error bodies: its throughput is the limit for a Node
 * forwarder on this machine, which `proxyRouter` is measured against.
 */
import { Agent, type IncomingMessage, type RequestListener, type ServerResponse, request } from 'node:http';

/** A request listener forwarding every request to `target` (`http://host:port`, no path) on kept-alive connections. */
export function leanForwarder(target: string): RequestListener {
  const upstream = new URL(target);
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  return function forward(req: IncomingMessage, res: ServerResponse): void {
    const parts: Buffer[] = [];
    req.on('data', (part: Buffer) => parts.push(part));
    req.on('end', () => {
      let body: string;
      try {
        body = JSON.stringify(JSON.parse(Buffer.concat(parts).toString('utf8')));
      } catch {
        res.writeHead(400).end();
        return;
      }
      const out = request(
        {
          host: upstream.hostname,
          port: upstream.port,
          method: req.method,
          // Mounted on Express (`app.use('/v1', …)`), `req.url` has lost the mount path.
          path: (req as { originalUrl?: string }).originalUrl ?? req.url,
          agent,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      out.on('error', () => {
        if (!res.headersSent) res.writeHead(502);
        res.end();
      });
      out.end(body);
    });
  };
}
