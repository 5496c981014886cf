import { describe, expect, it } from 'vitest';
import { API_KEY_PATTERN, generateApiKey, parseApiKey } from '../../src/index.js';
import { hasKeyShape, hasValidChecksum, keyParts } from '../../src/keys/api-key.js';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

describe('API key format', () => {
  it('generates ms- proxy keys and mk- billing keys of 41 base62 characters after the prefix rule', () => {
    const proxy = generateApiKey('proxy');
    const billing = generateApiKey('billing');
    expect(proxy.value).toMatch(/^ms-[0-9A-Za-z]{38}$/);
    expect(billing.value).toMatch(/^mk-[0-9A-Za-z]{38}$/);
    expect(proxy.prefix).toBe(proxy.value.slice(0, 7));
    expect(proxy.handle).toBe(proxy.value.slice(3, 13));
    expect(parseApiKey(proxy.value)).toEqual(proxy);
    expect(parseApiKey(billing.value)).toEqual(billing);
  });

  it('is matched by the documented regular expression inside text, and only whole', () => {
    const { value } = generateApiKey('proxy');
    expect(API_KEY_PATTERN.exec(`export MODELSWITCH_API_KEY="${value}"`)?.[0]).toBe(value);
    expect(API_KEY_PATTERN.test(`${value}x`)).toBe(false);
  });

  it('never repeats keys or handles and uses every base62 character', () => {
    const values = new Set<string>();
    const handles = new Set<string>();
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const key = generateApiKey('proxy');
      values.add(key.value);
      handles.add(key.handle);
      for (const c of key.value.slice(13, 35)) seen.add(c);
    }
    expect(values.size).toBe(2000);
    expect(handles.size).toBe(2000);
    expect([...seen].sort().join('')).toBe([...BASE62].sort().join(''));
  });

  it('rejects wrong length, characters and prefix without a store', () => {
    const { value } = generateApiKey('proxy');
    for (const bad of [
      '',
      'ms-',
      value.slice(0, -1),
      `${value}0`,
      `sk-${value.slice(3)}`,
      `MS-${value.slice(3)}`,
      `${value.slice(0, 20)}_${value.slice(21)}`,
      `${value.slice(0, 20)}é${value.slice(21)}`,
      'x'.repeat(10_000),
    ]) {
      expect(parseApiKey(bad)).toBeNull();
    }
  });

  it('rejects every single-character typo through the checksum', () => {
    const { value } = generateApiKey('billing');
    let rejected = 0;
    let tried = 0;
    for (let position = 3; position < value.length; position++) {
      for (const replacement of ['0', 'Z', 'z', 'q']) {
        if (value[position] === replacement) continue;
        tried++;
        if (parseApiKey(value.slice(0, position) + replacement + value.slice(position + 1)) === null) rejected++;
      }
    }
    expect(rejected).toBe(tried);
  });

  it('rejects an ms- key relabelled as mk- (the prefix is inside the checksum)', () => {
    const { value } = generateApiKey('proxy');
    expect(parseApiKey(`mk-${value.slice(3)}`)).toBeNull();
  });

  it('splits the checks for the hot path: shape, checksum, parts (internal)', () => {
    const { value } = generateApiKey('proxy');
    const typo = `${value.slice(0, 20)}${value[20] === 'q' ? 'r' : 'q'}${value.slice(21)}`;
    expect([hasKeyShape(value), hasValidChecksum(value)]).toEqual([true, true]);
    expect([hasKeyShape(typo), hasValidChecksum(typo)]).toEqual([true, false]);
    expect(keyParts(value)).toEqual(parseApiKey(value));
    expect(keyParts(typo)).toEqual({ type: 'proxy', handle: typo.slice(3, 13), prefix: typo.slice(0, 7), value: typo });
    for (const bad of [value.slice(1), `${value}x`, `mx-${value.slice(3)}`, `${value.slice(0, 40)}-`, '']) {
      expect(hasKeyShape(bad)).toBe(false);
    }
  });
});
