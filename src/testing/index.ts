export { keyStoreSuite, sampleAccount, sampleKeyRecord, type KeyStoreSuiteOptions, type TestFunction } from './key-store-suite.js';
