/**
 * One gateway process of postgres-processes.test.ts, run with `node --import tsx`: its own
 * `PostgresKeyStore` (its own pool), which it migrates at start as a deployed gateway would (the
 * processes start together, so their migrations race), then {@link serveGateway}.
 *
 * Environment: DATABASE_URL, GATEWAY_SCHEMA, GATEWAY_UPSTREAM (the mock's base URL with `/v1`), GATEWAY_NOW;
 * optional: GATEWAY_HOLDS (JSON of the proxy's `timeoutMs`, `holdMarginMs`, `holdSweepIntervalMs`).
 */
import { PostgresKeyStore } from '../../src/store/postgres/index.js';
import { holdOptionsFromEnv, serveGateway } from './gateway-processes.js';

const { DATABASE_URL, GATEWAY_SCHEMA, GATEWAY_UPSTREAM, GATEWAY_NOW } = process.env;
if (!DATABASE_URL || !GATEWAY_SCHEMA || !GATEWAY_UPSTREAM || !GATEWAY_NOW) {
  process.stderr.write('postgres-gateway-process: DATABASE_URL, GATEWAY_SCHEMA, GATEWAY_UPSTREAM and GATEWAY_NOW must be set\n');
  process.exit(2);
}

const store = new PostgresKeyStore({ connectionString: DATABASE_URL, schema: GATEWAY_SCHEMA });
await store.migrate();
serveGateway(store, { upstream: GATEWAY_UPSTREAM, now: Number(GATEWAY_NOW), holds: holdOptionsFromEnv(process.env.GATEWAY_HOLDS) });
