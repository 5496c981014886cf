/** A timer {@link InFlight} can hold the process open with (`ref`) or not (`unref`), as Node's `setTimeout` returns. */
export interface ScheduledTimer {
  ref(): unknown;
  unref(): unknown;
}

/** Runs `run` once after `ms` milliseconds. Node's `setTimeout` by default; tests pass a scheduler they advance by hand. */
export type Scheduler = (run: () => void, ms: number) => ScheduledTimer;

const nodeScheduler: Scheduler = (run, ms) => setTimeout(run, ms);

/**
 * What `ProxyRouter.drain()` waits for: requests between the start of their reservation and the
 * close of their response, settlements and releases under way, and retry timers. The timers do not
 * hold the process open until `drain()` is first called; from then on they do.
 */
export class InFlight {
  private readonly work = new Set<Promise<unknown>>();
  private readonly timers = new Set<ScheduledTimer>();
  private requests = 0;
  private waiting: Array<() => void> = [];
  private draining = false;

  constructor(private readonly schedule: Scheduler = nodeScheduler) {}

  /** A request starts reserving; it must reach `leave()` exactly once (refused, or response closed). */
  enter(): void {
    this.requests++;
  }

  leave(): void {
    this.requests--;
    this.wake();
  }

  /** Keeps `promise` counted until it settles. */
  track(promise: Promise<unknown>): void {
    this.work.add(promise);
    const done = () => {
      this.work.delete(promise);
    };
    promise.then(done, done);
    this.wake();
  }

  /** Runs `run` after `ms` on the scheduler; its timer holds the process open only once draining. */
  later(run: () => void, ms: number): void {
    const timer = this.schedule(() => {
      this.timers.delete(timer);
      run();
    }, ms);
    if (!this.draining) timer.unref();
    this.timers.add(timer);
  }

  /** Resolves once no request, promise or timer is left. */
  async drain(): Promise<void> {
    this.draining = true;
    for (const timer of this.timers) timer.ref();
    while (this.work.size > 0 || this.requests > 0) {
      if (this.work.size > 0) await Promise.allSettled([...this.work]);
      else await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }

  private wake(): void {
    const waiting = this.waiting;
    this.waiting = [];
    for (const resolve of waiting) resolve();
  }
}
