export * from './config';
export * from './lease-pool';
export * from './lease-store';
export * from './peer-directory';
export * from './router';
export * from './session';
export * from './server';
