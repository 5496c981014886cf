import { IncomingMessage } from 'node:http';
import { Socket } from 'node:net';

/** A GET request object as Node's HTTP server makes it, with one `Authorization: Bearer` header, for calling a middleware without HTTP. */
export function bearerRequest(token: string, url = '/whoami'): IncomingMessage {
  const req = new IncomingMessage(new Socket());
  req.method = 'GET';
  req.url = url;
  req.headers = { host: 'localhost', authorization: `Bearer ${token}` };
  req.rawHeaders = ['Host', 'localhost', 'Authorization', `Bearer ${token}`];
  return req;
}
