export * from './wire';
export * from './decoder';
export * from './messages';
export * from './names';
export * from './ipv4';
export * from './auth';
export * from './gso';
export * from './overlap';
