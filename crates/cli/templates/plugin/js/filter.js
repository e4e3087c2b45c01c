// {{name}} — a switchyard filter plugin: keeps the events whose JSON field equals a value
// and drops the rest. Config: { "field": "after.status", "equals": "paid" }.
import * as switchyard from './switchyard-plugin.js';

let field = 'after.status';
let equals = 'paid';

// Runs once per instance with the `config` table of [plugins.NAME]. An exception stops
// switchyard from starting and is shown with its message: say which key is wrong.
export const init = switchyard.init((config) => {
    switchyard.denyUnknownKeys(config, ['field', 'equals']);
    field = config.field ?? field;
    equals = config.equals ?? equals;
    switchyard.info(`keeping events whose ${field} is ${JSON.stringify(equals)}`);
});

// true keeps the event. Events without the field (or not JSON) are dropped. An exception
// fails the batch, which then follows the plugin's `on_error`, with its message logged.
export const filter = switchyard.filter((event) => event.lookup(field) === equals);
