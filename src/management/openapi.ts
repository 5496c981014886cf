import type { IncomingMessage, ServerResponse } from 'node:http';
import { DEFAULT_PROXY_PATHS } from '../defaults.js';
import { ModelSwitchError, type ModelSwitchErrorCode, type ModelSwitchErrorType, errorStatusAndType } from '../errors/errors.js';
import { sendError } from '../http/respond.js';

/**
 * The `Cache-Control` of `GET /api/openapi.json`: the document changes only with the package, so
 * clients and shared caches may keep it for five minutes.
 */
export const OPENAPI_CACHE_CONTROL = 'public, max-age=300';

/** A JSON value, as the document is made of. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [name: string]: JsonValue };
/** A JSON object of the document (a schema, an operation, a response…). */
export type JsonObject = { [name: string]: JsonValue };

/** The OpenAPI 3.1 document of every `/api` and `/v1` route the package answers. */
export interface OpenApiDocument extends JsonObject {
  openapi: string;
  info: JsonObject;
  paths: { [path: string]: JsonObject };
  components: JsonObject;
}

/** Error codes the document names: every code the package answers with but the dashboard's, whose JSON API serves its own page, not clients (docs/dashboard.md). */
export type DocumentedErrorCode = Exclude<ModelSwitchErrorCode, 'session_required' | 'csrf_check_failed'>;

/** When each documented code is answered (the contract's error table, DESIGN "Errors"); its status and type are ModelSwitchError's. */
const WHEN: Record<DocumentedErrorCode, string> = {
  invalid_api_key:
    'the Authorization header is missing or malformed (message "Missing or invalid Authorization header"), or the key is unknown, mistyped or has a wrong secret',
  expired_api_key: 'the key is past its `expiresAt`',
  wrong_key_type: 'a billing key (`mk-`) on `/v1` or a proxy key (`ms-`) on `/api`; the message says which key to use',
  key_deactivated: 'the key is deactivated (`active: false`)',
  spend_limit_reached: "the request could cost more than is left of the key's spend `limit` in its current period",
  model_not_allowed: "the key's `models` allow-list does not match the request's `model`",
  insufficient_balance: "the account's available balance cannot cover the request",
  rate_limit_exceeded:
    "over the key's rate limit (requests, or tokens per window); on `POST /api/keys` also while the account has too many key creations under way",
  invalid_request:
    'a bad body, field, id or query parameter (`param` names it), or a ModelSwitch key in the URL or body of a proxied request',
  method_not_allowed: 'a method the route does not take (`Allow` lists those it does)',
  key_not_found: "no key with that id, or another account's key (never 403: no existence leak)",
  model_not_found: 'no upstream serves the `model`, or it has no price and the host did not opt in to unpriced models',
  generation_not_found: "no request of this key has that request id or upstream answer id (another key's requests are never found)",
  route_not_found: "the host's own answer to an unknown URL (the package never sends it)",
  request_too_large: 'the body is larger than the configured limit',
  unsupported_content_encoding: 'a `Content-Encoding` other than gzip, deflate, br or identity (one coding)',
  internal_error: 'an unexpected failure of the host or the package (a fixed message, never a stack trace); please report it',
  upstream_error: 'the upstream could not be reached or answered garbage',
  store_unavailable: 'the key store failed or timed out: the gateway fails closed',
  verification_busy: 'too many keys wait for scrypt verification right now (with `Retry-After`)',
  server_busy: 'the gateway holds too many request bodies or key creations right now (with `Retry-After`)',
  upstream_timeout: 'the upstream did not answer within the configured timeout',
};

/** Each documented code's status and type (ModelSwitchError's own) and when it is sent. */
const ERRORS = Object.fromEntries(
  (Object.keys(WHEN) as DocumentedErrorCode[]).map((code) => [code, { ...errorStatusAndType(code), when: WHEN[code] }]),
) as Record<DocumentedErrorCode, { status: number; type: ModelSwitchErrorType; when: string }>;

/**
 * The status and type of a code as this document states them (tests compare them with
 * `ModelSwitchError`'s).
 *
 * @example
 * ```ts
 * documentedError('key_not_found'); // { status: 404, type: 'not_found_error' }
 * ```
 */
export function documentedError(code: DocumentedErrorCode): { status: number; type: ModelSwitchErrorType } {
  const { status, type } = ERRORS[code];
  return { status, type };
}

