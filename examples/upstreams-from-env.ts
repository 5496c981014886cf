/**
 * Where the example gateway sends inference requests:
 *
 * - `OPENAI_API_KEY` set: OpenAI (or any OpenAI-compatible provider at `OPENAI_BASE_URL`,
 *   default `https://api.openai.com/v1`).
 * - otherwise: the OFFLINE MOCK upstream of `examples/mock-upstream.ts`, started on a free local
 *   port, so the example works without network access.
 *
 * Either way the same pricing table meters the answers.
 */
import type { Pricing } from '../src/proxy/pricing.js';
import type { ProxyRouterOptions } from '../src/proxy/proxy-router.js';
import { startMockUpstream } from './mock-upstream.js';

/** USD per million tokens (OpenAI's list prices when this was written; check before relying on them). */
export const EXAMPLE_PRICING = {
  'gpt-4o-mini': { inputPerMillion: 0.15, outputPerMillion: 0.6, cachedInputPerMillion: 0.075 },
  'gpt-4o': { inputPerMillion: 2.5, outputPerMillion: 10, cachedInputPerMillion: 1.25 },
  'text-embedding-3-small': { inputPerMillion: 0.02, outputPerMillion: 0 },
} as const satisfies Pricing;

/** What {@link upstreamsFromEnv} chose. */
export interface ExampleUpstreams {
  /** Pass to `proxyRouter(store, options)`. */
  options: Pick<ProxyRouterOptions, 'upstreams' | 'pricing'>;
  /** One line for the start-up log, without any credential. */
  description: string;
  /** Stops the mock upstream, if one was started. */
  close(): Promise<void>;
}

/**
 * The proxyRouter options for the example gateway, from the environment.
 *
 * @example
 * ```ts
 * const upstreams = await upstreamsFromEnv();
 * console.log(upstreams.description);
 * app.use('/v1', modelSwitchAuth(store), proxyRouter(store, upstreams.options));
 * ```
 */
export async function upstreamsFromEnv(env: NodeJS.ProcessEnv = process.env): Promise<ExampleUpstreams> {
  const models = Object.keys(EXAMPLE_PRICING);
  const apiKey = env.OPENAI_API_KEY?.trim();
  if (apiKey) {
    const target = env.OPENAI_BASE_URL?.trim() || 'https://api.openai.com/v1';
    return {
      options: { upstreams: [{ name: 'openai', target, apiKey, models }], pricing: EXAMPLE_PRICING },
      description: `Upstream: ${target} (OPENAI_API_KEY set), models ${models.join(', ')}`,
      close: async () => {},
    };
  }
  const mock = await startMockUpstream();
  return {
    options: { upstreams: [{ name: 'mock', target: mock.url, models }], pricing: EXAMPLE_PRICING },
    description: `Upstream: OFFLINE MOCK at ${mock.url} (set OPENAI_API_KEY to use OpenAI), models ${models.join(', ')}`,
    close: mock.close,
  };
}
