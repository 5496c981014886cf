/**
 * Every default of the package's options, one named constant each, so a default is changed in one
 * place and documented where it is defined. Imports nothing: any layer may read it.
 */

// proxy

/**
 * `proxyRouter` `defaultMaxTokens`: output tokens reserved for a request that sets none of
 * `max_completion_tokens`, `max_tokens`, `max_output_tokens`.
 */
export const DEFAULT_PROXY_MAX_TOKENS = 4096;
/** `proxyRouter` `timeoutMs`: an upstream silent this long (before or during its answer) → 504 `upstream_timeout`. 10 minutes. */
export const DEFAULT_PROXY_TIMEOUT_MS = 600_000;
/** `proxyRouter` `maxBodyBytes`: the largest JSON request body accepted; larger answers 413. 4 MiB. */
export const DEFAULT_PROXY_MAX_BODY_BYTES = 4 * 1024 * 1024;
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