const ref = (name: string): JsonObject => ({ $ref: `#/components/schemas/${name}` });
const headerRef = (name: string): JsonObject => ({ $ref: `#/components/headers/${name}` });
const nullable = (schema: JsonObject): JsonObject => ({ anyOf: [schema, { type: 'null' }] });
const closed = (properties: { [name: string]: JsonValue }, required: string[] = Object.keys(properties)): JsonObject => ({
  type: 'object',
  required,
  properties,
  additionalProperties: false,
});
const json = (schema: JsonObject): JsonObject => ({ 'application/json': { schema } });

/** The rate-limit headers of an answer to an authenticated request (when a rate limit is in force). */
const RATE_LIMIT_HEADERS: JsonObject = {
  'RateLimit-Policy': headerRef('RateLimit-Policy'),
  'RateLimit-Limit': headerRef('RateLimit-Limit'),
  'RateLimit-Remaining': headerRef('RateLimit-Remaining'),
  'RateLimit-Reset': headerRef('RateLimit-Reset'),
  RateLimit: headerRef('RateLimit'),
};

/** Headers of every answer the package writes itself (not an upstream's passed through). */
const OWN_ANSWER_HEADERS: JsonObject = { 'Cache-Control': headerRef('Cache-Control-No-Store') };

/** Where a request is authenticated, and so what its answers carry. */
type Access = 'public' | 'billing' | 'proxy';

/** Extra headers some error codes always carry. */
function errorHeaders(codes: readonly DocumentedErrorCode[], access: Access, proxied: boolean): JsonObject {
  const headers: JsonObject = { ...OWN_ANSWER_HEADERS };
  if (access !== 'public') Object.assign(headers, RATE_LIMIT_HEADERS);
  const status = ERRORS[codes[0] as DocumentedErrorCode].status;
  // The proxy names a request as soon as it starts handling it, so every refusal from there on carries its id.
  if (proxied)
    headers['X-Request-Id'] = headerRef(
      codes.every((code) => REFUSED_AFTER_NAMING.has(code)) ? 'X-Request-Id' : 'X-Request-Id-After-Authentication',
    );
  if (status === 401) headers['WWW-Authenticate'] = headerRef('WWW-Authenticate');
  if (status === 429) headers['Retry-After'] = headerRef('Retry-After');
  if (status === 503) headers['Retry-After'] = headerRef('Retry-After-When-Busy');
  if (status === 405) headers.Allow = headerRef('Allow');
  if (codes.some((code) => code === 'spend_limit_reached' || code === 'insufficient_balance')) {
    headers['x-should-retry'] = headerRef('x-should-retry');
  }
  return headers;
}

/** Codes a proxied request is only refused with once the proxy named it (after authentication and rate limiting). */
const REFUSED_AFTER_NAMING: ReadonlySet<DocumentedErrorCode> = new Set([
  'insufficient_balance',
  'model_not_found',
  'request_too_large',
  'unsupported_content_encoding',
  'upstream_error',
  'upstream_timeout',
]);

/** One response per status for these codes, each with the error JSON restricted to its codes (`proxied`: a proxied route's). */
function errorResponses(codes: readonly DocumentedErrorCode[], access: Access, proxied = false): JsonObject {
  const byStatus = new Map<number, DocumentedErrorCode[]>();
  for (const code of codes) {
    const status = ERRORS[code].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), code]);
  }
  const responses: JsonObject = {};
  for (const [status, statusCodes] of [...byStatus].sort(([a], [b]) => a - b)) {
    const types = [...new Set(statusCodes.map((code) => ERRORS[code].type))];
    responses[String(status)] = {
      description: statusCodes.map((code) => `\`${code}\`: ${ERRORS[code].when}.`).join('\n'),
      headers: errorHeaders(statusCodes, access, proxied),
      content: json({
        allOf: [ref('Error'), { properties: { error: { properties: { type: { enum: types }, code: { enum: [...statusCodes] } } } } }],
      }),
    };
  }
  return responses;
}

/** The errors of authentication and rate limiting, on every authenticated route. */
const AUTH_ERRORS: readonly DocumentedErrorCode[] = [
  'invalid_api_key',
  'expired_api_key',
  'wrong_key_type',
  'key_deactivated',
  'rate_limit_exceeded',
  'internal_error',
  'store_unavailable',
  'verification_busy',
];
/** The errors of reading a JSON body. */
const BODY_ERRORS: readonly DocumentedErrorCode[] = ['invalid_request', 'request_too_large', 'unsupported_content_encoding'];

