import assert from 'node:assert/strict';
import { HOUR, type SuiteGroup } from './group.js';
import { colonAccountIds, randomAccountId } from './samples.js';

/** `hitCounter`: exact counts under concurrency, fixed windows, reads with amount 0, bad amounts. */
export const counterTests: SuiteGroup = (test, { concurrency }) => {
  test(`counts ${concurrency} concurrent counter hits exactly, per fixed window`, async (store) => {
    const name = `requests:${randomAccountId()}`;
    const now = 10 * HOUR + 1234;
    const results = await Promise.all(Array.from({ length: concurrency }, () => store.hitCounter(name, 60_000, now)));
    assert.deepEqual(
      results.map((r) => r.count).sort((a, b) => a - b),
      Array.from({ length: concurrency }, (_, i) => i + 1),
    );
    for (const result of results) assert.equal(result.resetAt, 10 * HOUR + 60_000);
    assert.deepEqual(await store.hitCounter(name, 60_000, now, 0), { count: concurrency, resetAt: 10 * HOUR + 60_000 });
    assert.deepEqual(await store.hitCounter(name, 60_000, now, 50), { count: concurrency + 50, resetAt: 10 * HOUR + 60_000 });
    assert.deepEqual(await store.hitCounter(name, 60_000, 10 * HOUR + 60_000), { count: 1, resetAt: 10 * HOUR + 120_000 });
    assert.deepEqual(await store.hitCounter(`${name}:other`, 60_000, now), { count: 1, resetAt: 10 * HOUR + 60_000 });
  });

  test('refuses a NaN, infinite or negative amount with a TypeError and changes nothing', async (store) => {
    const name = `tokens:${randomAccountId()}`;
    await store.hitCounter(name, 60_000, HOUR, 7);
    for (const amount of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -1]) {
      await assert.rejects(async () => store.hitCounter(name, 60_000, HOUR, amount), TypeError, `amount ${amount}`);
    }
    assert.deepEqual(await store.hitCounter(name, 60_000, HOUR, 0), { count: 7, resetAt: HOUR + 60_000 });
  });

  test("counter names that start with ':' count like any other", async (store) => {
    for (const id of colonAccountIds()) {
      assert.deepEqual(await store.hitCounter(`${id}:requests`, 60_000, HOUR), { count: 1, resetAt: HOUR + 60_000 });
      assert.deepEqual(await store.hitCounter(`${id}:requests`, 60_000, HOUR), { count: 2, resetAt: HOUR + 60_000 });
    }
  });
};
