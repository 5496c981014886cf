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

// auth: the authenticating factories (`modelSwitchAuth`, `keysRouter`, `proxyRouter`)

/**
 * `modelSwitchAuth` `keyType`: the inference API takes proxy keys (`ms-`); `keysRouter` always takes
 * billing keys. Also the dashboard API's key type when a list or a creation names none.
 */
export const DEFAULT_KEY_TYPE = 'proxy';
/**
 * `standardHeaders` of the authenticating factories: the `RateLimit-*` headers of the IETF draft 6
 * (`RateLimit-Policy`, `-Limit`, `-Remaining`, `-Reset`), what express-rate-limit's `true` sends.
 */
export const DEFAULT_STANDARD_HEADERS = 'draft-6';
/** `legacyHeaders` of the authenticating factories: no `X-RateLimit-*` headers (express-rate-limit's advice for new APIs). */
export const DEFAULT_LEGACY_HEADERS = false;
/**
 * The docs' default rate limit (`defaultRateLimit`): 1000 requests per 10 seconds per key, for
 * keys without their own `rateLimit`.
 *
 * @example
 * ```ts
 * modelSwitchAuth(store, { defaultRateLimit: { ...DEFAULT_RATE_LIMIT, requests: 100 } });
 * ```
 */
export const DEFAULT_RATE_LIMIT: Readonly<{ requests: number; interval: string }> = Object.freeze({ requests: 1000, interval: '10s' });
/** `storeTimeoutMs`: a store call slower than this fails the request with 503 `store_unavailable`. */
export const DEFAULT_STORE_TIMEOUT_MS = 2000;

// management: `keysRouter`

/** `keysRouter` `maxBodyBytes`: the largest JSON body of a key creation or update; larger answers 413. 16 KiB. */
export const DEFAULT_KEYS_MAX_BODY_BYTES = 16_384;
/** `GET /keys` without `limit`: keys per page. */
export const DEFAULT_KEYS_PAGE_LIMIT = 100;
/** `GET /transactions` without `limit`: ledger entries per page (1–1000 may be asked for). */
export const DEFAULT_TRANSACTIONS_PAGE = 100;
/** `GET /usage` without `from`: the days read, ending with `to` (default today, UTC), both included. */
export const DEFAULT_USAGE_DAYS = 30;
/** `GET /usage` without `group_by` (and the CLI's `usage` without `--group-by`): one row per UTC day. */
export const DEFAULT_USAGE_GROUP_BY = 'day';
/** `GET /usage`: the most days one request may read (`from` to `to`, both included): a year, leap day too. */
export const MAX_USAGE_DAYS = 366;

// keys: hashing (`KeyHasher`)

/**
 * The default scrypt parameters of new hashes (N = 2^15, r = 8, p = 1: about 32 MiB and tens of ms
 * a hash); hashes made with other parameters keep verifying.
 *
 * @example
 * ```ts
 * new KeyHasher({ scrypt: { ...DEFAULT_SCRYPT, logN: 16 } }); // stronger new hashes; old ones still verify
 * ```
 */
export const DEFAULT_SCRYPT: Readonly<{ logN: number; r: number; p: number }> = Object.freeze({ logN: 15, r: 8, p: 1 });
/** `KeyHasher` `cacheSize`: verified keys (and remembered failures) kept in process, least recently used first out. */
export const DEFAULT_VERIFIED_KEY_CACHE_SIZE = 10_000;
/** `KeyHasher` `maxConcurrentHashes`: scrypt runs in flight at once; the rest wait their turn. */
export const DEFAULT_MAX_CONCURRENT_HASHES = 2;
/** `KeyHasher` `failureTtlMs`: how long a failed verification is remembered, so repeating it costs no scrypt. */
export const DEFAULT_FAILURE_TTL_MS = 60_000;
/** `KeyHasher` `handleFailureLimit`: scrypt runs per handle that may end in a wrong secret per window (one every 30 s). */
export const DEFAULT_HANDLE_FAILURE_LIMIT = 2;
/** `KeyHasher` `handleFailureWindowMs`: the window of `handleFailureLimit`. */
export const DEFAULT_HANDLE_FAILURE_WINDOW_MS = 60_000;
/** `KeyHasher` `maxQueuedVerifications`: verifications that may wait for a scrypt slot; more answer 503 `verification_busy`. */
export const DEFAULT_MAX_QUEUED_VERIFICATIONS = 256;

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
/**
 * `proxyRouter` `holdMarginMs`: how long a reservation's hold outlives the upstream's `timeoutMs`.
 * Its deadline is the reservation's time + `timeoutMs` + this; a stream that still runs renews it.
 * Past it, any instance may release the hold (its gateway died). A minute leaves room for the
 * settlement's own retries and for clocks of several gateways a little apart.
 */
export const DEFAULT_PROXY_HOLD_MARGIN_MS = 60_000;
/**
 * `proxyRouter` `holdSweepIntervalMs`: 0, no sweeper. Expired holds are then released by the next
 * reservation of their key or account (which is when the freed amount is first needed); a sweeper
 * also frees them for readers of `reserved` (`GET /api/account`) on accounts nobody uses.
 */
