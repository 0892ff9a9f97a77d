/** Counters and gauges rendered in the Prometheus text format. */
export class Metrics {
  #counters = new Map<string, Map<string, number>>();
  #gauges = new Map<string, () => number>();
  #help = new Map<string, string>();

  /** Adds `n` to counter `name` with `labels`. */
  inc(name: string, labels: Record<string, string> = {}, n = 1): void {
    let series = this.#counters.get(name);
    if (!series) this.#counters.set(name, series = new Map());
    let key = "";
    for (const k in labels) {
      const v = labels[k];
      key += `${key ? "," : ""}${k}="${PLAIN.test(v) ? v : escape(v)}"`;
    }
    series.set(key, (series.get(key) ?? 0) + n);
  }

  /** Registers a gauge read at scrape time. */
  gauge(name: string, help: string, read: () => number): void {
    this.#gauges.set(name, read);
    this.#help.set(name, help);
  }

  /** Describes a counter. */
  describe(name: string, help: string): void {
    this.#help.set(name, help);
  }

  /** The exposition text. */
  render(): string {
    const lines: string[] = [];
    for (const [name, read] of this.#gauges) {
      lines.push(
        `# HELP ${name} ${this.#help.get(name)}`,
        `# TYPE ${name} gauge`,
        `${name} ${read()}`,
      );
    }
    for (const [name, series] of this.#counters) {
      if (this.#help.has(name)) lines.push(`# HELP ${name} ${this.#help.get(name)}`);
      lines.push(`# TYPE ${name} counter`);
      for (const [labels, v] of series) lines.push(`${name}${labels ? `{${labels}}` : ""} ${v}`);
    }
    return lines.join("\n") + "\n";
  }
}

/** Label values that need no escaping (the common case: routes, methods, codes). */
const PLAIN = /^[^\\"\n]*$/;

function escape(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}
