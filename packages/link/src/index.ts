export * from './link';
export * from './send-budget';
export * from './tun-frames';
