/**
 * The mnedc wire protocol, version 1. Everything a client and a server say to each other is here.
 *
 * TRANSPORT
 *   One persistent TLS 1.3 connection per device over TCP; nothing else is accepted. The client pins the
 *   server's self-signed certificate and proves the join secret and its device key inside HELLO.auth,
 *   bound to the TLS session (auth.ts). Inside TLS the stream is a sequence of frames, nothing else.
 *
 * FRAME
 *    0        1        2        3
 *   +--------+--------+--------+--------+------------ - - -
 *   |  type  |   payload length (u24 BE) | payload
 *   +--------+--------+--------+--------+------------ - - -
 *   The header is one big-endian u32: (type << 24) | length. A length above MAX_PAYLOAD, an unknown type
 *   or a payload of the wrong size for its type is a protocol error: the receiver closes the stream.
 *
 * FRAME TYPES                    direction  payload
 *   0x01 HELLO                   c → s      JSON Hello       — must be the client's first frame
 *   0x02 WELCOME                 s → c      JSON Welcome     — the lease; the session is established
 *   0x03 REJECT                  s → c      JSON Reject      — then the server closes the stream
 *   0x04 PEERS                   s → c      JSON PeerUpdate  — discovery: snapshot chunks and deltas
 *   0x05 GOODBYE                 both       JSON Goodbye     — the sender is closing on purpose
 *   0x06 PEERS_BIN               s → c      binary PEERS     — the same, compact; only to a client that
 *                                           negotiated "peers-bin" (see DISCOVERY)
 *   0x07 ENDORSE                 s → c      JSON Endorsement — a relay not holding the pinned certificate,
 *                                           first, unasked (see CLUSTER)
 *   0x08 MESH_HELLO              r → r      JSON MeshHello   — a relay dialing another: its first frame
 *                                           (mesh.ts)
 *   0x09 MESH_WELCOME            r → r      JSON MeshWelcome — the relay dialed accepts; the link is open
 *   0x10 DATA                    both       one raw IPv4 or IPv6 packet (20 .. MAX_PACKET bytes), never
 *                                           re-encoded (IPv6: see IPV6)
 *   0x11 DATA_GSO                both       virtio_net_hdr + IP packet (30 .. MAX_PACKET + 10 bytes); only
 *                                           between peers that negotiated "gso" (see OFFLOADS)
 *   0x20 PING                    both       8 opaque bytes
 *   0x21 PONG                    both       the 8 bytes of the PING it answers
 *   JSON payloads are UTF-8 objects; unknown fields are ignored, so fields can be added without a new
 *   version. The exact fields and their limits are the validators in messages.ts.
 *
 * HANDSHAKE
 *   client                                   server
 *     HELLO {version, deviceId, hostname,  →
 *            underlay[], previousIp?, auth?}
 *                                          ←  WELCOME {ip, prefix, mtu, serverIp, keepaliveMs, ...}
 *                                          ←  PEERS {reset: true, more: true, up: [...]}  (snapshot, in
 *                                          ←  PEERS {reset: false, more: false, up: [...]}  chunks)
 *     DATA / PING / PONG                   ↔  DATA / PING / PONG / PEERS deltas / GOODBYE
 *   or                                     ←  REJECT {code, reason}  and close
 *   The snapshot may come up to a coalescing window (~100 ms) after WELCOME; DATA may flow before it.
 *   Deltas are PEERS {reset: false, more: false, up: [...], down: [deviceId...]}.
 *   The server allows HANDSHAKE_TIMEOUT_MS from TCP accept to the HELLO (TLS handshake included). Any frame
 *   other than HELLO before WELCOME, or a second HELLO, is a protocol error. A HELLO whose `auth` does not
 *   prove the join secret, or whose device key is not the one bound to its device ID, gets REJECT "auth"
 *   and takes no lease.
 *
 * OFFLOADS (capability "gso")
 *   A client whose TUN has offloads lists "gso" in HELLO.capabilities; a server that takes them lists it in
 *   WELCOME.capabilities (absent = none: an older server). Only when both did may either side send
 *   DATA_GSO, and the server sends DATA_GSO only to sessions that did; everyone else gets DATA. A peer
 *   that receives DATA_GSO without having negotiated it treats it as a protocol error.
 *    0        1        2 .. 3     4 .. 5     6 .. 7      8 .. 9       10
 *   +--------+--------+----------+----------+-----------+------------+----------------------- - -
 *   | flags  |gso_type| hdr_len  | gso_size |csum_start |csum_offset | IPv4 packet (20 .. 65535)
 *   +--------+--------+----------+----------+-----------+------------+----------------------- - -
 *   struct virtio_net_hdr with little-endian u16 fields (virtio 1.0), as the TUN device reads and writes
 *   it (gso.ts has the rules). flags: NEEDS_CSUM 1 (the L4 checksum field holds only the pseudo-header
 *   sum; csum_start/csum_offset say where it goes), DATA_VALID 2. gso_type: NONE 0, TCPV4 1 (IPv4 only),
 *   TCPV6 4 (IPv6 only, no extension headers), UDP_L4 5, ECN 0x80 with TCP. With a gso_type the packet is
 *   a super-packet of up to 65535 bytes whose payload goes out in gso_size pieces, every segment getting
 *   copies of the IP and TCP/UDP headers. A payload
 *   is at most MAX_PACKET + VNET_HDR_BYTES = 65545 bytes, inside MAX_PAYLOAD. The server checks every
 *   DATA_GSO (checkOffloadPacket) and drops what does not hold as malformed; for a receiver without "gso"
 *   it segments and completes checksums itself (toDataFrames), so mixed fleets interoperate.
 *
 * DISCOVERY (HELLO.discovery, capability "peers-bin")
 *   HELLO.discovery asks for the peer push: "full" (the peer list: snapshot, then deltas), "names" (no list:
 *   the device resolves peers by name on the overlay), "off" (nothing), or "auto" (full while the relay's
 *   network has at most [server] discovery_full_max devices, names above). Absent (older clients) = full.
 *   WELCOME.discovery says what was granted (absent from older relays, which push to everyone). Only a full
 *   device gets PEERS or PEERS_BIN. The relay coalesces changes for a window (~100 ms) and builds each
 *   window's snapshot and delta once, queueing the same bytes to every receiver; a receiver whose queue is
 *   congested gets no discovery until it drains, then a fresh snapshot, so discovery never crowds out DATA.
 *   A client listing "peers-bin" in HELLO.capabilities, whose WELCOME.capabilities lists it back, receives
 *   PEERS_BIN instead of PEERS; everyone else gets JSON PEERS. PEERS_BIN payload (all integers big-endian,
 *   strings ASCII with a u8 length in front, every length checked against the frame; at most
 *   MAX_CONTROL_PAYLOAD, the relay sends ≤ 32 KiB chunks):
 *     flags u8 (1 reset, 2 more; others 0) | up count u16 | down count u16 | up entries | down entries
 *     up entry:   ip u32 | since u48 (epoch ms) | deviceId | hostname | underlay count u8 | addresses
 *     down entry: deviceId
 *   The fields and limits are those of PeerUpdate (messages.ts); no bytes may follow the last entry.
 *
 * LIVENESS
 *   The client sends PING every keepaliveMs (announced in WELCOME); each side answers PING with PONG. The
 *   relay pings a device only when it heard nothing from it in a round (and every 8th round, to time the
 *   round trip), so a client must ping on its own. Any frame received proves the peer alive; a side that
 *   hears nothing for deadAfterMs closes the stream.
 *
 * CLUSTER (endorsement.ts)
 *   A relay whose certificate is not the one the join string pins sends ENDORSE as its first frame: the
 *   network certificate (whose fingerprint is the pinned one), its relay ID, an expiry, and the network
 *   key's signature over its own public key. The client checks it against the certificate the TLS session
 *   proved before it sends HELLO, and refuses the relay otherwise. A relay holding the pinned certificate
 *   sends none; a client ignores an ENDORSE it did not need.
 *   Relays of one cluster link to each other on the same port: MESH_HELLO instead of HELLO (mesh.ts).
 *   A cluster's relay lists the relays (host:port) in WELCOME.relays: where the device may go when this
 *   one is lost (the client tries them after those it is configured with; it verifies each as any relay).
 *
 * MULTICAST (multicast.ts)
 *   WELCOME.multicast names the groups the relay fans out ([server] multicast): "mdns" (UDP to 224.0.0.251
 *   and ff02::fb), "ssdp" (239.255.255.250, ff02::c), "broadcast" (the subnet's broadcast address and
 *   255.255.255.255). A device sends such a packet as any other DATA; the relay copies it unchanged to
 *   every other device and once to each relay it is linked to, which copies it to its own devices only
 *   (one hop). Nothing is sent back to its sender; the relay's own interface takes no part. Per-device
 *   rates, the relay's copy budget and echo suppression drop the excess; no frame says so.
 *
 * IPV6 (ipv6.ts)
 *   WELCOME.ip6 is the device's address in the network's unique local /64 (fd + 40 bits of the network's
 *   identity), whose last 32 bits are its IPv4 address; its link-local address is fe80:: with the same
 *   32 bits. IPv6 in DATA must come from one of them (the link-local one only to a carried group or to
 *   another device's link-local address) and goes to another device's address; the relay routes it by the
 *   IPv4 lease in its last 32 bits. A relay that gives no ip6 drops IPv6.
 *
 * LEASES AND TAKEOVER
 *   The lease is keyed by deviceId. A HELLO for a deviceId whose previous session is still open replaces
 *   that session (it receives GOODBYE "replaced" and is closed): the newest connection is the device.
 */

