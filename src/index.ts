export { modelSwitchAuth, type Middleware, type NextFunction } from './auth.js';
export type { AuthOptions, AuthenticatedKey, AuthenticatedRequest, ModelSwitchContext } from './authenticate.js';
export { keyInfoRoute, type KeyInfoResponse } from './key-info.js';
export { keysRouter, type KeysRouterOptions } from './keys-router.js';
export { proxyRouter, type ProxyRouter, type ProxyRouterOptions } from './proxy-router.js';
export { costOf, type ModelPrice, type Pricing, type TokenUsage } from './pricing.js';
export { DEFAULT_PROXY_PATHS, type Upstream } from './upstreams.js';
export {
  createAccount,
  creditBalance,
  issueKey,
  prepareKey,
  publicKey,
  type IssueKeyInput,
  type IssuedKey,
  type NewAccountInput,
  type PreparedKey,
  type PublicKey,
} from './accounts.js';
export { API_KEY_PATTERN, generateApiKey, parseApiKey, type KeyType, type ParsedApiKey } from './api-key.js';
export { DEFAULT_SCRYPT, KeyHasher, type KeyHasherOptions, type ScryptParameters } from './hashing.js';
export {
  ConfigurationError,
  ModelSwitchError,
  type ErrorBody,
  type ModelSwitchErrorCode,
  type ModelSwitchErrorType,
} from './errors.js';
export { DEFAULT_RATE_LIMIT, intervalToMs } from './rate-limit.js';
export { limitPeriod } from './spend.js';
export type { Logger, StoreGuardOptions } from './store-guard.js';
export { KeyvKeyStore, type KeyvKeyStoreOptions } from './stores/keyv-store.js';
export { MemoryKeyStore, type MemoryKeyStoreOptions } from './stores/memory-store.js';
export type {
  AccountRecord,
  CounterState,
  KeyChanges,
  KeyPage,
  KeyPageRequest,
  KeyRecord,
  KeyStore,
  LimitReset,
  NewKeyRecord,
  RateLimitSetting,
  ReservationResult,
  SpendReservation,
  SpendSettlement,
  SyncHotPath,
} from './types.js';
