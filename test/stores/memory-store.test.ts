import { describe, expect, it, vi } from 'vitest';
import { MemoryKeyStore } from '../../src/index.js';
import { keyStoreSuite } from '../../src/testing/index.js';

keyStoreSuite({ it, createStore: () => new MemoryKeyStore() });

describe('MemoryKeyStore', () => {
  it('warns once under NODE_ENV=production that it is not shared or durable', async () => {
    vi.resetModules();
    const previous = process.env.NODE_ENV;
    process.env.NODE_ENV = 'production';
    try {
      const { MemoryKeyStore: Fresh } = await import('../../src/store/memory/memory-store.js');
      const warn = vi.fn();
      new Fresh({ warn });
      new Fresh({ warn });
      expect(warn).toHaveBeenCalledTimes(1);
      expect(warn.mock.calls[0]?.[0]).toMatch(/MemoryKeyStore keeps keys in this process only/);
    } finally {
      process.env.NODE_ENV = previous;
    }
  });

  it('does not warn outside production', () => {
    const warn = vi.fn();
    new MemoryKeyStore({ warn });
    expect(warn).not.toHaveBeenCalled();
  });
});
