/**
 * Parses a duration: plain seconds (`30`, `1.5`) or with a unit (`500ms`,
 * `30s`, `5m`, `2h`, `1d`). Returns milliseconds; throws RangeError otherwise.
 */
export function parseDuration(input: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)?$/.exec(input.trim());
  if (!m) throw new RangeError(`Invalid duration "${input}"; use e.g. 30, 30s, 5m, 2h`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? "s"]!;
  return Math.round(Number(m[1]) * unit);
}
