export * from './config';
export * from './atomic-file';
export * from './log';
export * from './cli';
export * from './identity';
export * from './systemd';
export * from './control';
export * from './reload';
