export { DEFAULT_CLIENT_SOCKET, DEFAULT_SERVER_SOCKET } from '@mnedc/common';
export * from './api';
export { helpText, parseCommandLine, UsageError, type CommandName, type Invocation } from './args';
export * from './format';
export * from './render';
export { EXIT, run, type Output, type RunIo } from './run';
export * from './glossary';
