// Loads the built CommonJS and ESM entry points and verifies a key end to end with each, so a
// packaging mistake (a missing export, an ESM-only dependency under require) fails CI.
const assert = require('node:assert/strict');

async function check(label, api, testing) {
  const hasher = new api.KeyHasher({ scrypt: { logN: 10 } });
  const key = api.generateApiKey('proxy');
  assert.equal(await hasher.verify(key.value, await hasher.hash(key.value)), true, `${label}: verify`);
  for (const name of ['modelSwitchAuth', 'keysRouter', 'keyInfoRoute', 'MemoryKeyStore', 'createAccount', 'issueKey']) {
    assert.equal(typeof api[name], 'function', `${label}: ${name} is exported`);
  }
  assert.equal(typeof testing.keyStoreSuite, 'function', `${label}: keyStoreSuite is exported`);
  console.log(`${label} build: ok`);
}

(async () => {
  await check('CommonJS', require('../../dist/index.cjs'), require('../../dist/testing/index.cjs'));
  await check('ESM', await import('../../dist/index.js'), await import('../../dist/testing/index.js'));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
