/** Bad input to the CLI: one line on stderr, exit code 2. The message never holds a key (it is redacted anyway). */
export class CliInputError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CliInputError';
  }
}

/** The account or key named does not exist: exit code 1. */
export class CliNotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CliNotFoundError';
  }
}
