/**
 * The decoder fuzzer (scripts/fuzz.ts) on a fixed seed and 20,000 cases, so
 * that every run of the suite checks each wire format's decoders against its
 * spec; `deno task fuzz` runs a million on a fresh seed.
 */
import assert from "node:assert/strict";
import { FORMATS, mergeReports, runFuzz } from "../scripts/fuzz.ts";

const SEED = 0x5eed;

Deno.test("fuzz: every decoder accepts or rejects 20,000 cases as its spec says", async () => {
  const reports = await runFuzz({ cases: 20_000, seed: SEED });
  assert.deepEqual(reports.map((r) => r.format), [...FORMATS]);
  for (const r of reports) {
    assert.ok(r.accepted > r.cases / 10, `${r.format}: ${r.accepted} of ${r.cases} accepted`);
    assert.ok(r.rejected > r.cases / 10, `${r.format}: ${r.rejected} of ${r.cases} rejected`);
  }
  const findings = reports.flatMap((r) =>
    r.findings.map((f) =>
      `${r.format}: ${f.problem} (${f.count} cases; ` +
      `replay: deno task fuzz --seed ${SEED} --only ${r.format} --case ${f.index})\n` +
      `${f.input}\n${f.detail}`
    )
  );
  if (findings.length > 0) assert.fail(`${findings.length} findings:\n\n${findings.join("\n\n")}`);
});

Deno.test("fuzz: a run split across workers finds what one run finds", async () => {
  const whole = await runFuzz({ cases: 3_000, seed: SEED });
  const shares = await Promise.all(
    [0, 1].map((index) => runFuzz({ cases: 3_000, seed: SEED, shard: { index, count: 2 } })),
  );
  const strip = (reports: typeof whole) =>
    reports.map(({ ms: _, findings, ...r }) => ({
      ...r,
      findings: findings.map((f) => [f.problem, f.count]).sort(),
    }));
  assert.deepEqual(strip(mergeReports(shares)), strip(whole));
});