export const PROTOCOL_VERSION = 1;

export const HEADER_BYTES = 4;
/** Largest IPv4 packet a DATA frame carries: the IPv4 total-length field's maximum. */
export const MAX_PACKET = 65535;
/** Room beyond MAX_PACKET kept for per-packet offload metadata a later version may carry. */
export const MAX_PAYLOAD = MAX_PACKET + 256;
/** Control (JSON) frames are kept well below MAX_PAYLOAD; senders split larger content (peer snapshots). */
export const MAX_CONTROL_PAYLOAD = 60 * 1024;
export const MIN_IPV4_PACKET = 20;
/** The virtio_net_hdr in front of a DATA_GSO packet. */
export const GSO_HEADER_BYTES = 10;
/** Largest DATA_GSO payload. */
export const MAX_GSO_PAYLOAD = MAX_PACKET + GSO_HEADER_BYTES;
/** HELLO/WELCOME capability: DATA_GSO frames (TUN offloads) in both directions. */
export const CAPABILITY_GSO = 'gso';
/** HELLO/WELCOME capability: discovery in PEERS_BIN frames instead of JSON PEERS (DISCOVERY). */
export const CAPABILITY_PEERS_BIN = 'peers-bin';
export const PING_BYTES = 8;
export const HANDSHAKE_TIMEOUT_MS = 10_000;

