import { randomBytes } from 'node:crypto';
import KeyvRedis, { createClient } from '@keyv/redis';
import Keyv from 'keyv';

/**
 * Where the Redis-backed tests find their server. Unset: they are skipped with a visible reason,
 * except under CI=true, where a missing server must fail the run instead of passing silently.
 */
export const REDIS_URL = process.env.REDIS_URL;

export const redisSkipReason = REDIS_URL
  ? undefined
  : 'REDIS_URL is not set: skipping the Redis-backed KeyvKeyStore tests (see "Testing with Redis and PostgreSQL" in docs/development.md)';

if (!REDIS_URL) {
  if (process.env.CI === 'true') throw new Error('REDIS_URL must be set when CI=true: the Redis-backed tests cannot be skipped in CI');
  console.warn(redisSkipReason);
}

/** A key prefix of its own for one test run, so runs never see each other's keys. */
export function runPrefix(): string {
  return `mstest-${randomBytes(6).toString('hex')}:`;
}

/** A Keyv over Redis at `url` (each call a new connection, as a separate gateway process would have). */
export function redisKeyv(url: string): Keyv {
  return new Keyv(new KeyvRedis(url));
}

/** Deletes every Redis key whose name contains `prefix`. */
export async function removeKeys(url: string, prefix: string): Promise<number> {
  const client = createClient({ url });
  await client.connect();
  let removed = 0;
  try {
    for await (const keys of client.scanIterator({ MATCH: `*${prefix}*`, COUNT: 1000 })) {
      if (keys.length > 0) removed += await client.del(keys);
    }
  } finally {
    client.destroy();
  }
  return removed;
}
