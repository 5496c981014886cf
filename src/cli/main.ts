#!/usr/bin/env node
/**
 * The `modelswitch-keys` bin (`"bin"` in package.json): runs {@link runCli} on the process's
 * arguments and exits with its code.
 */
import { runCli } from './run.js';

runCli(process.argv.slice(2), {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  env: process.env,
}).then(
  // A Redis client still reconnecting to a server that went away would keep the process alive:
  // the command is done, so the process ends here (pipes and files are written synchronously).
  (code) => process.exit(code),
  () => {
    process.stderr.write('modelswitch-keys: unexpected failure\n');
    process.exit(1);
  },
);
