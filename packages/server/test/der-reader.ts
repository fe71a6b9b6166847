/**
 * A strict DER reader for the tests only: it refuses non-minimal lengths, indefinite lengths and trailing
 * bytes, so writing then reading proves the writer produced DER and not merely BER.
 */
export interface DerNode {
  tag: number;
  /** Contents octets. */
  value: Buffer;
  /** Children of a constructed value (tag bit 0x20). */
  children?: DerNode[];
}

/** Tag, length and the offset the contents start at. */
export function readHeader(bytes: Buffer, at = 0): { tag: number; length: number; start: number } {
  if (at + 2 > bytes.length) throw new Error(`truncated header at ${at}`);
  const tag = bytes[at]!;
  const first = bytes[at + 1]!;
  if (first < 0x80) return { tag, length: first, start: at + 2 };
  const count = first & 0x7f;
  if (count === 0) throw new Error('indefinite length is BER, not DER');
  if (count > 6 || at + 2 + count > bytes.length) throw new Error(`bad length-of-length ${count} at ${at}`);
  let length = 0;
  for (let i = 0; i < count; i++) length = length * 256 + bytes[at + 2 + i]!;
  if (bytes[at + 2] === 0) throw new Error(`length at ${at} has a leading zero octet`);
  if (length < 0x80) throw new Error(`length ${length} at ${at} should use the short form`);
  return { tag, length, start: at + 2 + count };
}

function readAt(bytes: Buffer, at: number): { node: DerNode; end: number } {
  const { tag, length, start } = readHeader(bytes, at);
  const end = start + length;
  if (end > bytes.length) throw new Error(`value at ${at} runs ${end - bytes.length} bytes past the end`);
  const value = bytes.subarray(start, end);
  const node: DerNode = { tag, value };
  if (tag & 0x20) {
    node.children = [];
    for (let p = 0; p < value.length;) {
      const child = readAt(value, p);
      node.children.push(child.node);
      p = child.end;
    }
  }
  return { node, end };
}

/** One complete value; anything after it is an error. */
export function readDer(bytes: Buffer): DerNode {
  const { node, end } = readAt(bytes, 0);
  if (end !== bytes.length) throw new Error(`${bytes.length - end} trailing bytes`);
  return node;
}

/** The child at `path` (indices), for digging into a certificate. */
export function child(node: DerNode, ...path: number[]): DerNode {
  let here = node;
  for (const i of path) {
    const next = here.children?.[i];
    if (!next) throw new Error(`no child ${i} under tag 0x${here.tag.toString(16)}`);
    here = next;
  }
  return here;
}

/** Dotted text of an OBJECT IDENTIFIER's contents. */
export function oidText(value: Buffer): string {
  const arcs: number[] = [];
  let arc = 0;
  for (const byte of value) {
    arc = arc * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) { arcs.push(arc); arc = 0; }
  }
  const first = Math.min(Math.floor(arcs[0]! / 40), 2);
  return [first, arcs[0]! - first * 40, ...arcs.slice(1)].join('.');
}
