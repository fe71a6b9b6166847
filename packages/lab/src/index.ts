export * from './lab';
export * from './overlay';
export * from './measure';
export * from './notify-socket';
export * from './pcap';
export * from './container';
export * from './wire-client';
export * from './relay-process';
export * from './openvpn';
export * from './tls-records';
export { runScale } from './scale/run';
export { formatTable, type ScaleOptions, type ScaleResult } from './scale/stats';
export * from './cluster-lab';
export * from './avahi';
export {
  SSDP_CLI, SSDP_PORT, SSDP_IPV4_GROUP, SSDP_IPV6_GROUP, SSDP_MAX_DATAGRAM, ssdpRespond, ssdpSearch, parseSsdp, parseSearchResponse,
  buildMSearch, buildSearchResponse, answersFor,
  type SsdpAnswer, type SsdpMessage, type SsdpResponder, type RespondOptions, type SearchOptions,
} from './ssdp';
export * from './sshd';
