/**
 * Child of the bench's instruction count (scenario 1): one hot-path server, which run.ts starts
 * under valgrind's callgrind, sends a fixed number of requests and stops by ending stdin. Prints
 * `ready <port>` and, on the next line, the key to send (stdout is a pipe the runner reads, never
 * shown). The variant is the first argument: see VARIANTS. Besides the variant's routes, `/gc` runs
 * a full garbage collection (with `--expose-gc`) and `/cpu` answers the process's CPU time so far.
 */
import { type RequestListener, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type express from 'express';
import { type FloorStep, HELLO, contractFloor, expressApp, passThrough, prewarm, quietAuth } from './hot-path.js';
import { KeyHasher } from './package.js';
import { issueProxyKeys, openStore } from './stores.js';

const bench = await openStore('memory');
const hasher = new KeyHasher({ scrypt: { logN: 10 } });
const keys = await issueProxyKeys(bench.store, hasher, 1);
await prewarm(hasher, bench.store, keys);
const key = keys[0]?.key as string;

const floorOnly = (...steps: FloorStep[]) => expressApp(contractFloor(key, new Set(steps)) as express.RequestHandler);

/** Every variant the runner may ask for: the hot path's servers, and the floor's steps one at a time. */
const VARIANTS: Record<string, () => RequestListener> = {
  'node:http': () => (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(HELLO) });
    res.end(HELLO);
  },
  express: () => expressApp(),
  'pass-through': () => expressApp(passThrough as express.RequestHandler),
  modelSwitchAuth: () => expressApp(quietAuth(bench.store, hasher) as express.RequestHandler),
  'contract floor': () => expressApp(contractFloor(key) as express.RequestHandler),
  'floor: token + SHA-256 lookup': () => floorOnly('lookup'),
  'floor: count + four headers': () => floorOnly('count'),
  'floor: req.modelSwitch': () => floorOnly('context'),
};

const variant = process.argv[2] ?? '';
const make = VARIANTS[variant];
if (!make) {
  console.error(`unknown variant ${JSON.stringify(variant)}; one of ${Object.keys(VARIANTS).join(', ')}`);
  process.exit(2);
}
const handler = make();
const gc = (globalThis as { gc?: () => void }).gc;
const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
  if (req.url === '/gc') {
    gc?.();
    res.end(gc ? 'collected' : 'no --expose-gc');
  } else if (req.url === '/cpu') {
    res.end(JSON.stringify(process.cpuUsage()));
  } else {
    handler(req, res);
  }
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`ready ${(server.address() as AddressInfo).port}\n${key}\n`);
});
process.stdin.resume();
process.stdin.on('end', () => {
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