interface OperationSpec {
  summary: string;
  description: string;
  access: Access;
  parameters?: JsonValue[];
  requestBody?: JsonObject;
  /** The success answers, by status. */
  answers: JsonObject;
  errors: readonly DocumentedErrorCode[];
  /** Extra responses (the passed-through upstream answer). */
  extra?: JsonObject;
  /** A proxied route: its answers carry `X-Request-Id`. */
  proxied?: boolean;
}

function operation(spec: OperationSpec): JsonObject {
  const op: JsonObject = {
    summary: spec.summary,
    description: spec.description,
    tags: [spec.access === 'proxy' ? 'inference' : 'management'],
    security: spec.access === 'public' ? [] : [{ [spec.access === 'billing' ? 'billingKey' : 'proxyKey']: [] }],
  };
  if (spec.parameters !== undefined) op.parameters = spec.parameters;
  if (spec.requestBody !== undefined) op.requestBody = spec.requestBody;
  const errors = spec.access === 'public' ? spec.errors : [...AUTH_ERRORS, ...spec.errors];
  op.responses = { ...spec.answers, ...errorResponses([...new Set(errors)], spec.access, spec.proxied), ...spec.extra };
  return op;
}

/** A success answer of the package's own: JSON, `Cache-Control: no-store`, and the rate-limit headers. */
function answer(description: string, schema: JsonObject, access: Access = 'billing'): JsonObject {
  return {
    description,
    headers: { ...OWN_ANSWER_HEADERS, ...(access === 'public' ? {} : RATE_LIMIT_HEADERS) },
    content: json(schema),
  };
}

const idParameter: JsonObject = {
  name: 'id',
  in: 'path',
  required: true,
  description: 'The key\'s id, a positive integer (anything else answers 400 with `param: "id"`).',
  schema: { type: 'integer', minimum: 1 },
};
const limitParameter: JsonObject = {
  name: 'limit',
  in: 'query',
  description: 'Page size, 1–1000 (default 100).',
  schema: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
};
const jsonBody = (schema: JsonObject, required = true): JsonObject => ({ required, content: json(schema) });

const usd = (description: string): JsonObject => ({ type: 'number', description });
const time = (description: string): JsonObject => ({ type: 'string', format: 'date-time', description });

const rateLimitSetting: JsonObject = closed(
  {
    requests: { type: 'integer', minimum: 1, description: 'Requests per window.' },
    interval: {
      type: 'string',
      pattern: '^[1-9][0-9]{0,6}[smhd]$',
      description: 'The window: `10s`, `1m`, `1h`, `1d` (at most 366 days).',
    },
    tokens: { type: 'integer', minimum: 1, description: 'Prompt + completion tokens per window (optional).' },
  },
  ['requests', 'interval'],
);
const modelsSetting: JsonObject = nullable({
  type: 'array',
  minItems: 1,
  maxItems: 100,
  items: { type: 'string', minLength: 1 },
  description: 'Models the key may call: exact names, or prefixes ending in `*`; `null` for every model.',
});

const keyProperties: { [name: string]: JsonValue } = {
  id: { type: 'integer', minimum: 1, description: 'Unique per store.' },
  name: { type: 'string', minLength: 1, maxLength: 100 },
  prefix: { type: 'string', pattern: '^ms-[0-9A-Za-z]{4}$', description: 'The first 7 characters of the key.' },
  active: { type: 'boolean' },
  createdAt: time('When the key was created.'),
  expiresAt: nullable(time('When the key stops working; `null` for never.')),
  lastUsedAt: nullable(time('When the key was last used (written at most once a minute).')),
  usage: { type: 'number', minimum: 0, description: 'USD spent through this key in its current limit period.' },
  limit: nullable({ type: 'number', minimum: 0, description: 'USD spend cap per period; `null` for none.' }),
  limitReset: nullable({ enum: ['daily', 'weekly', 'monthly'], description: 'When `usage` starts again from 0 (UTC); `null` for never.' }),
  rateLimit: nullable(rateLimitSetting),
  models: modelsSetting,
};
/** Key fields every key answer has. */
const keyRequired = Object.keys(keyProperties);
const fullKey = { type: 'string', pattern: '^ms-[0-9A-Za-z]{38}$', description: 'The full key: shown in this answer only, never again.' };

