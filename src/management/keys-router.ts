import type { IncomingMessage, ServerResponse } from 'node:http';
import { prepareKey, prepareRotation } from '../keys/accounts.js';
import { isoTime, publicKey } from '../keys/public-key.js';
import type { Middleware } from '../http/middleware.js';
import { answerError } from '../http/respond.js';
import { assertStore } from '../store/assert-store.js';
import { Authenticator, type ModelSwitchContext } from '../auth/authenticator.js';
import { trackRequest } from '../auth/request-metrics.js';
import { EventDispatcher, type KeyChange, billingKeyActor } from '../events/events.js';
import { DEFAULT_KEYS_PAGE_LIMIT } from '../defaults.js';
import { type KeysRouterOptions, resolveKeysRouterOptions } from './options.js';
import { accountRoutes } from './account-routes.js';
import { isJsonObject, readJsonBody } from '../http/body.js';
import { ModelSwitchError, invalidRequest } from '../errors/errors.js';
import { answerOpenApi } from './openapi.js';
import { sendError, sendJson } from '../http/respond.js';
import type { KeyRecord, KeyStore } from '../store/types.js';
import { gracePeriodFromBody, keyChangesFromBody, keySettingsFromBody, validateId } from './validation.js';

const CREATE_FIELDS = new Set(['name', 'expires_at', 'limit', 'limit_reset', 'rate_limit', 'models']);
const UPDATE_FIELDS = new Set(['name', 'active', 'expires_at', 'limit', 'limit_reset', 'rate_limit', 'models']);
const READ_ONLY_FIELDS = new Set([
  'id',
  'accountId',
  'account_id',
  'usage',
  'hash',
  'type',
  'key',
  'prefix',
  'createdAt',
  'created_at',
  'lastUsedAt',
  'last_used_at',
]);
const ROTATE_FIELDS = new Set(['grace_period']);
const COLLECTION = /^\/keys\/?$/;
/** Where below the mount the OpenAPI document is served (`GET /api/openapi.json`). */
const OPENAPI_PATH = '/openapi.json';
const ITEM = /^\/keys\/([^/]*)\/?$/;
const ROTATE = /^\/keys\/([^/]*)\/rotate\/?$/;
/** The methods each route answers; others answer 405 with `Allow`. */
const ALLOWED_METHODS = {
  collection: ['GET', 'HEAD', 'POST'],
  item: ['GET', 'HEAD', 'PUT', 'PATCH', 'DELETE'],
  rotate: ['POST'],
} as const;
type Route = keyof typeof ALLOWED_METHODS;
/** The route label of each route in the request metrics. */
const ROUTE_LABELS: Record<Route, string> = { collection: '/api/keys', item: '/api/keys/:id', rotate: '/api/keys/:id/rotate' };

/**
 * The key management API, scoped to the billing key's account (`Authorization: Bearer mk-…`):
 *
 * | Route | Answer |
 * |---|---|
 * | `GET /keys?limit=&after=` | 200 `{"keys":[…],"has_more":bool}` |
 * | `POST /keys` | 201 `{"id","key",…}`: the only time the key value appears |
 * | `GET /keys/:id` | 200 key |
 * | `PUT`/`PATCH /keys/:id` | 200 key |
 * | `DELETE /keys/:id` | 200 `{"id","deleted":true}` |
 * | `POST /keys/:id/rotate` | 200 `{"id","key",…,"previousKeyExpiresAt"}`: a new secret for the same key, shown once |
 * | `GET /account` | 200 `{"id","balance","reserved","available","isFreeTier","createdAt"}` |
 * | `GET /transactions?limit=&before=&key_id=&type=` | 200 `{"transactions":[…],"has_more":bool}`, newest first |
 * | `GET /usage?from=&to=&group_by=` | 200 `{"usage":[…],"total":{…}}` |
 * | `GET /openapi.json` | 200 the OpenAPI 3.1 document of the package's routes (public, no key) |
 *
 * Paths are relative to where it is mounted; other paths go to `next()`. It manages proxy keys
 * (`ms-`); billing keys are issued with `issueKey` and answer 404 here.
 *
 * @example
 * ```ts
 * app.use('/api', keysRouter(store));
 * // curl -X POST localhost:3000/api/keys -H "Authorization: Bearer mk-…" -d '{"name":"Production"}'
 * ```
 */
