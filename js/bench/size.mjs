// The page bundle's size (after `npm run build`): what a page loads first (the core,
// dist/unbroken.js, and whatever it imports statically) and the chunks it loads on
// demand (its `import("./x.js")`: when, below), minified and gzip -9; then, for each
// file, the minified bytes of each source module in it (from its source map) and what
// gzip -9 of the file loses without them.
// `node bench/size.mjs [dist/unbroken.js …]`  (`--json`: the summary only, as JSON)
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { gzipSync } from "node:zlib";

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const gz = (s) => gzipSync(Buffer.from(s), { level: 9 }).length;

function owners(code, map) {
  // the source index of every character of the (one-line-per-mapping) output
  const lines = code.split("\n");
  const ml = map.mappings.split(";");
  const out = [];
  let src = 0;
  for (let li = 0; li < lines.length; li++) {
    const marks = [];
    let col = 0;
    for (const seg of (ml[li] ?? "").split(",").filter(Boolean)) {
      const vals = [];
      let v = 0;
      let shift = 0;
      for (const ch of seg) {
        let d = B64.indexOf(ch);
        const more = d & 32;
        d &= 31;
        v += d << shift;
        if (more) shift += 5;
        else {
          vals.push(v & 1 ? -(v >> 1) : v >> 1);
          v = 0;
          shift = 0;
        }
      }
      col += vals[0];
      if (vals.length > 1) src += vals[1];
      marks.push([col, vals.length > 1 ? src : -1]);
    }
    const own = new Int32Array(lines[li].length + 1).fill(-1);
    let cur = -1;
    let mi = 0;
    for (let c = 0; c <= lines[li].length; c++) {
      while (mi < marks.length && marks[mi][0] <= c) {
        if (marks[mi][1] >= 0) cur = marks[mi][1];
        mi++;
      }
      own[c] = cur;
    }
    out.push(own);
  }
  return out;
}

/** When the core loads each on-demand chunk (a chunk not listed here fails the run:
 * say when it loads before counting it as on demand). */
const WHEN = {
  "unbroken-v1.js": "a server chose protocol v1 (before that connection's hello)",
  "unbroken-blake2b.js": "WebAssembly is refused (none, or a CSP without 'wasm-unsafe-eval'), from module load (a Client awaits it before connecting)",
};

/** The first load of `entry` (it and its static imports, transitively) and its
 * on-demand chunks (dynamic imports of any of those). */
export function layout(entry) {
  const dir = dirname(entry);
  const first = [];
  const lazy = new Set();
  const visit = (file) => {
    if (first.includes(file)) return;
    first.push(file);
    const code = readFileSync(join(dir, file), "utf8");
    for (const m of code.matchAll(/(?:^|[;}\s])import\s*(?:[\w{}*\s,$]+from\s*)?["'](\.\/[^"']+)["']|\bfrom\s*["'](\.\/[^"']+)["']/g)) visit((m[1] ?? m[2]).slice(2));
    for (const m of code.matchAll(/\bimport\(\s*["'](\.\/[^"']+)["']\s*\)/g)) lazy.add(m[1].slice(2));
  };
  visit(entry.slice(dir.length + 1));
  const size = (file) => {
    const code = readFileSync(join(dir, file));
    return { file, min: code.length, gzip: gz(code) };
  };
  return { first: first.map(size), onDemand: [...lazy].filter((f) => !first.includes(f)).map((f) => ({ ...size(f), when: WHEN[f] })) };
}

const args = process.argv.slice(2).filter((a) => a !== "--json");
const files = args.length > 0 ? args : ["dist/unbroken.js", ...Object.keys(WHEN).map((f) => `dist/${f}`).filter(existsSync)];
const kb = (n) => `${(n / 1000).toFixed(1)} kB`;
const summary = layout(files[0]);
for (const c of summary.onDemand) if (c.when === undefined) throw new Error(`${c.file}: an on-demand chunk with no "when" in bench/size.mjs`);
if (process.argv.includes("--json")) {
  console.log(JSON.stringify(summary, null, 2));
  process.exit(0);
}
const firstGzip = summary.first.reduce((a, f) => a + f.gzip, 0);
console.log(`first load (${files[0]}): ${summary.first.map((f) => f.file).join(" + ")}: ${kb(summary.first.reduce((a, f) => a + f.min, 0))} minified, ${kb(firstGzip)} gzip -9`);
for (const c of summary.onDemand) console.log(`  on demand: ${c.file}: ${kb(c.min)} minified, ${kb(c.gzip)} gzip -9; loaded when ${c.when}`);
console.log("");

for (const file of files) {
  const code = readFileSync(file, "utf8");
  const map = JSON.parse(readFileSync(`${file}.map`, "utf8"));
  const own = owners(code, map);
  const total = gz(code);
  console.log(`${file}: ${code.length} B minified, ${total} B gzip -9`);
  const rows = [];
  for (let s = 0; s < map.sources.length; s++) {
    let kept = "";
    let bytes = 0;
    const lines = code.split("\n");
    for (let li = 0; li < lines.length; li++) {
      const line = lines[li];
      let run = "";
      for (let c = 0; c < line.length; c++) {
        if (own[li][c] === s) bytes++;
        else run += line[c];
      }
      kept += run + "\n";
    }
    rows.push([map.sources[s].replace(/^.*\/src\//, "src/"), bytes, total - gz(kept)]);
  }
  rows.sort((a, b) => b[2] - a[2]);
  console.log("  module                 minified  gzip (removal)");
  for (const [name, b, g] of rows) console.log(`  ${name.padEnd(22)} ${String(b).padStart(8)} ${String(g).padStart(7)}`);
}
