export * from './backoff';
export * from './client';
export * from './config';
export * from './peer-table';
export * from './state';
export * from './control-api';
export * from './discovery';
export * from './secure';
