import type { IncomingMessage } from 'node:http';
import { ModelSwitchError, invalidRequest } from '../errors/errors.js';
import type { Middleware } from '../http/middleware.js';
import { answerError, sendJson } from '../http/respond.js';
import { type PublicLedgerEntry, publicLedgerEntry } from '../keys/public-ledger-entry.js';
import { assertStore } from '../store/assert-store.js';
import { StoreGuard, type StoreGuardOptions, resolveStoreGuardOptions } from '../store/guard.js';
import { MAX_USAGE_NAME_LENGTH } from '../store/spend-rules.js';
import type { KeyStore } from '../store/types.js';
import { isGetOf, verifiedKeyRoute } from './verified-route.js';
import type { ModelSwitchContext } from './authenticator.js';

/** Whether a request is `GET <mount>/generation` (query string and trailing slash ignored). */
export function isGenerationRequest(req: IncomingMessage): boolean {
  return isGetOf(req, '/generation');
}

/**
 * The ledger entry of one of the calling key's own requests, found by `?id=`: the gateway's
 * `X-Request-Id` or the upstream's answer id. Anything else (unknown, trimmed, another key's or
 * another account's) is 404 `generation_not_found`, the same answer for each, so it tells nothing
 * of other keys' requests. A missing, repeated or over-long `id`, or another parameter, is 400.
 */
export async function findGeneration(
  store: Pick<KeyStore, 'findUsageEntry'>,
  guard: Pick<StoreGuard, 'run'>,
  context: ModelSwitchContext,
  url: string | undefined,
): Promise<PublicLedgerEntry> {
  const query = new URLSearchParams((url ?? '').split('?')[1] ?? '');
  let id: string | undefined;
  for (const [name, value] of query) {
    if (name !== 'id') throw invalidRequest(`Unknown query parameter ${name}`, name);
    if (id !== undefined) throw invalidRequest('id may be given once', 'id');
    id = value;
  }
  if (id === undefined || id === '') {
    throw invalidRequest('id is required: the X-Request-Id of the answer, or the id the upstream gave it', 'id');
  }
  if (id.length > MAX_USAGE_NAME_LENGTH) throw invalidRequest(`id must be at most ${MAX_USAGE_NAME_LENGTH} characters`, 'id');
  const found = id;
  const entry = await guard.run('findUsageEntry', () => store.findUsageEntry(context.account.id, found));
  if (entry === null || entry.keyId !== context.key.id) {
    throw new ModelSwitchError('generation_not_found', `No generation with id ${found} for this API key`, { param: 'id' });
  }
  return publicLedgerEntry(entry);
}

/**
 * Answers `GET /generation?id=` (below where it is mounted, so `/v1/generation`) with the ledger
 * entry of one of the verified key's own requests, by the `X-Request-Id` the gateway answered it
 * with or the upstream's answer id (`chatcmpl-…`); 404 `generation_not_found` for anything else.
 * Passes every other request on. `proxyRouter` includes it; mount this after `modelSwitchAuth`
 * when the inference routes are your own. It never spends: it answers at a spend limit or a zero
 * balance too.
 *
 * @example
 * ```ts
 * app.use('/v1', modelSwitchAuth(store), generationRoute(store));
 * // GET /v1/generation?id=req_Vx8rJ2m0Qe4h0bq1XyZ9aB3c →
 * // {"id":3,"type":"usage","amount":-0.0001425,"balanceAfter":9.9998575,"keyId":2,"model":"gpt-4o",…}
 * ```
 */
export function generationRoute(store: KeyStore, options: StoreGuardOptions = {}): Middleware {
  assertStore(store, 'generationRoute');
  const resolved = resolveStoreGuardOptions(options, 'generationRoute');
  const guard = new StoreGuard(store, resolved);
  return verifiedKeyRoute('/generation', '/v1/generation', (req, res, context) => {
    findGeneration(store, guard, context, req.url).then(
      (entry) => sendJson(res, 200, entry),
      (error: unknown) => answerError(res, error, resolved.logger),
    );
  });
}