const keyInput: { [name: string]: JsonValue } = {
  name: { type: 'string', minLength: 1, maxLength: 100, description: 'Visible text, no control characters, no API key in it.' },
  expires_at: nullable({
    type: 'string',
    description: 'ISO 8601 date (`2030-12-31`, midnight UTC) or date-time with a zone, in the future; `null` for never.',
  }),
  limit: nullable({ type: 'number', minimum: 0, maximum: 1e12, description: 'USD spend cap per period.' }),
  limit_reset: nullable({ enum: ['daily', 'weekly', 'monthly'] }),
  rate_limit: nullable(rateLimitSetting),
  models: modelsSetting,
};

const transaction = closed({
  id: { type: 'integer', minimum: 1, description: 'Increasing in write order: the `before` cursor.' },
  type: { enum: ['usage', 'credit', 'adjustment'] },
  amount: usd('Signed: a `usage` entry is −cost, a `credit` positive, an `adjustment` either sign.'),
  balanceAfter: usd("The account's balance right after this entry."),
  keyId: nullable({ type: 'integer', minimum: 1, description: '`usage`: the key that spent.' }),
  model: nullable({ type: 'string' }),
  promptTokens: nullable({ type: 'integer', minimum: 0 }),
  completionTokens: nullable({ type: 'integer', minimum: 0 }),
  requestId: nullable({ type: 'string', description: 'The `X-Request-Id` the gateway sent on that answer.' }),
  reference: nullable({
    type: 'string',
    description: '`credit`/`adjustment`: the idempotency reference (`opening` for an opening balance).',
  }),
  createdAt: time('When the entry was written.'),
});
const usageCounts: { [name: string]: JsonValue } = {
  requests: { type: 'integer', minimum: 0 },
  promptTokens: { type: 'integer', minimum: 0 },
  completionTokens: { type: 'integer', minimum: 0 },
  cost: usd('USD.'),
};

