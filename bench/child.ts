import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ChildReply, ChildRequest } from './common.js';

/** A bench child process (servers, flood client or upstream) driven over IPC. */
export interface BenchChild {
  call<T>(command: string, args?: unknown): Promise<T>;
  close(): Promise<void>;
  pid: number;
}

/**
 * Starts `file` (in test/bench) with tsx in its own process, so load generation and the servers
 * never share an event loop. `--expose-gc` lets the servers measure heap per key.
 */
export function startChild(file: string, env: Record<string, string> = {}): BenchChild {
  const path = fileURLToPath(new URL(file, import.meta.url));
  const child: ChildProcess = fork(path, [], {
    execArgv: ['--import', 'tsx', '--expose-gc', '--max-old-space-size=8192'],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  let nextId = 1;
  const pending = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void }>();
  child.on('message', (message: ChildReply) => {
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.ok) waiter.resolve(message.result);
    else waiter.reject(new Error(message.error ?? 'child failed'));
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', (code) => {
    for (const waiter of pending.values()) waiter.reject(new Error(`${file} exited with code ${String(code)}`));
    pending.clear();
  });
  return {
    pid: child.pid ?? -1,
    call<T>(command: string, args: unknown = null): Promise<T> {
      const id = nextId++;
      const request: ChildRequest = { id, command, args };
      return new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (value: unknown) => void, reject });
        child.send(request);
      });
    },
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        child.send({ id: 0, command: 'exit', args: null } satisfies ChildRequest);
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

/** The child side: answers each request with its handler's result. */
export function serveCommands(handlers: Record<string, (args: never) => unknown>, onExit: () => Promise<void> | void): void {
  process.on('message', (request: ChildRequest) => {
    if (request.command === 'exit') {
      Promise.resolve(onExit()).finally(() => process.exit(0));
      return;
    }
    const handler = handlers[request.command];
    const reply = (message: ChildReply) => process.send?.(message);
    if (!handler) {
      reply({ id: request.id, ok: false, error: `unknown command ${request.command}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(request.args as never))
      .then(
        (result) => reply({ id: request.id, ok: true, result }),
        (error: unknown) =>
          reply({ id: request.id, ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) }),
      );
  });
  // The runner going away must not leave servers behind.
  process.on('disconnect', () => {
    Promise.resolve(onExit()).finally(() => process.exit(0));
  });
}
