import { ConfigurationError } from '../../errors/configuration-error.js';
import type { RedisScript } from './keyv-redis-lua.js';
import { REDIS_SCRIPTS } from './keyv-redis-scripts.js';

/** The part of a node-redis client (as `@keyv/redis` holds it) this store uses. */
export interface RedisCommandClient {
  readonly isOpen: boolean;
  readonly isReady: boolean;
  sendCommand(args: readonly string[]): Promise<unknown>;
}

/** The part of a `@keyv/redis` adapter this store uses. */
export interface KeyvRedisAdapter {
  readonly client: RedisCommandClient;
  getClient(): Promise<unknown>;
  createKeyPrefix(key: string, namespace?: string): string;
  readonly namespace?: string | undefined;
  isCluster?(): boolean;
  opts?: { dialect?: string };
}

/** Whether a Keyv store is a `@keyv/redis` adapter (duck-typed, so two copies of the package both count). */
export function isKeyvRedisAdapter(store: unknown): store is KeyvRedisAdapter {
  if (typeof store !== 'object' || store === null) return false;
  const candidate = store as Partial<KeyvRedisAdapter>;
  return (
    candidate.opts?.dialect === 'redis' &&
    typeof candidate.getClient === 'function' &&
    typeof candidate.createKeyPrefix === 'function' &&
    typeof candidate.client?.sendCommand === 'function'
  );
}

/**
 * Runs Redis commands and the store's Lua scripts on the `@keyv/redis` client. Fails fast while
 * the client reconnects (instead of queueing commands that would run late, after the request
 * was already answered 503), and reloads scripts a Redis restart dropped (`NOSCRIPT`).
 */
export class RedisRunner {
  private connecting: Promise<unknown> | undefined;

  constructor(
    private readonly adapter: KeyvRedisAdapter,
    /** The Redis key prefix of every key this store owns. */
    readonly base: string,
  ) {
    if (adapter.isCluster?.()) {
      throw new ConfigurationError(
        'ERR_MS_STORE',
        'KeyvKeyStore: Redis Cluster is not supported (its Lua scripts touch several keys); use one primary, with replicas or Sentinel for failover',
      );
    }
  }

  /** Resolves when the client can take commands now; rejects at once while it is reconnecting. */
  async ready(): Promise<RedisCommandClient> {
    const client = this.adapter.client;
    if (client.isReady) return client;
    if (this.connecting === undefined && client.isOpen) {
      throw new Error('Redis connection lost; the client is reconnecting');
    }
    // First use (or after @keyv/redis gave up a connection): connect once for all callers.
    this.connecting ??= this.adapter.getClient().finally(() => {
      this.connecting = undefined;
    });
    await this.connecting;
    if (!this.adapter.client.isReady) throw new Error('Redis is not connected');
    return this.adapter.client;
  }

  async command(args: readonly string[]): Promise<unknown> {
    const client = await this.ready();
    return client.sendCommand(args);
  }

  /**
   * Runs one of {@link REDIS_SCRIPTS} with the store prefix and a Keyv-serialized payload. A script
   * that refused its arguments (`ERR modelswitch: refused …`, nothing written) rejects with a
   * TypeError, as the stores' own argument checks do: a value no store may write, not an outage.
   */
  async script(name: keyof typeof REDIS_SCRIPTS, payload: string): Promise<unknown> {
    const client = await this.ready();
    const script: RedisScript = REDIS_SCRIPTS[name];
    try {
      try {
        return await client.sendCommand(['EVALSHA', script.sha, '0', this.base, payload]);
      } catch (error) {
        if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error;
        // Redis restarted or flushed its script cache: EVAL runs the script and caches it again.
        return await client.sendCommand(['EVAL', script.source, '0', this.base, payload]);
      }
    } catch (error) {
      const refused = error instanceof Error ? REFUSAL.exec(error.message) : null;
      if (refused) throw new TypeError(`KeyvKeyStore on Redis: ${name} ${refused[1]}`, { cause: error });
      throw error;
    }
  }
}

/** A script's refusal, as Redis reports it: `ERR modelswitch: refused … script: <sha>, on @user_script:<line>.` */
const REFUSAL = /^ERR modelswitch: (refused .*?)(?: script: [0-9a-f]+, on @user_script:\d+\.)?$/;