const schemas: JsonObject = {
  Error: {
    description: "Every error the package answers itself (an upstream's own errors pass through unchanged).",
    ...closed({
      error: closed(
        {
          message: { type: 'string', description: 'For people; never contains a key value.' },
          type: {
            enum: [
              'authentication_error',
              'permission_error',
              'billing_error',
              'rate_limit_error',
              'invalid_request_error',
              'not_found_error',
              'api_error',
            ],
          },
          code: { enum: Object.keys(ERRORS).filter((code) => code !== 'route_not_found') },
          param: { type: 'string', description: 'The request field, query parameter or path parameter the error is about.' },
        },
        ['message', 'type', 'code'],
      ),
    }),
  },
  Key: { description: 'A proxy key as the management API shows it: never its value or hash.', ...closed(keyProperties, keyRequired) },
  CreatedKey: {
    description: 'A new key, with its value: the only answer that ever contains it.',
    ...closed({ ...keyProperties, key: fullKey }, [...keyRequired, 'key']),
  },
  RotatedKey: {
    description: 'A key with its new secret; the previous one works until `previousKeyExpiresAt`.',
    ...closed(
      {
        ...keyProperties,
        key: fullKey,
        previousKeyExpiresAt: nullable(time('Until when the previous secret works; `null`: it ended now.')),
      },
      [...keyRequired, 'key', 'previousKeyExpiresAt'],
    ),
  },
  KeyList: closed({ keys: { type: 'array', items: ref('Key') }, has_more: { type: 'boolean' } }),
  DeletedKey: closed({ id: { type: 'integer', minimum: 1 }, deleted: { const: true } }),
  CreateKeyRequest: closed(keyInput, ['name']),
  UpdateKeyRequest: { ...closed({ ...keyInput, active: { type: 'boolean' } }, []), minProperties: 1 },
  RotateKeyRequest: closed(
    {
      grace_period: {
        description:
          'How long the previous secret keeps working, 0 to 7 days (default 0: it stops at once): a duration like `rate_limit.interval` (`"90s"`, `"15m"`, `"1h"`, `"7d"`, `"0s"`), a whole number of seconds, or `null` for 0.',
        anyOf: [
          { type: 'string', pattern: '^(0|[1-9][0-9]{0,6})[smhd]$' },
          { type: 'integer', minimum: 0, maximum: 604800 },
          { type: 'null' },
        ],
      },
    },
    [],
  ),
  Account: closed({
    id: { type: 'string' },
    balance: usd('USD.'),
    reserved: usd('USD held by requests in flight.'),
    available: usd('`balance − reserved`.'),
    isFreeTier: { type: 'boolean' },
    createdAt: time('When the account was created.'),
  }),
  Transaction: transaction,
  TransactionList: closed({ transactions: { type: 'array', items: ref('Transaction') }, has_more: { type: 'boolean' } }),
  UsageReport: closed({
    usage: {
      type: 'array',
      items: closed(
        {
          date: { type: 'string', format: 'date', description: 'With `group_by` day.' },
          keyId: { type: 'integer', minimum: 1, description: 'With `group_by` key.' },
          model: { type: 'string', description: 'With `group_by` model.' },
          ...usageCounts,
        },
        Object.keys(usageCounts),
      ),
    },
    total: closed(usageCounts),
  }),
  KeyInfo: closed({
    data: closed({
      label: { type: 'string', description: "The key's name." },
      usage: usd('USD spent through this key in its current limit period.'),
      limit: usd("The account's balance in USD (the docs' name)."),
      is_free_tier: { type: 'boolean' },
      rate_limit: nullable(closed({ requests: { type: 'integer', minimum: 1 }, interval: { type: 'string' } })),
      key_limit: nullable(usd("The key's own spend cap per period.")),
      key_limit_remaining: nullable(usd('USD the key may still spend this period.')),
      limit_reset: nullable({ enum: ['daily', 'weekly', 'monthly'] }),
      expires_at: nullable(time('When the key stops working.')),
      models: nullable({ type: 'array', items: { type: 'string' } }),
    }),
  }),
  Model: closed({
    id: { type: 'string' },
    object: { const: 'model' },
    created: { type: 'integer' },
    owned_by: { type: 'string', description: 'The name of the upstream that serves it.' },
  }),
  ModelList: closed({ object: { const: 'list' }, data: { type: 'array', items: ref('Model') } }),
  InferenceRequest: {
    type: 'object',
    description:
      "The provider's request body (OpenAI's shape); the gateway reads `model` to route and price it, and the token caps to reserve spend.",
    required: ['model'],
    properties: {
      model: { type: 'string', minLength: 1 },
      stream: { type: 'boolean' },
      max_tokens: { type: 'integer', minimum: 1 },
      max_completion_tokens: { type: 'integer', minimum: 1 },
      max_output_tokens: { type: 'integer', minimum: 1 },
    },
  },
};

const headers: JsonObject = {
  'WWW-Authenticate': {
    description: 'RFC 6750 challenge; `error="invalid_token"` when a token was presented.',
    required: true,
    schema: { type: 'string', pattern: '^Bearer realm="modelswitch"(, error="invalid_token")?$' },
  },
  'Retry-After': {
    description: 'Seconds until a retry can pass (whole, at least 1).',
    required: true,
    schema: { type: 'string', pattern: '^[0-9]+$' },
  },
  'Retry-After-When-Busy': {
    description: '`verification_busy` and `server_busy`: seconds until a retry can pass.',
    schema: { type: 'string', pattern: '^[0-9]+$' },
  },
  Allow: { description: 'The methods the route takes.', required: true, schema: { type: 'string' } },
  'Cache-Control-No-Store': {
    description: 'Answers about keys and accounts are never cached.',
    required: true,
    schema: { const: 'no-store' },
  },
  'RateLimit-Policy': {
    description: "The key's rate limit, `<requests>;w=<seconds>` (draft 6) or a structured field (draft 8).",
    schema: { type: 'string' },
  },
  'RateLimit-Limit': { description: 'Requests per window (draft 6).', schema: { type: 'string', pattern: '^[0-9]+$' } },
  'RateLimit-Remaining': { description: 'Requests left in this window (draft 6).', schema: { type: 'string', pattern: '^[0-9]+$' } },
  'RateLimit-Reset': { description: 'Seconds until the window resets (draft 6).', schema: { type: 'string', pattern: '^[0-9]+$' } },
  RateLimit: { description: 'The IETF `RateLimit` field (`standardHeaders` draft 7 or 8).', schema: { type: 'string' } },
  'X-Request-Id': {
    description:
      "The gateway's id of a proxied request (`req_` and 24 base64url characters): the `requestId` of its ledger entry and of `GET /v1/generation`.",
    required: true,
    schema: { type: 'string', pattern: '^req_[A-Za-z0-9_-]{24}$' },
  },
  'X-Request-Id-After-Authentication': {
    description: 'The request id, on the refusals that come after the key passed authentication and its rate limit (a spend limit, say).',
    schema: { type: 'string', pattern: '^req_[A-Za-z0-9_-]{24}$' },
  },
  'X-Upstream-Request-Id': { description: "The upstream's own `x-request-id`, when it sent one.", schema: { type: 'string' } },
  'x-should-retry': { description: 'Retrying the same request cannot pass.', schema: { const: 'false' } },
};