export const DEFAULT_PROXY_HOLD_SWEEP_INTERVAL_MS = 0;
/**
 * `proxyRouter` `maxSockets`: connections one router opens at most to each upstream. Each answer
 * holds its connection until it ends (a stream for its whole length), so this bounds concurrent
 * answers per upstream, not requests per second; requests past it wait for a connection (within
 * the upstream's `timeoutMs`). 512 keeps a process's upstream sockets, with their client sockets,
 * around the usual 1024 file descriptors at worst while serving hundreds of streams at once.
 */
export const DEFAULT_PROXY_MAX_SOCKETS = 512;
/**
 * `proxyRouter` `keepAliveMs`: how long an idle upstream connection is kept for the next request.
 * Shorter than the idle timeouts upstreams close connections after (Node and uvicorn servers: 5 s;
 * load balancers: 60 s and more), so the gateway closes an idle connection before the upstream
 * does and rarely sends a request on one being closed (undici's default is the same 4 s).
 */
export const DEFAULT_PROXY_KEEP_ALIVE_MS = 4_000;
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

// keys: accounts (`createAccount`)

/** `createAccount` `balance` (and the CLI's `account create` without `--balance`): an account starts with no money. */
export const DEFAULT_ACCOUNT_BALANCE = 0;
/** `createAccount` `isFreeTier`: accounts are paid ones unless said otherwise. */
export const DEFAULT_ACCOUNT_IS_FREE_TIER = false;

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

/** `releaseExpiredHolds` `limit` of every store: the most expired holds one sweep releases. */
export const DEFAULT_HOLD_SWEEP_LIMIT = 1000;

/** `hitCounter` `amount` of every store: one request counts once. */
export const DEFAULT_COUNTER_AMOUNT = 1;

// end ledger

// stores

/** `KeyvKeyStore` `prefix`: prepended to every key the store writes, inside the Keyv namespace. */
export const DEFAULT_KEYV_PREFIX = 'modelswitch:';
/** `PostgresKeyStore` `schema`: the schema holding the store's tables. */
export const DEFAULT_POSTGRES_SCHEMA = 'modelswitch';
/** `PostgresKeyStore` `maxConnections`: the size of the pool the store makes from `connectionString`. */
export const DEFAULT_POSTGRES_MAX_CONNECTIONS = 10;
/** `PostgresKeyStore` `connectionTimeoutMs`: how long an operation waits for a connection (a new one, or a free one of the pool). */
export const DEFAULT_POSTGRES_CONNECTION_TIMEOUT_MS = 5000;
/** `PostgresKeyStore` `statementTimeoutMs`: the server cancels a statement running longer (lock waits included). */
export const DEFAULT_POSTGRES_STATEMENT_TIMEOUT_MS = 5000;

// end stores

// testing: `keyStoreSuite`

/** `keyStoreSuite` `name`: the prefix of every test's title. */
export const DEFAULT_SUITE_NAME = 'KeyStore conformance: ';
/** `keyStoreSuite` `concurrency`: operations the concurrency tests start at once. */
export const DEFAULT_SUITE_CONCURRENCY = 200;

// events

/**
 * `balanceLowThreshold` of `proxyRouter`, `creditBalance` and `adjustBalance`: an
 * `account.balance_low` event fires when a change takes an account's balance from at least this
 * many USD to below it. $1: a few hundred typical requests left, time for a top-up.
 */
export const DEFAULT_BALANCE_LOW_THRESHOLD = 1;

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
/**
 * `dashboardRouter` `session.secure`: the session cookie is `Secure` when the request came over
 * HTTPS (a TLS socket, or `X-Forwarded-Proto: https` with `trustProxy`), so the dashboard works on
 * `http://localhost` and is never sent in clear text in production.
 */
export const DEFAULT_DASHBOARD_COOKIE_SECURE = 'auto';
/** `oidcIdentity` `subjectClaim`: the claim shown as who is signed in (the token's `sub` when it has none). */
export const DEFAULT_OIDC_SUBJECT_CLAIM = 'email';
/** `oidcIdentity` `cookieName`: the host's cookie holding the ID token, read before `Authorization: Bearer`. */
export const DEFAULT_OIDC_ID_TOKEN_COOKIE = 'id_token';
/** `oidcIdentity` `algorithms`: asymmetric signatures only (never `none` or an HMAC, whose key the dashboard would have to hold). */
export const DEFAULT_OIDC_ALGORITHMS: readonly string[] = Object.freeze(['RS256', 'ES256', 'EdDSA']);
/** `dashboardRouter` `maxBodyBytes`: the largest JSON body the dashboard's own API reads. */
export const DEFAULT_DASHBOARD_MAX_BODY_BYTES = 16_384;

// metrics (`prometheusMetrics`)

/** `prometheusMetrics` `prefix`: prepended to every metric name. */
export const DEFAULT_METRICS_PREFIX = 'modelswitch_';
/** `prometheusMetrics` without `models`: distinct model names reported as themselves before the rest is `other`. */
export const DEFAULT_METRICS_MAX_MODELS = 50;
/** Buckets (seconds) of the authentication histogram: a cached key takes microseconds, a scrypt verification tens of ms, a queue more. */
export const METRICS_AUTHENTICATION_BUCKETS: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
/** Buckets (seconds) of the upstream histogram: time to an LLM's answer headers runs from tens of ms to minutes. */
export const METRICS_UPSTREAM_BUCKETS: readonly number[] = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
