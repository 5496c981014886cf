import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The newest PostgreSQL server binaries installed the Debian way (`/usr/lib/postgresql/<major>/bin`), or undefined. */
export function postgresBinaries(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const majors = readdirSync(root)
    .filter((name) => /^\d+$/.test(name) && existsSync(join(root, name, 'bin', 'pg_ctl')))
    .sort((a, b) => Number(b) - Number(a));
  return majors[0] === undefined ? undefined : join(root, majors[0], 'bin');
}

/** A free TCP port on 127.0.0.1. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/**
 * A private PostgreSQL cluster the outage tests may stop, freeze and start again without touching
 * the shared server: `initdb` in a temp directory, `pg_ctl` on a free port, trust authentication on
 * 127.0.0.1 only. initdb refuses to run as root, so as root the cluster belongs to the `postgres`
 * user (`runuser`). Its data survives a stop (the WAL is flushed: no `fsync=off`, since a test here
 * checks that committed money survives).
 */
export class PostgresCluster {
  private constructor(
    readonly bin: string,
    readonly dir: string,
    readonly port: number,
    private readonly owner: string | undefined,
  ) {}

  /** Creates and starts a cluster. */
  static async start(bin: string): Promise<PostgresCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'ms-postgres-'));
    const owner = userInfo().uid === 0 ? 'postgres' : undefined;
    if (owner) {
      const [uid, gid] = idsOf(owner);
      chownSync(dir, uid, gid);
    }
    const cluster = new PostgresCluster(bin, dir, await freePort(), owner);
    try {
      await cluster.tool('initdb', ['-D', cluster.data, '-A', 'trust', '-U', 'postgres', '--no-sync', '--no-instructions']);
      await cluster.restart();
    } catch (error) {
      await cluster.remove();
      throw error;
    }
    return cluster;
  }

  /** The connection string of its `postgres` database. */
  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  private get data(): string {
    return join(this.dir, 'data');
  }

  /** Whether the server is running (`pg_ctl status`). */
  async running(): Promise<boolean> {
    try {
      await this.tool('pg_ctl', ['-D', this.data, 'status']);
      return true;
    } catch {
      return false;
    }
  }

  /** Starts the server (if it is not running) and resolves once it accepts connections. */
  async restart(): Promise<void> {
    if (await this.running()) return;
    await this.tool('pg_ctl', [
      '-D',
      this.data,
      '-l',
      join(this.dir, 'server.log'),
      '-o',
      `-p ${this.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=${this.dir}`,
      '-w',
      '-t',
      '60',
      'start',
    ]);
  }

  /**
   * Stops the server. `fast` (a clean shutdown: sessions are ended, their open transactions rolled
   * back) or `immediate` (the processes quit at once, as a crash: recovery replays the WAL on start).
   */
  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    if (!(await this.running())) return;
    await this.tool('pg_ctl', ['-D', this.data, '-m', mode, '-w', '-t', '60', 'stop']);
  }

  /** Freezes every process of the server (it accepts connections but answers nothing), as a hung host would. */
  freeze(): void {
    this.signal('SIGSTOP');
  }

  thaw(): void {
    this.signal('SIGCONT');
  }

  /** Stops the server (if running) and removes its directory. Only this cluster's processes and files are touched. */
  async remove(): Promise<void> {
    try {
      this.thaw();
      await this.stop('immediate');
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /** The postmaster and its children, from the cluster's own pid file. */
  private processIds(): number[] {
    const pidFile = join(this.data, 'postmaster.pid');
    if (!existsSync(pidFile)) return [];
    const postmaster = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
    if (!Number.isSafeInteger(postmaster) || postmaster <= 0) return [];
    let children: number[] = [];
    try {
      children = execFileSync('pgrep', ['-P', String(postmaster)], { encoding: 'utf8' })
        .split('\n')
        .filter(Boolean)
        .map(Number);
    } catch {
      // pgrep exits 1 when there are no children.
    }
    return [postmaster, ...children];
  }

  private signal(signal: NodeJS.Signals): void {
    for (const pid of this.processIds()) {
      try {
        process.kill(pid, signal);
      } catch {
        // Gone already.
      }
    }
  }

  /** Runs one of the server's tools, as the cluster's owner. */
  private async tool(name: string, args: string[]): Promise<void> {
    const path = join(this.bin, name);
    const [command, commandArgs] = this.owner ? ['runuser', ['-u', this.owner, '--', path, ...args]] : [path, args];
    await run(command, commandArgs, { cwd: this.dir });
  }
}

/** The uid and gid of a user. */
function idsOf(user: string): [number, number] {
  const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
  return [uid, gid];
}