const KEY_BODY_ERRORS: readonly DocumentedErrorCode[] = [...BODY_ERRORS, 'key_not_found'];

/** `PUT` and `PATCH /api/keys/{id}`: one operation under two methods. */
function updateKeyOperation(description: string): JsonObject {
  return operation({
    summary: 'Update a key',
    description,
    access: 'billing',
    requestBody: jsonBody(ref('UpdateKeyRequest')),
    answers: { '200': answer('The key as it is now.', ref('Key')) },
    errors: KEY_BODY_ERRORS,
  });
}

function keyPaths(): { [path: string]: JsonObject } {
  return {
    '/api/keys': {
      get: operation({
        summary: 'List keys',
        description: "The proxy keys of the billing key's account, ascending by id.",
        access: 'billing',
        parameters: [
          limitParameter,
          { name: 'after', in: 'query', description: 'Only keys with an id above this one.', schema: { type: 'integer', minimum: 1 } },
        ],
        answers: { '200': answer('A page of keys.', ref('KeyList')) },
        errors: ['invalid_request'],
      }),
      post: operation({
        summary: 'Create a key',
        description: 'A new proxy key of the account. The answer is the only time the key value appears.',
        access: 'billing',
        requestBody: jsonBody(ref('CreateKeyRequest')),
        answers: { '201': answer('The new key, with its value.', ref('CreatedKey')) },
        errors: [...BODY_ERRORS, 'server_busy'],
      }),
    },
    '/api/keys/{id}': {
      parameters: [idParameter],
      get: operation({
        summary: 'Get a key',
        description: "One of the account's proxy keys.",
        access: 'billing',
        answers: { '200': answer('The key.', ref('Key')) },
        errors: ['invalid_request', 'key_not_found'],
      }),
      put: updateKeyOperation('Changes any of the fields given; `PATCH` does the same.'),
      patch: updateKeyOperation('Changes any of the fields given; the same as `PUT`.'),
      delete: operation({
        summary: 'Delete a key',
        description: 'The key answers 401 from the next request on, on every gateway instance.',
        access: 'billing',
        answers: { '200': answer('The key is deleted.', ref('DeletedKey')) },
        errors: ['invalid_request', 'key_not_found'],
      }),
    },
    '/api/keys/{id}/rotate': {
      parameters: [idParameter],
      post: operation({
        summary: 'Rotate a key',
        description:
          'A new secret for the same key (same id, name, limits and usage). The previous secret works until `previousKeyExpiresAt`, then answers 401; a second rotation within the grace period ends the oldest secret at once.',
        access: 'billing',
        requestBody: jsonBody(ref('RotateKeyRequest'), false),
        answers: { '200': answer('The key with its new value.', ref('RotatedKey')) },
        errors: [...KEY_BODY_ERRORS, 'server_busy'],
      }),
    },
  };
}

