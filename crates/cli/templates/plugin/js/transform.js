// {{name}} — a switchyard transform plugin: tags each Postgres change with a header naming
// its table and, if asked, drops the `before` image from the payload.
// Config: { "header": "x-table", "drop_before": true }.
import * as switchyard from './switchyard-plugin.js';

let header = 'x-table';
let dropBefore = false;

// Runs once per instance with the `config` table of [plugins.NAME]. An exception stops
// switchyard from starting and is shown with its message: say which key is wrong.
export const init = switchyard.init((config) => {
    switchyard.denyUnknownKeys(config, ['header', 'drop_before']);
    header = config.header ?? header;
    dropBefore = config.drop_before ?? dropBefore;
});

// The events replacing this one: [] drops it, several split it. Keep the `id` so
// consumers can still deduplicate.
export const transform = switchyard.transform((event) => {
    const table = event.table();
    if (table) {
        event.setHeader(header, `${table.schema}.${table.table}`);
    }
    const change = event.json();
    if (dropBefore && change && typeof change === 'object' && 'before' in change) {
        delete change.before;
        event.setJson(change);
    }
    return [event];
});
