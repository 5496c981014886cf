/**
 * Run as its own process by settlement.test.ts: a settlement that fails twice is retried in the
 * background; the servers close, and only `drain()` keeps the process alive until the charge lands.
 * Prints the key's stored usage and reservation as JSON, then exits on its own.
 */
import { chat, post, startGateway, storeFailingSettlements } from './harness.js';

const { store } = storeFailingSettlements(2);
const gateway = await startGateway({ store });
const answer = await post(gateway, '/chat/completions', chat());
await gateway.close();
// Nothing but the retry timers is left on the event loop now.
await gateway.proxy.drain();
const key = await store.getKey(gateway.proxyKeyId);
process.stdout.write(`${JSON.stringify({ status: answer.status, usage: key?.usage, reserved: key?.reserved })}\n`);
