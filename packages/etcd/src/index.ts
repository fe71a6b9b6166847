export * from './wire';
export * from './client';
export * from './watch';
export * from './members';
