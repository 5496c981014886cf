import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

/** Every name a module exports, values and types alike, sorted. */
function exportedNames(entry: string): string[] {
  const file = resolve(SRC, entry);
  const program = ts.createProgram([file], {
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
  });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(file);
  if (source === undefined) throw new Error(`cannot read ${file}`);
  const module = checker.getSymbolAtLocation(source);
  if (module === undefined) throw new Error(`${file} is not a module`);
  return checker
    .getExportsOfModule(module)
    .map((symbol) => symbol.getName())
    .sort();
}

// The public faces of the package. A name added or removed here is a change of the public API:
// make it on purpose, with its README row.
const INDEX_EXPORTS = [
  'GatewayMetrics',
  'MetricsQueue',
  'PrometheusMetrics',
  'PrometheusMetricsOptions',
  'prometheusMetrics',
  'API_KEY_PATTERN',
  'DashboardIdentity',
  'DashboardOptions',
  'DashboardSessionOptions',
  'IdentifyFunction',
  'OidcIdentityOptions',
  'dashboardRouter',
  'oidcIdentity',
  'AccountRecord',
  'Awaitable',
  'AccountResponse',
  'PublicLedgerEntry',
  'TransactionsResponse',
  'UsageGroup',
  'UsageGrouping',
  'UsageResponse',
  'UsageTotals',
  'publicLedgerEntry',
  'generationRoute',
  'AdjustmentOptions',
  'BalanceChange',
  'BalanceChangeResult',
  'CreditOptions',
  'KeyRotation',
  'LedgerEntry',
  'LedgerEntryType',
  'LedgerPage',
  'LedgerQuery',
  'PreparedRotation',
  'RotationOptions',
  'UsageDetails',
  'UsageRange',
  'UsageRow',
  'adjustBalance',
  'prepareRotation',
  'AuthOptions',
  'AuthenticatedKey',
  'AuthenticatedRequest',
  'ConfigurationError',
  'ConfigurationErrorCode',
  'CounterState',
  'DEFAULT_PROXY_PATHS',
  'DEFAULT_RATE_LIMIT',
  'DEFAULT_SCRYPT',
  'ErrorBody',
  'EventHandler',
  'IssueKeyInput',
  'IssuedKey',
  'KeyChanges',
  'KeyHasher',
  'KeyHasherOptions',
  'KeyInfoResponse',
  'KeyPage',
  'KeyPageRequest',
  'KeyRecord',
  'KeyStore',
  'KeyType',
  'KeysRouterOptions',
  'KeyvKeyStore',
  'KeyvKeyStoreOptions',
  'LimitReset',
  'Logger',
  'MemoryKeyStore',
  'MemoryKeyStoreOptions',
  'Middleware',
  'ModelPrice',
  'ModelSwitchActor',
  'ModelSwitchContext',
  'ModelSwitchError',
  'ModelSwitchErrorCode',
  'ModelSwitchErrorType',
  'ModelSwitchEvent',
  'ModelSwitchEventType',
  'NewAccountInput',
  'NewKeyRecord',
  'NextFunction',
  'ParsedApiKey',
  'PrepareKeyOptions',
  'PreparedKey',
  'Pricing',
  'ProxyRouter',
  'ProxyRouterOptions',
  'PublicKey',
  'RateLimitSetting',
  'ReservationResult',
  'ScryptParameters',
  'SpendReservation',
  'SpendSettlement',
  'StoreGuardOptions',
  'TokenUsage',
  'Upstream',
  'costOf',
  'createAccount',
  'creditBalance',
  'generateApiKey',
  'intervalToMs',
  'issueKey',
  'keyInfoRoute',
  'keysRouter',
  'limitPeriod',
  'modelSwitchAuth',
  'parseApiKey',
  'prepareKey',
  'proxyRouter',
  'publicKey',
  'redactKeys',
  'sendError',
];

const TESTING_EXPORTS = ['KeyStoreSuiteGroup', 'KeyStoreSuiteOptions', 'TestFunction', 'keyStoreSuite', 'sampleAccount', 'sampleKeyRecord'];

const POSTGRES_EXPORTS = [
  'PostgresKeyStore',
  'PostgresKeyStoreOptions',
  'PostgresMigrationResult',
  'PostgresPool',
  'PostgresPoolClient',
  'PostgresQueryResult',
];

// Each test type-checks a TypeScript program of the whole package and its dependencies' types: CPU
// work that a busy machine (two test runs at once in CI, other jobs) stretches past the default
// timeout, which is there to catch hangs, not to time this.
const TYPE_CHECK_TIMEOUT_MS = 90_000;

describe('the public API', () => {
  it(
    'exports exactly the documented names from modelswitch-keys',
    () => {
      expect(exportedNames('index.ts')).toEqual([...INDEX_EXPORTS].sort());
    },
    TYPE_CHECK_TIMEOUT_MS,
  );

  it(
    'exports exactly the documented names from modelswitch-keys/testing',
    () => {
      expect(exportedNames('testing/index.ts')).toEqual([...TESTING_EXPORTS].sort());
    },
    TYPE_CHECK_TIMEOUT_MS,
  );

  it(
    'exports exactly the documented names from modelswitch-keys/postgres',
    () => {
      expect(exportedNames('store/postgres/index.ts')).toEqual([...POSTGRES_EXPORTS].sort());
    },
    TYPE_CHECK_TIMEOUT_MS,
  );
});
