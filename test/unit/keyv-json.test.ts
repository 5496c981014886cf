import Keyv from 'keyv';
import { describe, expect, it } from 'vitest';
import { isKeyvDefaultDeserializer, parseKeyvJson } from '../../src/store/keyv/keyv-json.js';

// What Keyv's own default serializer and deserializer do: the reference parseKeyvJson must match.
const keyv = new Keyv();
const serialize = (value: unknown) => keyv.serialize?.({ value }) as string;
const keyvParse = (raw: string) => keyv.deserialize?.(raw);

/** A small seeded generator, so a failure names a case that can be run again. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state * 1_664_525 + 1_013_904_223) >>> 0;
    return state / 2 ** 32;
  };
}

function randomValue(next: () => number, depth: number): unknown {
  const pick = Math.floor(next() * (depth > 3 ? 5 : 8));
  const strings = ['', ':', '::', ':a', '::a', 'a:', ':base64:', ':base64:aGk=', '::base64:aGk=', 'plain', 'é:ü', '__proto__'];
  switch (pick) {
    case 0:
      return strings[Math.floor(next() * strings.length)];
    case 1:
      return Math.round(next() * 1e6) / 100;
    case 2:
      return next() < 0.5;
    case 3:
      return null;
    case 4:
      return Buffer.from([Math.floor(next() * 256), 1, 2]);
    case 5:
    case 6: {
      const object: Record<string, unknown> = {};
      const size = Math.floor(next() * 4);
      for (let i = 0; i < size; i++) {
        const name = strings[Math.floor(next() * strings.length)] as string;
        // defineProperty: a "__proto__" key must be an own property, as JSON.parse makes it.
        Object.defineProperty(object, name, { value: randomValue(next, depth + 1), enumerable: true, writable: true, configurable: true });
      }
      return object;
    }
    default:
      return Array.from({ length: Math.floor(next() * 4) }, () => randomValue(next, depth + 1));
  }
}

describe('parseKeyvJson', () => {
  it("reads a key record exactly as Keyv's default deserializer does, names that start with ':' included", () => {
    const record = {
      id: 7,
      handle: 'AbCdEfGhIj',
      type: 'proxy',
      accountId: '::acct',
      name: ':team key',
      prefix: 'ms-AbCd',
      active: true,
      createdAt: 1_763_856_000_000,
      expiresAt: null,
      lastUsedAt: null,
      usage: 1.25,
      usagePeriod: '2026-11',
      reserved: 0,
      limit: 10,
      limitReset: 'monthly',
      rateLimit: { requests: 100, interval: '1m' },
      hash: 'scrypt:hash',
    };
    const raw = serialize(record);
    expect(raw).toContain('"name":"::team key"');
    expect(parseKeyvJson(raw)).toEqual({ value: record });
    expect(parseKeyvJson(raw)).toEqual(keyvParse(raw));
  });

  it('turns :base64: strings into Buffers and keeps "__proto__" an own property, not the prototype', () => {
    // As Keyv's serializer writes them: a Buffer as ":base64:…", a string's leading ':' doubled.
    const raw = '{"value":{"__proto__":"::x","list":[":base64:aGk=","::base64:aGk=",{"a":"::"}]}}';
    const parsed = (parseKeyvJson(raw) as { value: Record<string, unknown> }).value;
    expect(Object.getPrototypeOf(parsed)).toBe(Object.prototype);
    expect(Object.getOwnPropertyDescriptor(parsed, '__proto__')?.value).toBe(':x');
    expect(parsed.list).toEqual([Buffer.from('hi'), ':base64:aGk=', { a: ':' }]);
    expect(parseKeyvJson(raw)).toEqual(keyvParse(raw));
    expect(parseKeyvJson('":top"')).toBe('top');
    expect(parseKeyvJson('null')).toBe(null);
  });

  it("matches Keyv's default deserializer on 2,000 random values", () => {
    const next = random(20261123);
    for (let i = 0; i < 2000; i++) {
      const raw = serialize(randomValue(next, 0));
      const ours = parseKeyvJson(raw);
      const theirs = keyvParse(raw);
      // Own "__proto__" keys compare as data through JSON, which Buffers survive as {type, data}.
      expect(JSON.stringify(ours), raw).toBe(JSON.stringify(theirs));
      expect(ours, raw).toEqual(theirs);
    }
  });
});

describe('isKeyvDefaultDeserializer', () => {
  it("is true for Keyv's default deserializer only", () => {
    expect(isKeyvDefaultDeserializer(new Keyv().deserialize)).toBe(true);
    const own = new Keyv();
    own.deserialize = (raw: string) => JSON.parse(raw);
    expect(isKeyvDefaultDeserializer(own.deserialize)).toBe(false);
    expect(isKeyvDefaultDeserializer(undefined)).toBe(false);
  });
});
