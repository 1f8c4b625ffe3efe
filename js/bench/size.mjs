// The page bundle's size (after `npm run build`): what a page loads first (the core,
// dist/unbroken.js, and whatever it imports statically) and the chunks it loads on
// demand (its `import("./x.js")`: when, below), minified and gzip -9; then, for each
// file, the minified bytes of each source module in it (from its source map) and what
// gzip -9 of the file loses without them.
// Then an app's bundle (esbuild, minified, as an app's bundler makes it) of the
// minimal app (import Client, start, iterate the events, await the answer) against
// the core (`unbroken-client/core`, dist/core.js) and against the full entry
// (`unbroken-client`, dist/unbroken.js), and the core app with each opt-in feature.
// `node bench/size.mjs [dist/unbroken.js …]`  (`--json`: the summary only, as JSON;
// `--functions`: also, per module, what gzip -9 of the file loses without each of its
// top-level declarations and class members, the biggest first)
import { build } from "esbuild";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { gzipSync } from "node:zlib";

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const gz = (s) => gzipSync(Buffer.from(s), { level: 9 }).length;

function owners(code, map, lineOf = null) {
  // the source index of every character of the (one-line-per-mapping) output (and,
  // given `lineOf`, an array filled the same way, the source line of each)
  const lines = code.split("\n");
  const ml = map.mappings.split(";");
  const out = [];
  let src = 0;
  let srcLine = 0;
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
      if (vals.length > 1) {
        src += vals[1];
        srcLine += vals[2];
      }
      marks.push([col, vals.length > 1 ? src : -1, srcLine]);
    }
    const own = new Int32Array(lines[li].length + 1).fill(-1);
    const at = new Int32Array(lines[li].length + 1).fill(-1);
    let cur = -1;
    let curLine = -1;
    let mi = 0;
    for (let c = 0; c <= lines[li].length; c++) {
      while (mi < marks.length && marks[mi][0] <= c) {
        if (marks[mi][1] >= 0) [, cur, curLine] = marks[mi];
        mi++;
      }
      own[c] = cur;
      at[c] = curLine;
    }
    out.push(own);
    lineOf?.push(at);
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

/** The top-level declarations and class members of a TypeScript source, each as
 * [name, first line, last line] (0-based; a declaration runs to the next one). */
function declarations(text) {
  const lines = text.split("\n");
  const starts = [];
  let inClass = null; // the class whose body this is (its members are counted apart)
  lines.forEach((l, i) => {
    const top = /^(?:export )?(?:default )?(?:abstract )?(?:async )?(?:function\*?|class|const|let|var|enum|interface|type) +([\w$]+)/.exec(l);
    const member = /^  (?:static |private |protected |readonly |async |get |set |\*)*([\w$]+|\[[\w.]+\])\s*[(<=:]/.exec(l);
    if (top) {
      starts.push([top[1], i]);
      inClass = /\bclass /.test(l) && !/\}\s*;?\s*$/.test(l) ? top[1] : null;
    } else if (inClass !== null && member) starts.push([`${inClass}.${member[1]}`, i]);
    else if (/^\}/.test(l)) inClass = null;
  });
  return starts.map(([name, a], k) => [name, a, k + 1 < starts.length ? starts[k + 1][1] - 1 : lines.length - 1]);
}

/** The minimal app: import `Client` from `from`, start, iterate, await the answer
 * (`extra`: more of the app, e.g. an opt-in feature used). */
const appOf = (from, imports = "Client", extra = "", options = "") => `import { ${imports} } from ${JSON.stringify(from)};
const client = new Client("wss://example.com/ws", { token: () => "t"${options} });
const stream = await client.start("chat", { q: "hi" });
for await (const ev of stream) if (ev.type === "text_delta") document.body.append(ev.text);
const answer = await stream.wait();
document.body.append(answer.text, answer.digest);
${extra}`;

/** An app's bundle of `source` (the way an app's bundler makes it: esbuild,
 * minified, tree-shaken; the on-demand chunks left as chunks): min and gzip -9. */
export async function appSize(source) {
  const r = await build({
    stdin: { contents: source, resolveDir: process.cwd(), loader: "js" },
    bundle: true, format: "esm", platform: "neutral", target: ["es2022"], minify: true, write: false, logLevel: "error",
    external: ["./unbroken-v1.js", "./unbroken-blake2b.js"],
  });
  const code = r.outputFiles[0].contents;
  return { min: code.length, gzip: gz(code) };
}

