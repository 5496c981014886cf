export {
  keyStoreSuite,
  type KeyStoreSuiteGroup,
  type KeyStoreSuiteOptions,
  type TestFunction,
} from './key-store-suite.js';
export { sampleAccount, sampleKeyRecord } from './samples.js';
