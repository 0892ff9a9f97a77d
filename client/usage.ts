/** A command-line mistake in a relay command (exit 2); its own file so that cli.ts can tell it apart without loading the relay's commands. */
export class RelayUsageError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "RelayUsageError";
  }
}
