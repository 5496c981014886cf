/**
 * Every default of the package's options, one named constant each, so a default is changed in one
 * place and documented where it is defined. Imports nothing: any layer may read it.
 */

// http: request bodies

/**
 * The deepest nesting of arrays and objects a JSON request body may have (`maxJsonDepth` of
 * `proxyRouter`; `keysRouter` uses it as it is): deeper answers 400 before the body is parsed. Far
 * above any real request (a chat body nests about 6 levels, a tool's JSON schema a dozen more), far
 * below what would overflow the stack of the recursive code after the parse (`JSON.stringify`).
 */
export const DEFAULT_MAX_JSON_DEPTH = 64;
/** The `Retry-After` (seconds) of a 503 `server_busy`: the bound it hit frees up as requests end, within a second or so. */
export const SERVER_BUSY_RETRY_AFTER_SECONDS = 1;

// keys: creation hashes (`KeyHasher`)

/**
 * `KeyHasher`'s `maxHashesPerAccount`: hashes of new keys one account may have running or waiting
 * at once; more answer 429 `rate_limit_exceeded`. A person creating keys has one at a time, a script a few.
 */
export const DEFAULT_MAX_HASHES_PER_ACCOUNT = 4;
/** `KeyHasher`'s `maxQueuedHashes`: hashes of new keys (all accounts) that may wait for a scrypt slot; more answer 503 `server_busy`. */
export const DEFAULT_MAX_QUEUED_HASHES = 32;

// proxy

/**
 * `proxyRouter` `defaultMaxTokens`: output tokens reserved for a request that sets none of
 * `max_completion_tokens`, `max_tokens`, `max_output_tokens`.
 */
export const DEFAULT_PROXY_MAX_TOKENS = 4096;
/** `proxyRouter` `timeoutMs`: an upstream silent this long (before or during its answer) → 504 `upstream_timeout`. 10 minutes. */
export const DEFAULT_PROXY_TIMEOUT_MS = 600_000;
/** `proxyRouter` `maxBodyBytes`: the largest JSON request body accepted (after decoding a compressed one); larger answers 413. 4 MiB. */
export const DEFAULT_PROXY_MAX_BODY_BYTES = 4 * 1024 * 1024;
/**
 * `proxyRouter` `maxBufferedBytes`: request-body bytes one router holds at once across requests
 * (each body from its first byte until its response closes); past it a request answers 503
 * `server_busy` with `Retry-After`. 128 MiB: 32 bodies of the largest size, thousands of usual ones.
 */
export const DEFAULT_PROXY_MAX_BUFFERED_BYTES = 128 * 1024 * 1024;
/**
 * `proxyRouter` `enforceMaxTokens`: a request that sets no output cap is sent upstream with the cap
 * that was reserved (`min(model maxOutputTokens, defaultMaxTokens)`), so an upstream that obeys it
 * can never produce more than was reserved.
 */
export const DEFAULT_PROXY_ENFORCE_MAX_TOKENS = true;
/** `proxyRouter` `allowUnpricedModels`: a model without a price is refused, so nothing is served unmetered by accident. */
export const DEFAULT_PROXY_ALLOW_UNPRICED_MODELS = false;
/** The default `estimatePromptTokens` counts one prompt token per this many bytes of the JSON body sent upstream. */
export const DEFAULT_PROXY_BYTES_PER_PROMPT_TOKEN = 4;
/**
 * The paths below the mount proxied by default: the OpenAI inference routes that report token
 * `usage`, so every answer can be metered from what the provider says it used. Routes without
 * usage (images, speech, moderations) can be added with `paths`; their 2xx answers are then
 * charged the reservation.
 *
 * @example
 * ```ts
 * proxyRouter(store, { upstreams, pricing, paths: [...DEFAULT_PROXY_PATHS, '/images/generations'] });
 * ```
 */
export const DEFAULT_PROXY_PATHS: readonly string[] = ['/chat/completions', '/completions', '/embeddings', '/responses'];

// end proxy

// ledger

/**
 * `MemoryKeyStore` and `KeyvKeyStore` `ledgerRetentionDays`: ledger entries older than this many days
 * are trimmed (lazily as the account's ledger is written, or by `trimLedger`). Usage aggregates,
 * balances and the idempotency of top-up references are kept for good.
 */
export const DEFAULT_LEDGER_RETENTION_DAYS = 400;

/** `prepareRotation` `gracePeriodMs`: the previous secret stops working at once. */
export const DEFAULT_ROTATION_GRACE_PERIOD_MS = 0;

/** The longest grace period of a rotation (`prepareRotation` `gracePeriodMs`): 7 days. */
export const MAX_ROTATION_GRACE_PERIOD_MS = 7 * 24 * 3_600_000;

// end ledger

// dashboard

/** `dashboardRouter` `session.ttlMs`: how long a dashboard session lasts after sign-in. 12 hours: a working day, not a week. */
export const DEFAULT_DASHBOARD_SESSION_TTL_MS = 12 * 60 * 60 * 1000;
/** `dashboardRouter` `session.cookieName`: the session cookie's name. */
export const DEFAULT_DASHBOARD_COOKIE_NAME = 'modelswitch_session';
/**
 * `dashboardRouter` `signInAttempts`: failed sign-ins one client address may make per
 * `signInWindowMs` before it answers 429, on top of the per-key bound every wrong secret has (KeyHasher).
 */
export const DEFAULT_DASHBOARD_SIGN_IN_ATTEMPTS = 10;
/** `dashboardRouter` `signInWindowMs`: the window of `signInAttempts`. One minute. */
export const DEFAULT_DASHBOARD_SIGN_IN_WINDOW_MS = 60_000;
/** `dashboardRouter` `maxBodyBytes`: the largest JSON body the dashboard's own API reads. */
export const DEFAULT_DASHBOARD_MAX_BODY_BYTES = 16_384;
