import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { describe, expect, it } from 'vitest';
import { DEFAULT_PROXY_PATHS, DEFAULT_RATE_LIMIT, DEFAULT_STORE_TIMEOUT_MS } from '../../src/defaults.js';
import { defaultKeyHasher } from '../../src/keys/hashing.js';
import { ConfigurationError, type ConfigurationErrorCode } from '../../src/errors/configuration-error.js';
import { type ProxyRouterOptions, estimatePromptTokensFromBytes, resolveProxyOptions } from '../../src/proxy/options.js';
import { countPromptTokens, estimatePromptTokensByModel } from '../../src/proxy/prompt-tokens.js';
import { proxyRouter } from '../../src/proxy/proxy-router.js';
import { findUpstream } from '../../src/proxy/upstreams.js';
import { MemoryKeyStore } from '../../src/store/memory/memory-store.js';

const upstream = { name: 'openai', target: 'https://api.openai.com/v1/', apiKey: 'sk-upstream-secret', models: ['gpt-4o-mini'] };
const valid: ProxyRouterOptions = {
  upstreams: [upstream],
  pricing: { 'gpt-4o-mini': { inputPerMillion: 0.15, outputPerMillion: 0.6 } },
};

/** The error `resolveProxyOptions` throws for `options`, as code and message. */
function errorOf(options: unknown): { code: ConfigurationErrorCode; message: string } {
  try {
    resolveProxyOptions(options as ProxyRouterOptions);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigurationError);
    const { code, message } = error as ConfigurationError;
    return { code, message };
  }
  throw new Error('resolveProxyOptions accepted the options');
}

function withUpstream(changes: Record<string, unknown>): unknown {
  return { ...valid, upstreams: [{ ...upstream, ...changes }] };
}

