// {{name}} — a switchyard router plugin: sends each event to the sinks listed for its
// kind (insert, update, delete, message, ...), else to `default` (none = drop).
// Config: { "routes": { "insert": ["orders_topic"], "message": ["audit"] }, "default": [] }.
import * as switchyard from './switchyard-plugin.js';

let routes = {};
let fallback = [];

// Runs once per instance with the `config` table of [plugins.NAME]. An exception stops
// switchyard from starting and is shown with its message: say which key is wrong.
export const init = switchyard.init((config) => {
    switchyard.denyUnknownKeys(config, ['routes', 'default']);
    routes = config.routes ?? {};
    fallback = config.default ?? [];
});

// The names of the sinks this event goes to; an empty list drops it.
export const route = switchyard.route((event) => routes[event.kind] ?? fallback);
