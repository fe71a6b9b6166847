export * from './wire';
export * from './decoder';
export * from './messages';
export * from './ipv4';