function accountPaths(): { [path: string]: JsonObject } {
  return {
    '/api/account': {
      get: operation({
        summary: 'Get the account',
        description: "The billing key's account: balance, what requests in flight hold, and what is available.",
        access: 'billing',
        answers: { '200': answer('The account.', ref('Account')) },
        errors: ['invalid_request'],
      }),
    },
    '/api/transactions': {
      get: operation({
        summary: 'List transactions',
        description: "The account's ledger, newest first: every change of its balance (`usage`, `credit`, `adjustment`).",
        access: 'billing',
        parameters: [
          limitParameter,
          {
            name: 'before',
            in: 'query',
            description: 'Only entries with an id below this one (the last id of the previous page).',
            schema: { type: 'integer', minimum: 1 },
          },
          { name: 'key_id', in: 'query', description: 'Only the `usage` entries of this key.', schema: { type: 'integer', minimum: 1 } },
          { name: 'type', in: 'query', description: 'Only entries of this type.', schema: { enum: ['usage', 'credit', 'adjustment'] } },
        ],
        answers: { '200': answer('A page of entries.', ref('TransactionList')) },
        errors: ['invalid_request'],
      }),
    },
    '/api/usage': {
      get: operation({
        summary: 'Usage',
        description: 'Requests, tokens and cost per UTC day, key and model, from counters kept beside the ledger.',
        access: 'billing',
        parameters: [
          {
            name: 'from',
            in: 'query',
            description: 'First UTC day, inclusive (default 29 days before `to`).',
            schema: { type: 'string', format: 'date' },
          },
          {
            name: 'to',
            in: 'query',
            description: 'Last UTC day, inclusive (default today); at most 366 days after `from`.',
            schema: { type: 'string', format: 'date' },
          },
          {
            name: 'group_by',
            in: 'query',
            description: 'Comma-separated, any of `day`, `key`, `model`; none gives one row of totals.',
            schema: { type: 'string', pattern: '^(day|key|model)(,(day|key|model))*$' },
          },
        ],
        answers: { '200': answer('Rows and their total.', ref('UsageReport')) },
        errors: ['invalid_request'],
      }),
    },
  };
}

function inferencePaths(): { [path: string]: JsonObject } {
  const paths: { [path: string]: JsonObject } = {
    '/v1/auth/key': {
      get: operation({
        summary: 'Key info',
        description:
          "The key's name, spend and the account's balance, as the docs show them, then the key's own cap and expiry. Never spends: answers at a spend limit or a zero balance too.",
        access: 'proxy',
        answers: { '200': answer('The key info.', ref('KeyInfo'), 'proxy') },
        errors: ['invalid_request'],
      }),
    },
    '/v1/generation': {
      get: operation({
        summary: 'One request of this key',
        description:
          "The ledger entry of one of this key's proxied requests, found by the gateway's `X-Request-Id` or the upstream answer's `id`.",
        access: 'proxy',
        parameters: [
          {
            name: 'id',
            in: 'query',
            required: true,
            description: 'A request id (`req_…`) or an upstream answer id (`chatcmpl-…`).',
            schema: { type: 'string', minLength: 1 },
          },
        ],
        answers: { '200': answer('The entry.', ref('Transaction'), 'proxy') },
        errors: ['invalid_request', 'generation_not_found'],
      }),
    },
    '/v1/models': {
      get: operation({
        summary: 'List models',
        description: 'The models the configured upstreams serve (those with a price, unless the host serves unpriced ones too).',
        access: 'proxy',
        answers: { '200': answer('The models.', ref('ModelList'), 'proxy') },
        errors: ['invalid_request'],
      }),
    },
    '/v1/models/{model}': {
      parameters: [{ name: 'model', in: 'path', required: true, schema: { type: 'string' } }],
      get: operation({
        summary: 'Get a model',
        description: 'One of the models `GET /v1/models` lists.',
        access: 'proxy',
        answers: { '200': answer('The model.', ref('Model'), 'proxy') },
        errors: ['invalid_request', 'model_not_found'],
      }),
    },
  };
  for (const path of DEFAULT_PROXY_PATHS) {
    paths[`/v1${path}`] = {
      post: operation({
        summary: `Proxied: ${path.slice(1)}`,
        description:
          "Sent to the upstream that serves the body's `model`, with the upstream's credential instead of the client's key; its maximum cost is reserved first and the real cost (from the upstream's `usage`) settled after. `\"stream\": true` streams server-sent events through as they come.",
        access: 'proxy',
        proxied: true,
        requestBody: jsonBody(ref('InferenceRequest')),
        answers: {
          '200': {
            description:
              "The upstream's answer, passed through (its body unchanged; a stream's usage chunk may be dropped when the gateway asked for it).",
            headers: {
              'X-Request-Id': headerRef('X-Request-Id'),
              'X-Upstream-Request-Id': headerRef('X-Upstream-Request-Id'),
              ...RATE_LIMIT_HEADERS,
            },
            content: {
              'application/json': { schema: { type: 'object' } },
              'text/event-stream': { schema: { type: 'string' } },
            },
          },
        },
        errors: [
          ...BODY_ERRORS,
          'insufficient_balance',
          'spend_limit_reached',
          'model_not_allowed',
          'model_not_found',
          'server_busy',
          'upstream_error',
          'upstream_timeout',
        ],
        extra: {
          default: {
            description: "The upstream's own answer with any other status (its error JSON, say), passed through unchanged.",
            headers: {
              'X-Request-Id': headerRef('X-Request-Id'),
              'X-Upstream-Request-Id': headerRef('X-Upstream-Request-Id'),
              ...RATE_LIMIT_HEADERS,
            },
            content: { 'application/json': { schema: {} }, 'text/event-stream': { schema: { type: 'string' } } },
          },
        },
      }),
    };
  }
  return paths;
}

