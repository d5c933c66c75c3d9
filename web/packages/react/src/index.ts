/** React bindings for the progress client: one provider, a few hooks. */
export { WebSocketProvider, type WebSocketProviderProps } from './WebSocketProvider.js';
export { useConnectionStatus, useImport, useImports, useProgressClient } from './hooks.js';
