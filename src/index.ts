export { modelSwitchAuth } from './auth/model-switch-auth.js';
export type { Middleware, NextFunction } from './http/middleware.js';
export type { AuthenticatedKey, AuthenticatedRequest, ModelSwitchContext } from './auth/authenticator.js';
export type { AuthOptions } from './auth/options.js';
export { generationRoute } from './auth/generation.js';
export { keyInfoRoute, type KeyInfoResponse } from './auth/key-info.js';
export { keysRouter } from './management/keys-router.js';
export type {
  AccountResponse,
  TransactionsResponse,
  UsageGroup,
  UsageGrouping,
  UsageResponse,
  UsageTotals,
} from './management/account-routes.js';
export type { KeysRouterOptions } from './management/options.js';
export { proxyRouter, type ProxyRouter, type ProxyRouterOptions } from './proxy/proxy-router.js';
export { dashboardRouter } from './dashboard/dashboard-router.js';
export { oidcIdentity, type OidcIdentityOptions } from './dashboard/oidc.js';
export type { DashboardIdentity, DashboardOptions, DashboardSessionOptions, IdentifyFunction } from './dashboard/options.js';
export { costOf, type ModelPrice, type Pricing, type TokenUsage } from './proxy/pricing.js';
export type { Upstream } from './proxy/upstreams.js';
export {
  adjustBalance,
  createAccount,
  creditBalance,
  issueKey,
  prepareKey,
  prepareRotation,
  type AdjustmentOptions,
  type CreditOptions,
  type IssueKeyInput,
  type IssuedKey,
  type NewAccountInput,
  type PreparedKey,
  type PrepareKeyOptions,
  type PreparedRotation,
  type RotationOptions,
} from './keys/accounts.js';
export { publicKey, type PublicKey } from './keys/public-key.js';
export { publicLedgerEntry, type PublicLedgerEntry } from './keys/public-ledger-entry.js';
export { API_KEY_PATTERN, generateApiKey, parseApiKey, type ParsedApiKey } from './keys/api-key.js';
export type { KeyType } from './store/types.js';
export { KeyHasher, type KeyHasherOptions, type ScryptParameters } from './keys/hashing.js';
export { DEFAULT_PROXY_PATHS, DEFAULT_RATE_LIMIT, DEFAULT_SCRYPT } from './defaults.js';
export { prometheusMetrics, type PrometheusMetrics, type PrometheusMetricsOptions } from './metrics/prometheus.js';
export type { GatewayMetrics, MetricsQueue } from './metrics/gateway-metrics.js';
export type { EventHandler, ModelSwitchActor, ModelSwitchEvent, ModelSwitchEventType } from './events/events.js';
export { ConfigurationError, type ConfigurationErrorCode } from './errors/configuration-error.js';
export { ModelSwitchError, type ErrorBody, type ModelSwitchErrorCode, type ModelSwitchErrorType } from './errors/errors.js';
export { sendError } from './http/respond.js';
export { redactKeys } from './errors/redact.js';
export { intervalToMs } from './auth/rate-limit.js';
export { limitPeriod } from './store/spend-rules.js';
export type { Logger } from './log.js';
export type { StoreGuardOptions } from './store/guard.js';
export { KeyvKeyStore, type KeyvKeyStoreOptions } from './store/keyv/keyv-store.js';
export { MemoryKeyStore, type MemoryKeyStoreOptions } from './store/memory/memory-store.js';
export type {
  AccountRecord,
  Awaitable,
  BalanceChange,
  BalanceChangeResult,
  CounterState,
  KeyChanges,
  KeyPage,
  KeyPageRequest,
  KeyRecord,
  KeyRotation,
  KeyStore,
  LedgerEntry,
  LedgerEntryType,
  LedgerPage,
  LedgerQuery,
  LimitReset,
  NewKeyRecord,
  RateLimitSetting,
  ReservationResult,
  SpendReservation,
  SpendSettlement,
  UsageDetails,
  UsageRange,
  UsageRow,
} from './store/types.js';
