export { keyStoreSuite, type KeyStoreSuiteOptions, type TestFunction } from './key-store-suite.js';
