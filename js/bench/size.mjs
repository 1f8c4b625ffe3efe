// Bytes of each source module in a built bundle (after `npm run build`): minified
// bytes it contributes (from the bundle's source map) and what gzip -9 of the bundle
// loses without them. `node bench/size.mjs [dist/unbroken.js …]`
import { readFileSync } from "node:fs";
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

for (const file of process.argv.length > 2 ? process.argv.slice(2) : ["dist/unbroken.js"]) {
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
