// toonforge playground: the HMAC-SHA256 signature of the API, computed in the browser.
// x-signature = hex(HMAC-SHA256(key = API key, message = API secret + nonce)).
"use strict";

(() => {
  // WebCrypto where the page is a secure context (https, localhost, 127.0.0.1); elsewhere
  // (plain http on a LAN address, where browsers hide crypto.subtle) the same HMAC in script.

  const encoder = new TextEncoder();

  function toHex(bytes) {
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function hmacHex(key, message) {
    if (window.crypto && window.crypto.subtle) {
      const k = await crypto.subtle.importKey(
        "raw", encoder.encode(key), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
      const sig = await crypto.subtle.sign("HMAC", k, encoder.encode(message));
      return toHex(new Uint8Array(sig));
    }
    return hmacHexScript(key, message);
  }

  // SHA-256 (FIPS 180-4) for the fallback; constants from the primes' roots, as the
  // standard defines them.
  const SHA_K = [];
  const SHA_H = [];
  (function initSha() {
    let n = 2;
    const isPrime = (x) => {
      for (let d = 2; d * d <= x; d++) if (x % d === 0) return false;
      return true;
    };
    const frac = (x) => ((x - Math.floor(x)) * 2 ** 32) >>> 0;
    while (SHA_K.length < 64) {
      if (isPrime(n)) {
        if (SHA_H.length < 8) SHA_H.push(frac(Math.sqrt(n)));
        SHA_K.push(frac(Math.cbrt(n)));
      }
      n++;
    }
  })();

  function sha256(bytes) {
    const bitLength = bytes.length * 8;
    const padded = new Uint8Array(((bytes.length + 9 + 63) >> 6) << 6);
    padded.set(bytes);
    padded[bytes.length] = 0x80;
    const view = new DataView(padded.buffer);
    view.setUint32(padded.length - 8, Math.floor(bitLength / 2 ** 32));
    view.setUint32(padded.length - 4, bitLength >>> 0);
    const h = SHA_H.slice();
    const w = new Uint32Array(64);
    const rotr = (x, r) => (x >>> r) | (x << (32 - r));
    for (let off = 0; off < padded.length; off += 64) {
      for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + 4 * i);
      for (let i = 16; i < 64; i++) {
        const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
      }
      let [a, b, c, d, e, f, g, hh] = h;
      for (let i = 0; i < 64; i++) {
        const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) +
          SHA_K[i] + w[i]) >>> 0;
        const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
        hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
      }
      [a, b, c, d, e, f, g, hh].forEach((v, i) => { h[i] = (h[i] + v) >>> 0; });
    }
    const out = new Uint8Array(32);
    const outView = new DataView(out.buffer);
    h.forEach((v, i) => outView.setUint32(4 * i, v));
    return out;
  }

  function hmacHexScript(key, message) {
    let k = encoder.encode(key);
    if (k.length > 64) k = sha256(k);
    const block = new Uint8Array(64);
    block.set(k);
    const inner = new Uint8Array(64 + encoder.encode(message).length);
    inner.set(block.map((b) => b ^ 0x36));
    inner.set(encoder.encode(message), 64);
    const outer = new Uint8Array(64 + 32);
    outer.set(block.map((b) => b ^ 0x5c));
    outer.set(sha256(inner), 64);
    return toHex(sha256(outer));
  }

  window.toonforgeSign = { hmacHex, hmacHexScript };
})();
