import assert from 'node:assert/strict';
import type { SuiteGroup } from './group.js';
import { sampleAccount, sampleKeyRecord } from './samples.js';

/** A key's `models` allow-list: stored, updated and listed exactly as given, answered as copies. */
export const modelTests: SuiteGroup = (test) => {
  test('stores models as given and reads them back by id, by handle and in listings', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const models = ['gpt-4o', 'claude-*', ':beta', 'openai/o1*', 'modèle-ü'];
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { models }));
    assert.deepEqual(inserted.models, models);
    assert.deepEqual(await store.getKey(inserted.id), inserted);
    assert.deepEqual(await store.getKeyByHandle(inserted.handle), inserted);
    assert.deepEqual((await store.listKeys(owner.id, { type: 'proxy', limit: 10 })).keys, [inserted]);
    const many = Array.from({ length: 100 }, (_, i) => `model-${i}`);
    const wide = await store.insertKey(sampleKeyRecord(owner.id, { models: many }));
    assert.deepEqual((await store.getKey(wide.id))?.models, many);
    const open = await store.insertKey(sampleKeyRecord(owner.id));
    assert.equal((await store.getKey(open.id))?.models, null, 'null allows every model');
  });

  test('updateKey sets, replaces and clears models, and keeps them when not named', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const inserted = await store.insertKey(sampleKeyRecord(owner.id));
    assert.deepEqual((await store.updateKey(inserted.id, { models: ['gpt-4o-mini'] }))?.models, ['gpt-4o-mini']);
    assert.deepEqual(await store.updateKey(inserted.id, { name: 'renamed' }), { ...inserted, name: 'renamed', models: ['gpt-4o-mini'] });
    assert.deepEqual((await store.updateKey(inserted.id, { models: ['a*', 'b'] }))?.models, ['a*', 'b']);
    assert.equal((await store.updateKey(inserted.id, { models: null }))?.models, null);
    assert.deepEqual(await store.getKey(inserted.id), { ...inserted, name: 'renamed' });
  });

  test('models arrays are copies: changing one given or answered does not change the store', async (store) => {
    const owner = await store.createAccount(sampleAccount());
    const given = ['gpt-4o'];
    const inserted = await store.insertKey(sampleKeyRecord(owner.id, { models: given }));
    given.push('sneaked-in');
    inserted.models?.push('also-sneaked');
    const read = await store.getKey(inserted.id);
    assert.deepEqual(read?.models, ['gpt-4o']);
    read?.models?.push('again');
    const change = ['x'];
    await store.updateKey(inserted.id, { models: change });
    change.push('y');
    assert.deepEqual((await store.getKey(inserted.id))?.models, ['x']);
    assert.deepEqual((await store.getKeyByHandle(inserted.handle))?.models, ['x']);
  });
};
