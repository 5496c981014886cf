/**
 * Child process of the benchmark: the attacker. Runs its own autocannon so the flood never shares an
 * event loop with the legitimate client or the servers.
 */
import { serveCommands } from './child.js';
import { guessForHandle, inventedKey } from './common.js';
import { runLoad } from './load.js';

export interface FloodOptions {
  url: string;
  connections: number;
  durationS: number;
  overallRate: number;
  /** `none`: no Authorization header (the cheapest 401, the reference); `invented`: checksum-invalid keys; `guess`: real handles, wrong secrets. */
  mode: 'none' | 'invented' | 'guess';
  handles: string[];
}

function floodKeys(options: FloodOptions): string[] | undefined {
  // Every request a different key, so neither the failure cache nor coalescing absorbs the flood.
  const count = Math.ceil(options.overallRate * options.durationS) + 1000;
  if (options.mode === 'invented') return Array.from({ length: count }, inventedKey);
  if (options.mode === 'guess') {
    return Array.from({ length: count }, (_, i) => guessForHandle(options.handles[i % options.handles.length] as string));
  }
  return undefined;
}

serveCommands(
  {
    async flood(options: FloodOptions) {
      const keys = floodKeys(options);
      // The attacker's own CPU (this process: autocannon): on this machine it runs on the cores the
      // server needs, which a real attacker would not.
      const cpuBefore = process.cpuUsage();
      const result = await runLoad({
        url: options.url,
        connections: options.connections,
        durationS: options.durationS,
        overallRate: options.overallRate,
        ...(keys ? { keys } : {}),
      });
      // Every flood request is answered 401: count answers, not 2xx.
      const cpu = process.cpuUsage(cpuBefore);
      return {
        sent: result.ok + result.non2xx,
        perSecond: (result.ok + result.non2xx) / result.durationS,
        errors: result.errors,
        /** Share of one core the attacker used while flooding. */
        cpuShare: (cpu.user + cpu.system) / 1e6 / result.durationS,
      };
    },
  },
  () => {},
);
