export * from './lab';
export * from './overlay';
export * from './measure';
export * from './notify-socket';
export * from './pcap';
export * from './container';
export * from './wire-client';
export * from './relay-process';