/** The minimal app against the core and against the full entry, and the core app
 * with each opt-in feature: [name, {min, gzip}] each. */
export async function apps(dir = "dist") {
  const core = resolve(dir, "core.js");
  const full = resolve(dir, "unbroken.js");
  const cases = [
    ["core: the minimal app on unbroken-client/core", appOf(core)],
    ["full: the same app on unbroken-client", appOf(full)],
    ["core + TokenRefresh", appOf(core, "Client, TokenRefresh", "", ", plugins: [TokenRefresh]")],
    ["core + Zlib", appOf(core, "Client, Zlib", "", ", plugins: [Zlib]")],
    ["core + StreamListing, streams()", appOf(core, "Client, StreamListing, streams", "console.log(await streams(client));", ", plugins: [StreamListing]")],
    ["core + join/read", appOf(core, "Client, read", 'console.log(await read(client, "s"));')],
    ["core + connectionEvents()", appOf(core, "Client, connectionEvents", "for await (const e of connectionEvents(client)) console.log(e);")],
    ["core + all of the above", appOf(core, "Client, TokenRefresh, Zlib, StreamListing, streams, read, connectionEvents", 'console.log(await streams(client), await read(client, "s")); for await (const e of connectionEvents(client)) console.log(e);', ", plugins: [TokenRefresh, Zlib, StreamListing]")],
  ];
  const out = [];
  for (const [name, source] of cases) out.push([name, await appSize(source)]);
  return out;
}

const args = process.argv.slice(2).filter((a) => !a.startsWith("--"));
const files = args.length > 0 ? args : ["dist/unbroken.js", ...Object.keys(WHEN).map((f) => `dist/${f}`).filter(existsSync)];
const kb = (n) => `${(n / 1000).toFixed(1)} kB`;
const summary = layout(files[0]);
for (const c of summary.onDemand) if (c.when === undefined) throw new Error(`${c.file}: an on-demand chunk with no "when" in bench/size.mjs`);
const appSizes = existsSync("dist/core.js") ? await apps() : [];
if (process.argv.includes("--json")) {
  console.log(JSON.stringify({ ...summary, apps: Object.fromEntries(appSizes) }, null, 2));
  process.exit(0);
}
const firstGzip = summary.first.reduce((a, f) => a + f.gzip, 0);
console.log(`first load (${files[0]}): ${summary.first.map((f) => f.file).join(" + ")}: ${kb(summary.first.reduce((a, f) => a + f.min, 0))} minified, ${kb(firstGzip)} gzip -9`);
for (const c of summary.onDemand) console.log(`  on demand: ${c.file}: ${kb(c.min)} minified, ${kb(c.gzip)} gzip -9; loaded when ${c.when}`);
console.log("");
if (appSizes.length > 0) {
  console.log("an app's bundle (esbuild --bundle --minify; import Client, start, iterate, await the answer), minified / gzip -9:");
  const [, c] = appSizes[0];
  for (const [name, a] of appSizes) console.log(`  ${name.padEnd(48)} ${String(a.min).padStart(6)} B / ${String(a.gzip).padStart(6)} B${a === c ? "" : ` (${a.gzip >= c.gzip ? "+" : ""}${a.gzip - c.gzip} B gzip)`}`);
  console.log("");
}

for (const file of files) {
  const code = readFileSync(file, "utf8");
  const map = JSON.parse(readFileSync(`${file}.map`, "utf8"));
  const lineOf = [];
  const own = owners(code, map, lineOf);
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
  if (!process.argv.includes("--functions")) continue;
  // each declaration's share: the file without the characters mapped to its lines
  const lines = code.split("\n");
  for (const [name] of rows) {
    const s = map.sources.findIndex((x) => x.replace(/^.*\/src\//, "src/") === name);
    const source = map.sourcesContent?.[s] ?? readFileSync(join(dirname(file), map.sources[s]), "utf8");
    const decls = [];
    for (const [decl, a, z] of declarations(source)) {
      let kept = "";
      let bytes = 0;
      for (let li = 0; li < lines.length; li++) {
        for (let c = 0; c < lines[li].length; c++) {
          if (own[li][c] === s && lineOf[li][c] >= a && lineOf[li][c] <= z) bytes++;
          else kept += lines[li][c];
        }
        kept += "\n";
      }
      if (bytes > 0) decls.push([decl, bytes, total - gz(kept)]);
    }
    decls.sort((x, y) => y[2] - x[2]);
    console.log(`    ${name}: ${decls.map(([d, b, g]) => `${d} ${b}/${g}`).join(", ")}`);
  }
}