/**
 * Builds the OpenAPI 3.1 document of every `/api` and `/v1` route the package answers: requests,
 * answers, every error with its codes, and the headers (`WWW-Authenticate`, `Retry-After`,
 * `RateLimit-*`, `X-Request-Id`). `keysRouter` serves it at `GET /api/openapi.json`;
 * `npm run openapi` writes it to `docs/openapi.yaml`. Paths assume the README's mounts (`/api`,
 * `/v1`) and the default proxied `paths`.
 *
 * @example
 * ```ts
 * const document = openApiDocument();
 * document.paths['/api/keys']; // { get: {…}, post: {…} }
 * ```
 */
export function openApiDocument(): OpenApiDocument {
  return {
    openapi: '3.1.0',
    info: {
      title: 'modelswitch-keys',
      version: '0.1.0',
      summary: 'API keys, balances, ledger and a metered LLM proxy for Express and Connect.',
      description:
        'The key management API (`/api`, billing keys `mk-…`) and the inference API (`/v1`, proxy keys `ms-…`) of a gateway built with modelswitch-keys, mounted as the README shows. Every error is `{"error":{"message","type","code","param"?}}`; an upstream\'s own errors pass through unchanged.',
      license: { name: 'MIT', identifier: 'MIT' },
    },
    servers: [{ url: '/', description: 'The gateway that serves this document.' }],
    security: [],
    tags: [
      { name: 'management', description: 'Keys and the account, with a billing key (`mk-`).' },
      { name: 'inference', description: 'The metered proxy, with a proxy key (`ms-`).' },
    ],
    paths: {
      ...keyPaths(),
      ...accountPaths(),
      '/api/openapi.json': {
        get: {
          summary: 'This document',
          tags: ['management'],
          description: "The OpenAPI 3.1 document of the gateway's routes. Public: no key needed.",
          security: [],
          responses: {
            '200': {
              description: 'The document.',
              headers: {
                'Cache-Control': { description: 'Cacheable for five minutes.', required: true, schema: { const: OPENAPI_CACHE_CONTROL } },
              },
              content: json({
                type: 'object',
                required: ['openapi', 'info', 'paths'],
                properties: { openapi: { const: '3.1.0' }, info: { type: 'object' }, paths: { type: 'object' } },
              }),
            },
            ...errorResponses(['internal_error'], 'public'),
          },
        },
      },
      ...inferencePaths(),
    },
    components: {
      schemas,
      headers,
      responses: {
        // OpenAPI attaches answers to the methods a path takes; this one is for every other method on the package's paths.
        MethodNotAllowed: errorResponses(['method_not_allowed'], 'public')['405'] as JsonObject,
      },
      securitySchemes: {
        billingKey: { type: 'http', scheme: 'bearer', description: 'A billing key, `mk-` then 38 base62 characters.' },
        proxyKey: { type: 'http', scheme: 'bearer', description: 'A proxy key, `ms-` then 38 base62 characters.' },
      },
    },
  };
}

/** The document's JSON, made on the first request for it. */
let servedBody: Buffer | undefined;

/**
 * Answers `GET`/`HEAD` of the document (`keysRouter` calls it for `/openapi.json`): public, no key
 * read, cacheable ({@link OPENAPI_CACHE_CONTROL}). Other methods answer 405 with `Allow`.
 */
export function answerOpenApi(req: IncomingMessage, res: ServerResponse): void {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    sendError(
      res,
      new ModelSwitchError('method_not_allowed', `${req.method} is not supported on this route`, { headers: { Allow: 'GET, HEAD' } }),
    );
    return;
  }
  servedBody ??= Buffer.from(JSON.stringify(openApiDocument()));
  res.statusCode = 200;
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Content-Length', servedBody.length);
  res.setHeader('Cache-Control', OPENAPI_CACHE_CONTROL);
  res.end(req.method === 'HEAD' ? undefined : servedBody);
}
