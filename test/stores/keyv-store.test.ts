import Keyv from 'keyv';
import { afterAll, describe, it } from 'vitest';
import { KeyvKeyStore } from '../../src/stores/keyv-store.js';
import { keyStoreSuite } from '../../src/testing/index.js';
import { REDIS_URL, redisKeyv, redisSkipReason, removeKeys, runPrefix } from './redis-env.js';

describe('KeyvKeyStore over Keyv’s in-memory Map', () => {
  keyStoreSuite({ it, createStore: () => new KeyvKeyStore(new Keyv()) });
});

describe.skipIf(!REDIS_URL)(`KeyvKeyStore over Redis${redisSkipReason ? ` (${redisSkipReason})` : ''}`, () => {
  const url = REDIS_URL as string;
  const prefix = runPrefix();
  afterAll(() => removeKeys(url, prefix));
  keyStoreSuite({ it, createStore: () => new KeyvKeyStore(redisKeyv(url), { prefix }) });
});