describe('resolveProxyOptions', () => {
  it('answers every option, the defaults from their named constants', () => {
    const resolved = resolveProxyOptions(valid);
    expect({ ...resolved, isProxiedPath: undefined, auth: undefined }).toEqual({
      upstreams: [
        {
          name: 'openai',
          target: 'https://api.openai.com/v1',
          headers: { authorization: 'Bearer sk-upstream-secret' },
          exactModels: new Set(['gpt-4o-mini']),
          patterns: [],
          timeoutMs: 600_000,
          maxSockets: 512,
          keepAliveMs: 4000,
          agent: undefined,
        },
      ],
      pricing: valid.pricing,
      allowUnpricedModels: false,
      defaultMaxTokens: 4096,
      enforceMaxTokens: true,
      estimatePromptTokens: estimatePromptTokensByModel,
      countPromptTokens,
      timeoutMs: 600_000,
      maxSockets: 512,
      keepAliveMs: 4000,
      holdMarginMs: 60_000,
      holdSweepIntervalMs: 0,
      balanceLowThreshold: 1,
      maxBodyBytes: 4 * 1024 * 1024,
      maxBufferedBytes: 128 * 1024 * 1024,
      maxJsonDepth: 64,
      isProxiedPath: undefined,
      auth: undefined,
    });
    expect({ ...resolved.auth, logger: undefined }).toEqual({
      keyType: 'proxy',
      hasher: defaultKeyHasher(),
      defaultRateLimit: DEFAULT_RATE_LIMIT,
      now: Date.now,
      storeTimeoutMs: DEFAULT_STORE_TIMEOUT_MS,
      logger: undefined,
      metrics: null,
      onEvent: undefined,
      rateLimitHeaders: expect.any(Function),
    });
    // The default header set is draft-6, as express-rate-limit's default.
    expect(resolved.auth.rateLimitHeaders?.name).toBe('draft6Headers');
    expect(DEFAULT_PROXY_PATHS.map(resolved.isProxiedPath)).toEqual([true, true, true, true]);
    expect(['/images/generations', '/models'].map(resolved.isProxiedPath)).toEqual([false, false]);
    expect(estimatePromptTokensFromBytes({}, 9)).toBe(3);
  });

  it("counts no prompt asynchronously when the host gives its own estimate: the host's function is used as it is", () => {
    const estimatePromptTokens = () => 7;
    const resolved = resolveProxyOptions({ ...valid, estimatePromptTokens });
    expect({ estimate: resolved.estimatePromptTokens, count: resolved.countPromptTokens }).toEqual({
      estimate: estimatePromptTokens,
      count: undefined,
    });
  });

  it('raises the default maxBufferedBytes to a larger maxBodyBytes, so one body always fits', () => {
    expect(resolveProxyOptions({ ...valid, maxBodyBytes: 200 * 1024 * 1024 }).maxBufferedBytes).toBe(200 * 1024 * 1024);
  });

  it("resolves the authentication options for the proxy's own Authenticator, always for proxy keys", () => {
    const now = () => 0;
    const resolved = resolveProxyOptions({ ...valid, now, storeTimeoutMs: 500, keyType: 'billing' } as ProxyRouterOptions);
    expect({ now: resolved.auth.now, timeout: resolved.auth.storeTimeoutMs, keyType: resolved.auth.keyType }).toEqual({
      now,
      timeout: 500,
      keyType: 'proxy',
    });
  });

  it("never changes the caller's objects, nor the lastIndex of its RegExps", () => {
    const models = /^gpt-/g;
    const paths = /^\/custom\//y;
    const options: ProxyRouterOptions = {
      ...valid,
      upstreams: [{ ...upstream, models: [models], headers: { 'X-Team': 'a' }, timeoutMs: 1000 }],
      paths: [paths],
    };
    const before = JSON.stringify(options);
    Object.freeze(options);
    const resolved = resolveProxyOptions(options);
    models.lastIndex = 3;
    paths.lastIndex = 3;
    expect(findUpstream(resolved.upstreams, 'gpt-4o')?.name).toBe('openai');
    expect(findUpstream(resolved.upstreams, 'gpt-4o')?.name).toBe('openai');
    expect(resolved.isProxiedPath('/custom/x')).toBe(true);
    expect(resolved.isProxiedPath('/v2/custom/x')).toBe(false);
    expect({ json: JSON.stringify(options), modelsIndex: models.lastIndex, pathsIndex: paths.lastIndex }).toEqual({
      json: before,
      modelsIndex: 3,
      pathsIndex: 3,
    });
    expect(resolved.upstreams[0]?.headers).toEqual({ 'x-team': 'a', authorization: 'Bearer sk-upstream-secret' });
  });

  it("gives each upstream the router's maxSockets and keepAliveMs unless it sets its own, and keeps a host's agent as it is", () => {
    const agent = new HttpsAgent({ keepAlive: true });
    const resolved = resolveProxyOptions({
      ...valid,
      maxSockets: 64,
      keepAliveMs: 0,
      upstreams: [upstream, { ...upstream, name: 'own', maxSockets: 8, keepAliveMs: 10_000, agent }],
    });
    expect(resolved.upstreams.map(({ name, maxSockets, keepAliveMs, agent }) => ({ name, maxSockets, keepAliveMs, agent }))).toEqual([
      { name: 'openai', maxSockets: 64, keepAliveMs: 0, agent: undefined },
      { name: 'own', maxSockets: 8, keepAliveMs: 10_000, agent },
    ]);
    expect(resolved.upstreams[1]?.agent).toBe(agent);
  });

  it('keeps null as "the default", as before', () => {
    const resolved = resolveProxyOptions({ ...valid, defaultMaxTokens: null, timeoutMs: null, maxBodyBytes: null } as never);
    expect([resolved.defaultMaxTokens, resolved.timeoutMs, resolved.maxBodyBytes]).toEqual([4096, 600_000, 4 * 1024 * 1024]);
  });

  it.each<[string, unknown, ConfigurationErrorCode, string]>([
    ['no options', undefined, 'ERR_MS_OPTION', 'proxyRouter(store, options): options with upstreams and pricing are required'],
    [
      'no upstreams',
      { pricing: valid.pricing },
      'ERR_MS_UPSTREAM',
      "proxyRouter: options.upstreams must be a non-empty array, e.g. [{ name: 'openai', target: 'https://api.openai.com/v1', apiKey: process.env.OPENAI_API_KEY, models: ['gpt-4o-mini'] }]",
    ],
    [
      'an upstream that is not an object',
      { ...valid, upstreams: [null] },
      'ERR_MS_UPSTREAM',
      'proxyRouter: options.upstreams[0] must be an object like { name, target, apiKey?, headers?, models, timeoutMs?, maxSockets?, keepAliveMs?, agent? }',
    ],
    [
      'an upstream without a name',
      withUpstream({ name: '' }),
      'ERR_MS_UPSTREAM',
      'proxyRouter: options.upstreams[0].name must be a non-empty string',
    ],
    [
      'a relative target',
      withUpstream({ target: 'api.openai.com/v1' }),
      'ERR_MS_UPSTREAM',
      'proxyRouter: options.upstreams[0].target must be an absolute http(s) URL such as https://api.openai.com/v1',
    ],
    [
      'a target that is not http',
      withUpstream({ target: 'ftp://x/v1' }),
      'ERR_MS_UPSTREAM',
      'proxyRouter: options.upstreams[0].target must use http: or https:',
    ],
    [
      'no models',
      withUpstream({ models: [] }),
      'ERR_MS_UPSTREAM',
      'proxyRouter: options.upstreams[0].models must be a non-empty array of model names or RegExps',
    ],
    [
      'an upstream timeout of 0',
      withUpstream({ timeoutMs: 0 }),
      'ERR_MS_UPSTREAM',
      "proxyRouter: options.upstreams[0].timeoutMs must be a number of milliseconds above 0 and at most 2147483647 (or left out for the router's timeoutMs)",
    ],
    [
      'headers that are not an object',
      withUpstream({ headers: 'x-api-key: 1' }),
      'ERR_MS_UPSTREAM',
      "proxyRouter: options.upstreams[0].headers must be an object of header names to values, like { 'x-api-key': '…' }",
    ],
    [
      'a header value with a line break',
      withUpstream({ headers: { 'x-api-key': 'abc\r\nx-injected: 1' } }),
      'ERR_MS_UPSTREAM',
      'proxyRouter: options.upstreams[0].headers["x-api-key"] is not a valid HTTP header: use a token name and a value without line breaks or control characters',
    ],
    [
      'a header name with a space',
      withUpstream({ headers: { 'x api key': 'abc' } }),
      'ERR_MS_UPSTREAM',
      'proxyRouter: options.upstreams[0].headers["x api key"] is not a valid HTTP header: use a token name and a value without line breaks or control characters',
    ],
    [
      'an apiKey with a line break',
      withUpstream({ apiKey: 'sk-upstream-secret\n' }),
      'ERR_MS_UPSTREAM',
      'proxyRouter: options.upstreams[0].apiKey must be a non-empty string without line breaks or control characters',
    ],
    [
      'no pricing',
      { upstreams: [upstream] },
      'ERR_MS_PRICING',
      "proxyRouter: options.pricing must be a table like { 'gpt-4o-mini': { inputPerMillion: 0.15, outputPerMillion: 0.6 } } or a function (model) => price",
    ],
    [
      'a negative price',
      { ...valid, pricing: { m: { inputPerMillion: -1, outputPerMillion: 1 } } },
      'ERR_MS_PRICING',
      'proxyRouter: options.pricing["m"] needs finite inputPerMillion and outputPerMillion ≥ 0 (and maxOutputTokens, if set, an integer from 1 to 1000000)',
    ],
    ...[0, 1.5, 1_000_001, '16k'].map((value): [string, unknown, ConfigurationErrorCode, string] => [
      `a maxOutputTokens of ${String(value)}`,
      { ...valid, pricing: { m: { inputPerMillion: 1, outputPerMillion: 1, maxOutputTokens: value } } },
      'ERR_MS_PRICING',
      'proxyRouter: options.pricing["m"] needs finite inputPerMillion and outputPerMillion ≥ 0 (and maxOutputTokens, if set, an integer from 1 to 1000000)',
    ]),
    [
      'enforceMaxTokens "yes"',
      { ...valid, enforceMaxTokens: 'yes' },
      'ERR_MS_OPTION',
      'proxyRouter: options.enforceMaxTokens must be true or false',
    ],
    ...[4 * 1024 * 1024 - 1, 1.5e9 + 0.5, '1gb'].map((value): [string, unknown, ConfigurationErrorCode, string] => [
      `maxBufferedBytes ${String(value)}`,
      { ...valid, maxBufferedBytes: value },
      'ERR_MS_OPTION',
      'proxyRouter: options.maxBufferedBytes must be an integer number of bytes of at least maxBodyBytes (4194304), e.g. 134217728 for 128 MiB',
    ]),
    ...[0, 1001, 2.5, '64'].map((value): [string, unknown, ConfigurationErrorCode, string] => [
      `maxJsonDepth ${String(value)}`,
      { ...valid, maxJsonDepth: value },
      'ERR_MS_OPTION',
      'proxyRouter: options.maxJsonDepth must be an integer from 1 to 1000, e.g. 64',
    ]),
    [
      'allowUnpricedModels "yes"',
      { ...valid, allowUnpricedModels: 'yes' },
      'ERR_MS_OPTION',
      'proxyRouter: options.allowUnpricedModels must be true or false',
    ],
    ...[-1, 1.5, 1_000_001].map((value): [string, unknown, ConfigurationErrorCode, string] => [
      `defaultMaxTokens ${value}`,
      { ...valid, defaultMaxTokens: value },
      'ERR_MS_OPTION',
      'proxyRouter: options.defaultMaxTokens must be an integer from 0 to 1000000: the output tokens reserved when a request sets no cap',
    ]),
    [
      'estimatePromptTokens that is not a function',
      { ...valid, estimatePromptTokens: 4 },
      'ERR_MS_OPTION',
      "proxyRouter: options.estimatePromptTokens must be a function (body, bodyBytes) => prompt tokens, or left out for the model's tokenizer (OpenAI) or one token per 4 bytes",
    ],
    ...[0, Number.POSITIVE_INFINITY, 2 ** 31, Number.NaN].map((value): [string, unknown, ConfigurationErrorCode, string] => [
      `timeoutMs ${value}`,
      { ...valid, timeoutMs: value },
      'ERR_MS_OPTION',
      'proxyRouter: options.timeoutMs must be a number of milliseconds above 0 and at most 2147483647, e.g. 600000 for 10 minutes',
    ]),
    ...[0, -1, Number.POSITIVE_INFINITY, 2 ** 31, Number.NaN, '1m'].map((value): [string, unknown, ConfigurationErrorCode, string] => [
      `holdMarginMs ${String(value)}`,
      { ...valid, holdMarginMs: value },
      'ERR_MS_OPTION',
      'proxyRouter: options.holdMarginMs must be a number of milliseconds above 0 and at most 2147483647, e.g. 60000 for a minute',
    ]),
    ...[-1, 0.5, Number.POSITIVE_INFINITY, 2 ** 31, Number.NaN, '1m'].map((value): [string, unknown, ConfigurationErrorCode, string] => [
      `holdSweepIntervalMs ${String(value)}`,
      { ...valid, holdSweepIntervalMs: value },
      'ERR_MS_OPTION',
      'proxyRouter: options.holdSweepIntervalMs must be 0 (no sweeper) or a number of milliseconds from 1 to 2147483647, e.g. 60000',
    ]),
    ...[0, 1.5, '4mb'].map((value): [string, unknown, ConfigurationErrorCode, string] => [
      `maxBodyBytes ${String(value)}`,
      { ...valid, maxBodyBytes: value },
      'ERR_MS_OPTION',
      'proxyRouter: options.maxBodyBytes must be a positive integer number of bytes, e.g. 4194304 for 4 MiB',
    ]),
    ...[0, -1, 1.5, 65_536, Number.POSITIVE_INFINITY, '8'].map((value): [string, unknown, ConfigurationErrorCode, string] => [
      `maxSockets ${String(value)}`,
      { ...valid, maxSockets: value },
      'ERR_MS_OPTION',
      'proxyRouter: options.maxSockets must be an integer from 1 to 65535: the connections open at most to each upstream, e.g. 512',
    ]),
    ...[-1, Number.POSITIVE_INFINITY, 2 ** 31, Number.NaN, '4s'].map((value): [string, unknown, ConfigurationErrorCode, string] => [
      `keepAliveMs ${String(value)}`,
      { ...valid, keepAliveMs: value },
      'ERR_MS_OPTION',
      'proxyRouter: options.keepAliveMs must be 0 (no reuse) or a number of milliseconds above 0 and at most 2147483647, e.g. 4000',
    ]),
    [
      'an upstream maxSockets of 0',
      withUpstream({ maxSockets: 0 }),
      'ERR_MS_UPSTREAM',
      "proxyRouter: options.upstreams[0].maxSockets must be an integer from 1 to 65535 (or left out for the router's maxSockets)",
    ],
    [
      'an upstream keepAliveMs of -1',
      withUpstream({ keepAliveMs: -1 }),
      'ERR_MS_UPSTREAM',
      "proxyRouter: options.upstreams[0].keepAliveMs must be 0 (no reuse) or a number of milliseconds above 0 and at most 2147483647 (or left out for the router's keepAliveMs)",
    ],
    ...[new HttpAgent({ keepAlive: true }), { keepAlive: true }].map((agent): [string, unknown, ConfigurationErrorCode, string] => [
      `an https target with the agent ${agent.constructor.name}`,
      withUpstream({ agent }),
      'ERR_MS_UPSTREAM',
      'proxyRouter: options.upstreams[0].agent must be an https.Agent for its https: target, e.g. new https.Agent({ keepAlive: true })',
    ]),
    [
      'an http target with an https.Agent',
      withUpstream({ target: 'http://127.0.0.1:8000/v1', agent: new HttpsAgent({ keepAlive: true }) }),
      'ERR_MS_UPSTREAM',
      'proxyRouter: options.upstreams[0].agent must be an http.Agent for its http: target, e.g. new http.Agent({ keepAlive: true })',
    ],
    [
      'a path without its slash',
      { ...valid, paths: ['chat/completions'] },
      'ERR_MS_OPTION',
      "proxyRouter: options.paths must be a non-empty array of paths below the mount starting with '/' (like '/chat/completions') or RegExps",
    ],
  ])('refuses %s with a ConfigurationError that says how to fix it', (_case, options, code, message) => {
    expect(errorOf(options)).toEqual({ code, message });
  });

  it('never puts an upstream credential in its messages', () => {
    for (const options of [
      withUpstream({ apiKey: 'sk-upstream-secret\n' }),
      withUpstream({ headers: { 'x-api-key': 'sk-header-secret\n' } }),
    ]) {
      expect(errorOf(options).message).not.toMatch(/secret/);
    }
  });
});

describe('proxyRouter creation', () => {
  it('throws the ConfigurationError of its store and of its options', () => {
    const codeOf = (create: () => unknown) => {
      try {
        create();
      } catch (error) {
        return (error as ConfigurationError).code;
      }
      return 'created';
    };
    expect({
      noStore: codeOf(() => proxyRouter(undefined as never, valid)),
      badOptions: codeOf(() => proxyRouter(new MemoryKeyStore(), { ...valid, timeoutMs: -1 })),
      valid: codeOf(() => proxyRouter(new MemoryKeyStore(), valid)),
    }).toEqual({ noStore: 'ERR_MS_STORE', badOptions: 'ERR_MS_OPTION', valid: 'created' });
  });
});