export enum FrameType {
  Hello = 0x01,
  Welcome = 0x02,
  Reject = 0x03,
  Peers = 0x04,
  PeersBin = 0x06,
  Goodbye = 0x05,
  Endorse = 0x07,
  MeshHello = 0x08,
  MeshWelcome = 0x09,
  Data = 0x10,
  DataGso = 0x11,
  Ping = 0x20,
  Pong = 0x21,
}

const FRAME_NAMES: Readonly<Record<number, string>> = {
  [FrameType.Hello]: 'HELLO',
  [FrameType.Welcome]: 'WELCOME',
  [FrameType.Reject]: 'REJECT',
  [FrameType.Peers]: 'PEERS',
  [FrameType.PeersBin]: 'PEERS_BIN',
  [FrameType.Goodbye]: 'GOODBYE',
  [FrameType.Endorse]: 'ENDORSE',
  [FrameType.MeshHello]: 'MESH_HELLO',
  [FrameType.MeshWelcome]: 'MESH_WELCOME',
  [FrameType.Data]: 'DATA',
  [FrameType.DataGso]: 'DATA_GSO',
  [FrameType.Ping]: 'PING',
  [FrameType.Pong]: 'PONG',
};

export function frameName(type: number): string {
  return FRAME_NAMES[type] ?? `0x${type.toString(16).padStart(2, '0')}`;
}

export type ProtocolErrorCode = 'unknown-type' | 'oversize' | 'bad-length' | 'bad-json' | 'bad-message' | 'unexpected';

/** Everything a peer can get wrong on the wire; the receiver closes that one stream and carries on. */
export class ProtocolError extends Error {
  constructor(readonly code: ProtocolErrorCode, message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/** Checks a header before its payload is buffered, so an absurd length costs nothing. */
export function checkHeader(type: number, length: number, maxPayload: number): void {
  switch (type) {
    case FrameType.Data:
      if (length < MIN_IPV4_PACKET || length > Math.min(maxPayload, MAX_PAYLOAD)) {
        throw new ProtocolError(length > maxPayload ? 'oversize' : 'bad-length',
          `DATA frame of ${length} bytes (allowed ${MIN_IPV4_PACKET}..${Math.min(maxPayload, MAX_PAYLOAD)})`);
      }
      return;
    case FrameType.DataGso:
      if (length < GSO_HEADER_BYTES + MIN_IPV4_PACKET || length > Math.min(maxPayload, MAX_GSO_PAYLOAD)) {
        throw new ProtocolError(length > maxPayload ? 'oversize' : 'bad-length',
          `DATA_GSO frame of ${length} bytes (allowed ${GSO_HEADER_BYTES + MIN_IPV4_PACKET}..${Math.min(maxPayload, MAX_GSO_PAYLOAD)})`);
      }
      return;
    case FrameType.Ping:
    case FrameType.Pong:
      if (length !== PING_BYTES) {
        throw new ProtocolError('bad-length', `${frameName(type)} frame of ${length} bytes (must be ${PING_BYTES})`);
      }
      return;
    case FrameType.Hello:
    case FrameType.Welcome:
    case FrameType.Reject:
    case FrameType.Peers:
    case FrameType.PeersBin:
    case FrameType.Goodbye:
    case FrameType.Endorse:
    case FrameType.MeshHello:
    case FrameType.MeshWelcome:
      if (length > MAX_CONTROL_PAYLOAD) {
        throw new ProtocolError('oversize', `${frameName(type)} frame of ${length} bytes (max ${MAX_CONTROL_PAYLOAD})`);
      }
      return;
    default:
      throw new ProtocolError('unknown-type', `unknown frame type ${frameName(type)}`);
  }
}

export function writeHeader(target: Buffer, offset: number, type: FrameType, length: number): void {
  target.writeUInt32BE(((type << 24) | length) >>> 0, offset);
}

export function encodeFrame(type: FrameType, payload: Uint8Array): Buffer {
  checkHeader(type, payload.length, MAX_PAYLOAD);
  const frame = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
  writeHeader(frame, 0, type, payload.length);
  frame.set(payload, HEADER_BYTES);
  return frame;
}

export function encodeJsonFrame(type: FrameType, message: object): Buffer {
  return encodeFrame(type, Buffer.from(JSON.stringify(message), 'utf8'));
}
