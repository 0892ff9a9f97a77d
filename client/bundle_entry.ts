/**
 * The client as one bundled file (`deno bundle`; scripts/cw makes and uses it):
 * a client command then loads one module instead of ~30 and starts without
 * the project's npm setup — `cw list` at 200 sessions took 53 ms from source
 * and 36 ms bundled. `cw node` and `cw relay` always run from source.
 */
import { runClient } from "./cli.ts";

Deno.exit(await runClient(Deno.args));
