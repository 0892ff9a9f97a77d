/**
 * Enforces the dependency rule: relay/, node/, client/ and web/ never import one
 * another, and shared/ imports none of them. Exits 1 listing every violation.
 *
 * Usage: deno run --allow-read scripts/check_imports.ts [ROOT]
 */
import { dirname, join, relative, resolve } from "node:path";

const ROLES = ["relay", "node", "client", "web"] as const;
const LAYERS = [...ROLES, "shared"] as const;

/** One forbidden import. */
export interface Violation {
  file: string;
  line: number;
  specifier: string;
  reason: string;
}

const IMPORT_RE =
  /(?:^|[\s;])(?:import|export)\s[^'"]*?from\s*["']([^"']+)["']|import\s*\(\s*["']([^"']+)["']\s*\)|^\s*import\s*["']([^"']+)["']/gm;

/** The top-level folder a path belongs to, or null. */
function layerOf(root: string, path: string): string | null {
  const top = relative(root, path).split(/[\\/]/)[0];
  return (LAYERS as readonly string[]).includes(top) ? top : null;
}

/** Finds every violation under `root`. */
export function findViolations(root: string): Violation[] {
  const out: Violation[] = [];
  for (const layer of LAYERS) {
    for (const file of walk(join(root, layer))) {
      const text = Deno.readTextFileSync(file);
      for (const m of text.matchAll(IMPORT_RE)) {
        const spec = m[1] ?? m[2] ?? m[3];
        if (!spec.startsWith(".")) continue;
        const target = layerOf(root, resolve(dirname(file), spec));
        if (target === null || target === layer) continue;
        const line = text.slice(0, m.index).split("\n").length;
        if (layer === "shared") {
          out.push({
            file: relative(root, file),
            line,
            specifier: spec,
            reason: `shared/ must not import ${target}/`,
          });
        } else if (target !== "shared") {
          out.push({
            file: relative(root, file),
            line,
            specifier: spec,
            reason: `${layer}/ must not import ${target}/`,
          });
        }
      }
    }
  }
  return out;
}

function* walk(dir: string): Generator<string> {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return;
  }
  for (const e of entries) {
    const path = join(dir, e.name);
    if (e.isDirectory) yield* walk(path);
    else if (/\.(ts|tsx|js|mjs)$/.test(e.name)) yield path;
  }
}

if (import.meta.main) {
  const root = resolve(Deno.args[0] ?? join(dirname(new URL(import.meta.url).pathname), ".."));
  const violations = findViolations(root);
  for (const v of violations) {
    console.error(`${v.file}:${v.line}: imports "${v.specifier}": ${v.reason}`);
  }
  if (violations.length > 0) Deno.exit(1);
  console.log(`check_imports: ok (${LAYERS.join(", ")})`);
}
