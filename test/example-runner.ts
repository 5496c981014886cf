import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';

/** A running `examples/gateway.ts` and what it printed. */
export interface RunningExample {
  child: ChildProcess;
  output: () => string;
  /** Resolves with the gateway's URL and billing key once it printed both. */
  ready: Promise<{ url: string; billingKey: string }>;
}

/**
 * Starts `examples/gateway.ts` as `npm run example` does, on a free port, with a balance of 25 USD,
 * the offline mock upstream (no OPENAI_API_KEY), the store `env` picks (the in-memory one unless it
 * sets DATABASE_URL or REDIS_URL: neither is inherited from this process).
 */
export function startExample(env: Record<string, string> = {}): RunningExample {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, PORT: '0', MODELSWITCH_INITIAL_BALANCE: '25' };
  delete childEnv.DATABASE_URL;
  delete childEnv.REDIS_URL;
  delete childEnv.OPENAI_API_KEY;
  const child = spawn(process.execPath, ['--import', 'tsx', 'examples/gateway.ts'], {
    env: { ...childEnv, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const ready = new Promise<{ url: string; billingKey: string }>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      text += chunk.toString('utf8');
      const url = /on (http:\/\/localhost:\d+)/.exec(text)?.[1];
      const billingKey = /^MODELSWITCH_BILLING_KEY=(mk-[0-9A-Za-z]{38})$/m.exec(text)?.[1];
      if (url && billingKey) resolve({ url, billingKey });
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`example exited early with ${code}: ${text}`)));
  });
  return { child, output: () => text, ready };
}

/** Sends `signal` to the example and resolves with its exit code. */
export async function stopExample(example: RunningExample, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  const exited = once(example.child, 'exit');
  example.child.kill(signal);
  const [code] = (await exited) as [number | null];
  return code;
}
