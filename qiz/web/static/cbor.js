// A small CBOR reader (RFC 8949: what qiz.wire writes), enough to read an attestation file in
// the page: the job's spec (kind, parameters, submitter) and its results (a sweep's landscape).
// It only reads what the node already verified and served; it checks no signature itself.
"use strict";

export function decode(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const text = new TextDecoder();

  function length(info) {
    if (info < 24) return info;
    if (info === 24) { at += 1; return view.getUint8(at - 1); }
    if (info === 25) { at += 2; return view.getUint16(at - 2); }
    if (info === 26) { at += 4; return view.getUint32(at - 4); }
    if (info === 27) { at += 8; return Number(view.getBigUint64(at - 8)); }
    throw new Error("CBOR: indefinite lengths are not used by qiz");
  }

  function half(bits) {
    const exp = (bits >> 10) & 0x1f, frac = bits & 0x3ff, sign = bits & 0x8000 ? -1 : 1;
    if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
    if (exp === 31) return frac ? NaN : sign * Infinity;
    return sign * 2 ** (exp - 15) * (1 + frac / 1024);
  }

  function item() {
    const head = view.getUint8(at++);
    const major = head >> 5, info = head & 0x1f;
    if (major === 7) {
      if (info === 20) return false;
      if (info === 21) return true;
      if (info === 22 || info === 23) return null;
      if (info === 25) { at += 2; return half(view.getUint16(at - 2)); }
      if (info === 26) { at += 4; return view.getFloat32(at - 4); }
      if (info === 27) { at += 8; return view.getFloat64(at - 8); }
      throw new Error("CBOR: unknown simple value " + info);
    }
    const n = length(info);
    switch (major) {
      case 0: return n;
      case 1: return -1 - n;
      case 2: { const out = bytes.subarray(at, at + n); at += n; return out; }
      case 3: { const out = text.decode(bytes.subarray(at, at + n)); at += n; return out; }
      case 4: { const out = []; for (let i = 0; i < n; i++) out.push(item()); return out; }
      case 5: { const out = {}; for (let i = 0; i < n; i++) { const k = item(); out[k] = item(); } return out; }
      default: return item();  // a tag: its content
    }
  }

  return item();
}

export function fromBase64(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

export const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

// An attestation file (base64) as {spec, results, issued, coordinatorKey, workers, tests}.
export function readAttestation(base64) {
  const file = decode(fromBase64(base64));
  const body = decode(file.attestation.body);
  const signed = decode(body.spec);
  const spec = decode(signed.body);
  return {
    spec,
    results: file.results,
    issued: body.issued,
    coordinatorKey: body.coordinator,
    tests: (body.tasks || []).map((t) => t.test),
  };
}