export function keysRouter(store: KeyStore, options: KeysRouterOptions = {}): Middleware {
  assertStore(store, 'keysRouter');
  const { maxBodyBytes, auth } = resolveKeysRouterOptions(options);
  const authenticator = new Authenticator(store, auth);
  const { guard, now, logger, metrics } = authenticator;
  const accountRoute = accountRoutes(store, authenticator);
  const events = new EventDispatcher(auth.onEvent, logger);

  /** Reports a change of key `keyId` made by the request's billing key, once its answer is sent. */
  function keyEvent(res: ServerResponse, context: ModelSwitchContext, keyId: number, at: number, event: KeyChange): void {
    if (!events.enabled) return;
    events.afterResponse(res, { ...event, accountId: context.account.id, keyId, actor: billingKeyActor(context.key.id), time: at });
  }

  /** The key with this id if it is one of the caller's proxy keys; 404 otherwise (never 403). */
  async function ownKey(context: ModelSwitchContext, rawId: string): Promise<KeyRecord> {
    const id = validateId(rawId);
    const record = await guard.run('getKey', () => store.getKey(id));
    if (!record || record.accountId !== context.account.id || record.type !== 'proxy') {
      throw new ModelSwitchError('key_not_found', `No API key with id ${id}`, { param: 'id' });
    }
    return record;
  }

  async function list(req: IncomingMessage, res: ServerResponse, context: ModelSwitchContext): Promise<void> {
    const query = new URLSearchParams((req.url ?? '').split('?')[1] ?? '');
    let limit = DEFAULT_KEYS_PAGE_LIMIT;
    let after: number | undefined;
    for (const [name, value] of query) {
      if (name === 'limit') {
        limit = /^[0-9]{1,4}$/.test(value) ? Number(value) : 0;
        if (limit < 1 || limit > 1000) throw invalidRequest('limit must be an integer from 1 to 1000', 'limit');
      } else if (name === 'after') {
        after = validateId(value, 'after');
      } else {
        throw invalidRequest(`Unknown query parameter ${name}`, name);
      }
    }
    const page = await guard.run('listKeys', () =>
      store.listKeys(context.account.id, { type: 'proxy', limit, ...(after === undefined ? {} : { after }) }),
    );
    const at = now();
    sendJson(res, 200, { keys: page.keys.map((key) => publicKey(key, at)), has_more: page.hasMore });
  }

  async function create(req: IncomingMessage, res: ServerResponse, context: ModelSwitchContext): Promise<void> {
    const body = await objectBody(req, res, CREATE_FIELDS);
    const at = now();
    const input = { accountId: context.account.id, type: 'proxy' as const, ...keySettingsFromBody(body, at) };
    // Bounded per account, and behind every verification: one account's flood of creations neither
    // fills the scrypt queue nor delays another account's requests (see KeyHasher).
    const prepared = await prepareKey(input, { hasher: auth.hasher, now: at, boundedPerAccount: true });
    const record = await guard.run('insertKey', () => store.insertKey(prepared.record));
    const { id, ...fields } = publicKey(record, at);
    sendJson(res, 201, { id, key: prepared.key, ...fields });
    keyEvent(res, context, record.id, at, { type: 'key.created' });
  }

  async function update(req: IncomingMessage, res: ServerResponse, context: ModelSwitchContext, rawId: string): Promise<void> {
    const current = await ownKey(context, rawId);
    const body = await objectBody(req, res, UPDATE_FIELDS);
    const at = now();
    const changes = keyChangesFromBody(body, at);
    const updated = await guard.run('updateKey', () => store.updateKey(current.id, changes));
    if (!updated) throw new ModelSwitchError('key_not_found', `No API key with id ${current.id}`, { param: 'id' });
    sendJson(res, 200, publicKey(updated, at));
    keyEvent(res, context, updated.id, at, { type: 'key.updated', changed: Object.keys(body) });
  }

  /**
   * A new secret for one of the caller's keys: same record (id, handle and prefix, name, limits,
   * usage, counters, `active`); the previous secret keeps working until `previousKeyExpiresAt`
   * (`grace_period` after now; none for 0), and a rotation within a grace period ends the oldest
   * secret at once (see `KeyStore.rotateKey`).
   */
  async function rotate(req: IncomingMessage, res: ServerResponse, context: ModelSwitchContext, rawId: string): Promise<void> {
    const current = await ownKey(context, rawId);
    // The body is optional: `curl -X POST …/rotate` rotates with no grace period.
    const body = await objectBody(req, res, ROTATE_FIELDS, true);
    const gracePeriodMs = gracePeriodFromBody(body);
    const at = now();
    const prepared = await prepareRotation(current, {
      ...(options.hasher ? { hasher: options.hasher } : {}),
      now: at,
      gracePeriodMs,
      boundedPerAccount: true,
    });
    const rotated = await guard.run('rotateKey', () => store.rotateKey(prepared.rotation));
    if (!rotated) throw new ModelSwitchError('key_not_found', `No API key with id ${current.id}`, { param: 'id' });
    const { id, ...fields } = publicKey(rotated, at);
    const deadline = rotated.previousKeyExpiresAt;
    sendJson(res, 200, { id, key: prepared.key, ...fields, previousKeyExpiresAt: deadline === null ? null : isoTime(deadline) });
    keyEvent(res, context, rotated.id, at, { type: 'key.rotated', previousKeyExpiresAt: deadline });
  }

  async function objectBody(
    req: IncomingMessage,
    res: ServerResponse,
    allowed: Set<string>,
    optional = false,
  ): Promise<Record<string, unknown>> {
    const { value } = await readJsonBody(req, res, maxBodyBytes);
    if (optional && value === undefined) return {};
    if (!isJsonObject(value)) throw invalidRequest('Request body must be a JSON object');
    for (const name of Object.keys(value)) {
      if (READ_ONLY_FIELDS.has(name)) throw invalidRequest(`${name} cannot be set`, name);
      if (!allowed.has(name)) throw invalidRequest(`Unknown field ${name}`, name);
    }
    return value;
  }

  async function handle(req: IncomingMessage, res: ServerResponse, route: Route, rawId: string): Promise<void> {
    const context = await authenticator.admit(req, res);
    (req as IncomingMessage & { modelSwitch?: ModelSwitchContext }).modelSwitch = context;
    const method = req.method;
    if (route === 'collection' && method !== 'POST') return list(req, res, context);
    // Only the listing takes query parameters; anywhere else one is a mistake worth saying.
    for (const [name] of new URLSearchParams((req.url ?? '').split('?')[1] ?? '')) {
      throw invalidRequest(`Unknown query parameter ${name}`, name);
    }
    if (route === 'collection') return create(req, res, context);
    if (route === 'rotate') return rotate(req, res, context, rawId);
    if (method === 'PUT' || method === 'PATCH') return update(req, res, context, rawId);
    const record = await ownKey(context, rawId);
    if (method === 'DELETE') {
      const deleted = await guard.run('deleteKey', () => store.deleteKey(record.id));
      if (!deleted) throw new ModelSwitchError('key_not_found', `No API key with id ${record.id}`, { param: 'id' });
      sendJson(res, 200, { id: record.id, deleted: true });
      keyEvent(res, context, record.id, now(), { type: 'key.deleted' });
      return;
    }
    sendJson(res, 200, publicKey(record, now()));
  }

  return function keysRouter(req, res, next) {
    const path = (req.url ?? '/').split('?', 1)[0] as string;
    // Public, before any key is read: the document describes how to authenticate.
    if (path === OPENAPI_PATH && req.method !== 'OPTIONS') {
      trackRequest(metrics, req, res, '/api/openapi.json');
      answerOpenApi(req, res);
      return;
    }
    if (accountRoute(req, res, path)) return;
    const rotation = ROTATE.exec(path);
    const item = rotation ?? ITEM.exec(path);
    const route: Route | null = COLLECTION.test(path) ? 'collection' : rotation ? 'rotate' : item ? 'item' : null;
    if (route === null || req.method === 'OPTIONS') {
      next();
      return;
    }
    trackRequest(metrics, req, res, ROUTE_LABELS[route]);
    const allowed: readonly string[] = ALLOWED_METHODS[route];
    if (!allowed.includes(req.method ?? '')) {
      sendError(
        res,
        new ModelSwitchError('method_not_allowed', `${req.method} is not supported on this route`, {
          headers: { Allow: allowed.join(', ') },
        }),
      );
      return;
    }
    handle(req, res, route, decodeURIComponentSafe(item?.[1] ?? '')).catch((error: unknown) => answerError(res, error, logger));
  };
}

function decodeURIComponentSafe(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}
