/**
 * `dist/unbroken-blake2b.js`: BLAKE2b's compression function in JavaScript, over
 * 32-bit halves of the 64-bit words, for where WebAssembly is refused (no
 * WebAssembly, or a Content-Security-Policy without `'wasm-unsafe-eval'`). The core
 * (`blake2b.ts`) loads it from beside itself only then, starting at module load (no
 * top-level `await`: the client awaits `ready()` before it connects); `dist/testing.js`
 * has it built in. It imports
 * nothing: the core hands it its state, the IV and the schedule.
 */

/** A function that compresses the block in `m` into `h`; `count` is the number of bytes hashed so
 * far including this block (under 2^53), `last` marks the final block. The 16
 * words of the working vector live in locals (32 halves), each round's eight G
 * steps written out. */
export function compressor(h: Int32Array, m: Int32Array, IV: Int32Array, SIGMA: Uint8Array): (count: number, last: boolean) => void {
  return (count: number, last: boolean): void => {
    let v0l = h[0], v0h = h[1];
    let v1l = h[2], v1h = h[3];
    let v2l = h[4], v2h = h[5];
    let v3l = h[6], v3h = h[7];
    let v4l = h[8], v4h = h[9];
    let v5l = h[10], v5h = h[11];
    let v6l = h[12], v6h = h[13];
    let v7l = h[14], v7h = h[15];
    let v8l = IV[0], v8h = IV[1];
    let v9l = IV[2], v9h = IV[3];
    let v10l = IV[4], v10h = IV[5];
    let v11l = IV[6], v11h = IV[7];
    let v12l = IV[8], v12h = IV[9];
    let v13l = IV[10], v13h = IV[11];
    let v14l = IV[12], v14h = IV[13];
    let v15l = IV[14], v15h = IV[15];
    v12l ^= count;
    v12h ^= count / 0x100000000;
    if (last) {
      v14l = ~v14l;
      v14h = ~v14h;
    }
    const s = SIGMA;
    let t: number, u: number, x: number, y: number;
    for (let r = 0; r < 192; r += 16) {
      // G(v0, v4, v8, v12)
      x = s[r + 0]; y = s[r + 1];
      t = (v0l >>> 0) + (v4l >>> 0) + (m[x] >>> 0); v0h = (v0h + v4h + m[x + 1] + ((t / 0x100000000) | 0)) | 0; v0l = t | 0;
      t = v12l ^ v0l; v12l = v12h ^ v0h; v12h = t;
      t = (v8l >>> 0) + (v12l >>> 0); v8h = (v8h + v12h + ((t / 0x100000000) | 0)) | 0; v8l = t | 0;
      t = v4l ^ v8l; u = v4h ^ v8h; v4l = (t >>> 24) | (u << 8); v4h = (u >>> 24) | (t << 8);
      t = (v0l >>> 0) + (v4l >>> 0) + (m[y] >>> 0); v0h = (v0h + v4h + m[y + 1] + ((t / 0x100000000) | 0)) | 0; v0l = t | 0;
      t = v12l ^ v0l; u = v12h ^ v0h; v12l = (t >>> 16) | (u << 16); v12h = (u >>> 16) | (t << 16);
      t = (v8l >>> 0) + (v12l >>> 0); v8h = (v8h + v12h + ((t / 0x100000000) | 0)) | 0; v8l = t | 0;
      t = v4l ^ v8l; u = v4h ^ v8h; v4l = (t << 1) | (u >>> 31); v4h = (u << 1) | (t >>> 31);
      // G(v1, v5, v9, v13)
      x = s[r + 2]; y = s[r + 3];
      t = (v1l >>> 0) + (v5l >>> 0) + (m[x] >>> 0); v1h = (v1h + v5h + m[x + 1] + ((t / 0x100000000) | 0)) | 0; v1l = t | 0;
      t = v13l ^ v1l; v13l = v13h ^ v1h; v13h = t;
      t = (v9l >>> 0) + (v13l >>> 0); v9h = (v9h + v13h + ((t / 0x100000000) | 0)) | 0; v9l = t | 0;
      t = v5l ^ v9l; u = v5h ^ v9h; v5l = (t >>> 24) | (u << 8); v5h = (u >>> 24) | (t << 8);
      t = (v1l >>> 0) + (v5l >>> 0) + (m[y] >>> 0); v1h = (v1h + v5h + m[y + 1] + ((t / 0x100000000) | 0)) | 0; v1l = t | 0;
      t = v13l ^ v1l; u = v13h ^ v1h; v13l = (t >>> 16) | (u << 16); v13h = (u >>> 16) | (t << 16);
      t = (v9l >>> 0) + (v13l >>> 0); v9h = (v9h + v13h + ((t / 0x100000000) | 0)) | 0; v9l = t | 0;
      t = v5l ^ v9l; u = v5h ^ v9h; v5l = (t << 1) | (u >>> 31); v5h = (u << 1) | (t >>> 31);
      // G(v2, v6, v10, v14)
      x = s[r + 4]; y = s[r + 5];
      t = (v2l >>> 0) + (v6l >>> 0) + (m[x] >>> 0); v2h = (v2h + v6h + m[x + 1] + ((t / 0x100000000) | 0)) | 0; v2l = t | 0;
      t = v14l ^ v2l; v14l = v14h ^ v2h; v14h = t;
      t = (v10l >>> 0) + (v14l >>> 0); v10h = (v10h + v14h + ((t / 0x100000000) | 0)) | 0; v10l = t | 0;
      t = v6l ^ v10l; u = v6h ^ v10h; v6l = (t >>> 24) | (u << 8); v6h = (u >>> 24) | (t << 8);
      t = (v2l >>> 0) + (v6l >>> 0) + (m[y] >>> 0); v2h = (v2h + v6h + m[y + 1] + ((t / 0x100000000) | 0)) | 0; v2l = t | 0;
      t = v14l ^ v2l; u = v14h ^ v2h; v14l = (t >>> 16) | (u << 16); v14h = (u >>> 16) | (t << 16);
      t = (v10l >>> 0) + (v14l >>> 0); v10h = (v10h + v14h + ((t / 0x100000000) | 0)) | 0; v10l = t | 0;
      t = v6l ^ v10l; u = v6h ^ v10h; v6l = (t << 1) | (u >>> 31); v6h = (u << 1) | (t >>> 31);
      // G(v3, v7, v11, v15)
      x = s[r + 6]; y = s[r + 7];
      t = (v3l >>> 0) + (v7l >>> 0) + (m[x] >>> 0); v3h = (v3h + v7h + m[x + 1] + ((t / 0x100000000) | 0)) | 0; v3l = t | 0;
      t = v15l ^ v3l; v15l = v15h ^ v3h; v15h = t;
      t = (v11l >>> 0) + (v15l >>> 0); v11h = (v11h + v15h + ((t / 0x100000000) | 0)) | 0; v11l = t | 0;
      t = v7l ^ v11l; u = v7h ^ v11h; v7l = (t >>> 24) | (u << 8); v7h = (u >>> 24) | (t << 8);
      t = (v3l >>> 0) + (v7l >>> 0) + (m[y] >>> 0); v3h = (v3h + v7h + m[y + 1] + ((t / 0x100000000) | 0)) | 0; v3l = t | 0;
      t = v15l ^ v3l; u = v15h ^ v3h; v15l = (t >>> 16) | (u << 16); v15h = (u >>> 16) | (t << 16);
      t = (v11l >>> 0) + (v15l >>> 0); v11h = (v11h + v15h + ((t / 0x100000000) | 0)) | 0; v11l = t | 0;
      t = v7l ^ v11l; u = v7h ^ v11h; v7l = (t << 1) | (u >>> 31); v7h = (u << 1) | (t >>> 31);
      // G(v0, v5, v10, v15)
      x = s[r + 8]; y = s[r + 9];
      t = (v0l >>> 0) + (v5l >>> 0) + (m[x] >>> 0); v0h = (v0h + v5h + m[x + 1] + ((t / 0x100000000) | 0)) | 0; v0l = t | 0;
      t = v15l ^ v0l; v15l = v15h ^ v0h; v15h = t;
      t = (v10l >>> 0) + (v15l >>> 0); v10h = (v10h + v15h + ((t / 0x100000000) | 0)) | 0; v10l = t | 0;
      t = v5l ^ v10l; u = v5h ^ v10h; v5l = (t >>> 24) | (u << 8); v5h = (u >>> 24) | (t << 8);
      t = (v0l >>> 0) + (v5l >>> 0) + (m[y] >>> 0); v0h = (v0h + v5h + m[y + 1] + ((t / 0x100000000) | 0)) | 0; v0l = t | 0;
      t = v15l ^ v0l; u = v15h ^ v0h; v15l = (t >>> 16) | (u << 16); v15h = (u >>> 16) | (t << 16);
      t = (v10l >>> 0) + (v15l >>> 0); v10h = (v10h + v15h + ((t / 0x100000000) | 0)) | 0; v10l = t | 0;
      t = v5l ^ v10l; u = v5h ^ v10h; v5l = (t << 1) | (u >>> 31); v5h = (u << 1) | (t >>> 31);
      // G(v1, v6, v11, v12)
      x = s[r + 10]; y = s[r + 11];
      t = (v1l >>> 0) + (v6l >>> 0) + (m[x] >>> 0); v1h = (v1h + v6h + m[x + 1] + ((t / 0x100000000) | 0)) | 0; v1l = t | 0;
      t = v12l ^ v1l; v12l = v12h ^ v1h; v12h = t;
      t = (v11l >>> 0) + (v12l >>> 0); v11h = (v11h + v12h + ((t / 0x100000000) | 0)) | 0; v11l = t | 0;
      t = v6l ^ v11l; u = v6h ^ v11h; v6l = (t >>> 24) | (u << 8); v6h = (u >>> 24) | (t << 8);
      t = (v1l >>> 0) + (v6l >>> 0) + (m[y] >>> 0); v1h = (v1h + v6h + m[y + 1] + ((t / 0x100000000) | 0)) | 0; v1l = t | 0;
      t = v12l ^ v1l; u = v12h ^ v1h; v12l = (t >>> 16) | (u << 16); v12h = (u >>> 16) | (t << 16);
      t = (v11l >>> 0) + (v12l >>> 0); v11h = (v11h + v12h + ((t / 0x100000000) | 0)) | 0; v11l = t | 0;
      t = v6l ^ v11l; u = v6h ^ v11h; v6l = (t << 1) | (u >>> 31); v6h = (u << 1) | (t >>> 31);
      // G(v2, v7, v8, v13)
      x = s[r + 12]; y = s[r + 13];
      t = (v2l >>> 0) + (v7l >>> 0) + (m[x] >>> 0); v2h = (v2h + v7h + m[x + 1] + ((t / 0x100000000) | 0)) | 0; v2l = t | 0;
      t = v13l ^ v2l; v13l = v13h ^ v2h; v13h = t;
      t = (v8l >>> 0) + (v13l >>> 0); v8h = (v8h + v13h + ((t / 0x100000000) | 0)) | 0; v8l = t | 0;
      t = v7l ^ v8l; u = v7h ^ v8h; v7l = (t >>> 24) | (u << 8); v7h = (u >>> 24) | (t << 8);
      t = (v2l >>> 0) + (v7l >>> 0) + (m[y] >>> 0); v2h = (v2h + v7h + m[y + 1] + ((t / 0x100000000) | 0)) | 0; v2l = t | 0;
      t = v13l ^ v2l; u = v13h ^ v2h; v13l = (t >>> 16) | (u << 16); v13h = (u >>> 16) | (t << 16);
      t = (v8l >>> 0) + (v13l >>> 0); v8h = (v8h + v13h + ((t / 0x100000000) | 0)) | 0; v8l = t | 0;
      t = v7l ^ v8l; u = v7h ^ v8h; v7l = (t << 1) | (u >>> 31); v7h = (u << 1) | (t >>> 31);
      // G(v3, v4, v9, v14)
      x = s[r + 14]; y = s[r + 15];
      t = (v3l >>> 0) + (v4l >>> 0) + (m[x] >>> 0); v3h = (v3h + v4h + m[x + 1] + ((t / 0x100000000) | 0)) | 0; v3l = t | 0;
      t = v14l ^ v3l; v14l = v14h ^ v3h; v14h = t;
      t = (v9l >>> 0) + (v14l >>> 0); v9h = (v9h + v14h + ((t / 0x100000000) | 0)) | 0; v9l = t | 0;
      t = v4l ^ v9l; u = v4h ^ v9h; v4l = (t >>> 24) | (u << 8); v4h = (u >>> 24) | (t << 8);
      t = (v3l >>> 0) + (v4l >>> 0) + (m[y] >>> 0); v3h = (v3h + v4h + m[y + 1] + ((t / 0x100000000) | 0)) | 0; v3l = t | 0;
      t = v14l ^ v3l; u = v14h ^ v3h; v14l = (t >>> 16) | (u << 16); v14h = (u >>> 16) | (t << 16);
      t = (v9l >>> 0) + (v14l >>> 0); v9h = (v9h + v14h + ((t / 0x100000000) | 0)) | 0; v9l = t | 0;
      t = v4l ^ v9l; u = v4h ^ v9h; v4l = (t << 1) | (u >>> 31); v4h = (u << 1) | (t >>> 31);
    }
    h[0] ^= v0l ^ v8l;
    h[1] ^= v0h ^ v8h;
    h[2] ^= v1l ^ v9l;
    h[3] ^= v1h ^ v9h;
    h[4] ^= v2l ^ v10l;
    h[5] ^= v2h ^ v10h;
    h[6] ^= v3l ^ v11l;
    h[7] ^= v3h ^ v11h;
    h[8] ^= v4l ^ v12l;
    h[9] ^= v4h ^ v12h;
    h[10] ^= v5l ^ v13l;
    h[11] ^= v5h ^ v13h;
    h[12] ^= v6l ^ v14l;
    h[13] ^= v6h ^ v14h;
    h[14] ^= v7l ^ v15l;
    h[15] ^= v7h ^ v15h;
  };
}
