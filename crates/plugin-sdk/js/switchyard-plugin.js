// Write switchyard plugins in JavaScript.
//
// A plugin module exports `init` and one of `filter`, `route` or `transform`, made with
// the helpers below, and is built into a WebAssembly component by componentize-js
// (`switchyard plugin build` runs it with the right flags):
//
//   import * as switchyard from './switchyard-plugin.js';
//   let status = 'paid';
//   export const init = switchyard.init((config) => { status = config.equals ?? status; });
//   export const filter = switchyard.filter((event) => event.lookup('after.status') === status);
//
// What the helpers do for a plugin:
// - unpack the packed batch the host hands in into `Event` objects (fields decoded,
//   `timestampMs` a Number, the JSON payload parsed once on first use);
// - parse the config JSON for `init`;
// - turn an exception into an error result with the message, and a log line carrying
//   the message and the top of the stack: switchyard then handles the batch by the
//   plugin's `on_error` instead of seeing a bare trap;
// - send `console.log/info/debug/warn/error` to switchyard's log (a plugin has no
//   stdout of its own).

import { log as hostLog, monotonicNow } from 'switchyard:plugin/host@0.2.0';

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Writes a line to switchyard's log at `level` (trace, debug, info, warn, error). */
export function log(level, message) {
    hostLog(level, String(message));
}
export const trace = (message) => log('trace', message);
export const debug = (message) => log('debug', message);
export const info = (message) => log('info', message);
export const warn = (message) => log('warn', message);
export const error = (message) => log('error', message);

/** Nanoseconds from the host's monotonic clock, as a Number; only differences mean something. */
export function now() {
    return Number(monotonicNow());
}

function show(value) {
    if (typeof value === 'string') return value;
    if (value instanceof Error) return `${value.name}: ${value.message}`;
    try {
        return JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? v.toString() : v));
    } catch {
        return String(value);
    }
}

const toLog = (level) => (...args) => log(level, args.map(show).join(' '));
globalThis.console = {
    log: toLog('info'),
    info: toLog('info'),
    debug: toLog('debug'),
    trace: toLog('trace'),
    warn: toLog('warn'),
    error: toLog('error'),
};

/**
 * Throws if `config` holds a key not in `known`: a typo in the config file then stops
 * switchyard from starting with a message naming the key, instead of being ignored.
 */
export function denyUnknownKeys(config, known) {
    for (const key of Object.keys(config ?? {})) {
        if (!known.includes(key)) {
            throw new Error(`unknown key \`${key}\` in the plugin's config; known keys: ${known.join(', ')}`);
        }
    }
}

/** Reads `path` ("after.status", "items.0.sku") in a parsed JSON value; `undefined` if absent. */
export function lookup(value, path) {
    let at = value;
    for (const part of String(path).split('.')) {
        if (at === null || typeof at !== 'object') return undefined;
        at = Array.isArray(at) ? at[Number(part)] : at[part];
        if (at === undefined) return undefined;
    }
    return at;
}

/** One event, as switchyard carries it. */
export class Event {
    constructor(fields) {
        /** Unique id: deduplicate on it. */
        this.id = fields.id ?? '';
        /** Name of the source that produced it. */
        this.source = fields.source ?? '';
        /** `message`, or `insert`/`update`/`delete`/`truncate`/`schema` for database changes. */
        this.kind = fields.kind ?? 'message';
        /** Partition and order key (Uint8Array), or undefined. */
        this.key = fields.key;
        /** The body (Uint8Array). */
        this.payload = fields.payload ?? new Uint8Array();
        /** MIME type of the payload. */
        this.contentType = fields.contentType ?? 'application/json';
        /** Metadata: a list of {name, value}. */
        this.headers = fields.headers ?? [];
        /** Event time in milliseconds since the Unix epoch, a Number. */
        this.timestampMs = Number(fields.timestampMs ?? 0);
        this._json = undefined;
    }

    /** A JSON event; `payload` is any JSON-serialisable value. */
    static json(payload, fields = {}) {
        return new Event({ ...fields, payload: encoder.encode(JSON.stringify(payload)) });
    }

    /** The payload as text. */
    text() {
        return decoder.decode(this.payload);
    }

    /**
     * The payload parsed as JSON (once), or undefined if it is not JSON. JavaScript
     * numbers are doubles: integers beyond 2^53 (a Postgres `bigint` id, say) lose
     * digits here, and `setJson` writes them back rounded; compare such ids as text.
     */
    json() {
        if (this._json === undefined) {
            try {
                this._json = { value: JSON.parse(this.text()) };
            } catch {
                this._json = { value: undefined };
            }
        }
        return this._json.value;
    }

    /** Replaces the payload with `value` as JSON. */
    setJson(value) {
        this.payload = encoder.encode(JSON.stringify(value));
        this._json = { value };
    }

    /** A field of the JSON payload by dotted path, or undefined. */
    lookup(path) {
        return lookup(this.json(), path);
    }

    /** The key as text, or undefined. */
    keyText() {
        return this.key === undefined ? undefined : decoder.decode(this.key);
    }

    /** The first header named `name`, or undefined. */
    header(name) {
        return this.headers.find((h) => h.name === name)?.value;
    }

    /** Sets header `name` to `value`, replacing any others of that name. */
    setHeader(name, value) {
        this.headers = this.headers.filter((h) => h.name !== name);
        this.headers.push({ name, value: String(value) });
    }

    /** Whether this is a database change (insert, update, delete, truncate). */
    isChange() {
        return ['insert', 'update', 'delete', 'truncate'].includes(this.kind);
    }

    /** `{schema, table}` of a database change, or undefined. */
    table() {
        const json = this.isChange() ? this.json() : undefined;
        if (!json || typeof json.schema !== 'string' || typeof json.table !== 'string') {
            return undefined;
        }
        return { schema: json.schema, table: json.table };
    }

    /** Plain fields for logs and JSON.stringify (no BigInt, payload as text). */
    toJSON() {
        return {
            id: this.id,
            source: this.source,
            kind: this.kind,
            key: this.keyText() ?? null,
            contentType: this.contentType,
            headers: this.headers,
            timestampMs: this.timestampMs,
            payload: this.json() ?? this.text(),
        };
    }

    /** The event as the host takes it back from a transform. */
    toWit() {
        return {
            id: this.id,
            source: this.source,
            kind: this.kind,
            key: this.key,
            payload: this.payload,
            contentType: this.contentType,
            headers: this.headers.map((h) => ({ name: h.name, value: String(h.value) })),
            timestampMs: BigInt(Math.max(0, Math.trunc(this.timestampMs))),
        };
    }
}

/** The events of a packed batch (see `record batch` in wit/plugin.wit). */
export function unpack(batch) {
    const { data, ends, headerCounts, hasKey, timestampsMs } = batch;
    const events = new Array(timestampsMs.length);
    let field = 0;
    let start = 0;
    const next = () => {
        const end = ends[field++];
        const bytes = data.subarray(start, end);
        start = end;
        return bytes;
    };
    const text = () => decoder.decode(next());
    for (let i = 0; i < events.length; i++) {
        const id = text();
        const source = text();
        const kind = text();
        const key = next();
        const payload = next();
        const contentType = text();
        const headers = new Array(headerCounts[i]);
        for (let h = 0; h < headers.length; h++) {
            headers[h] = { name: text(), value: text() };
        }
        events[i] = new Event({
            id,
            source,
            kind,
            key: hasKey[i] ? key : undefined,
            payload,
            contentType,
            headers,
            timestampMs: timestampsMs[i],
        });
    }
    return events;
}

/** Logs an exception with the top of its stack and returns the message for the error result. */
function failed(where, e) {
    const message = `${where}: ${show(e)}`;
    const stack = e instanceof Error && typeof e.stack === 'string' ? e.stack.split('\n').slice(0, 4).join(' | ') : '';
    log('error', stack ? `${message} (at ${stack})` : message);
    return message;
}

// componentize-js turns an exception thrown by an export that returns a `result` into
// its `err` case, with the exception's `payload` as the error value.
function fail(where, e) {
    const message = failed(where, e);
    const err = new Error(message);
    err.payload = message;
    throw err;
}

/** The `init` export: runs `fn(config)` with the plugin's config parsed from JSON. */
export function init(fn) {
    return (configJson) => {
        try {
            settled(fn(JSON.parse(configJson || '{}')));
        } catch (e) {
            fail('init', e);
        }
    };
}

// A plugin call is synchronous: an async function's Promise is not a decision.
function settled(value) {
    if (value !== null && typeof value === 'object' && typeof value.then === 'function') {
        throw new TypeError('returned a Promise: plugin functions must be synchronous (no async)');
    }
    return value;
}

/** The `filter` export: `fn(event)` returns true to keep the event. */
export function filter(fn) {
    return (batch) => {
        try {
            return unpack(batch).map((event) => Boolean(settled(fn(event))));
        } catch (e) {
            fail('filter', e);
        }
    };
}

/** The `route` export: `fn(event)` returns the names of the sinks the event goes to. */
export function route(fn) {
    return (batch) => {
        try {
            return unpack(batch).map((event) => {
                const sinks = settled(fn(event)) ?? [];
                // One sink name on its own, not a list of its letters.
                return typeof sinks === 'string' ? [sinks] : Array.from(sinks, String);
            });
        } catch (e) {
            fail('route', e);
        }
    };
}

/**
 * The `transform` export: `fn(event)` returns the events that replace it — an Event, a
 * list of them (empty drops it), or null/undefined to drop it. Returning the event it got
 * (changed or not) keeps it.
 */
export function transform(fn) {
    return (batch) => {
        try {
            return unpack(batch).map((event) => {
                const out = settled(fn(event));
                if (out === null || out === undefined) return [];
                return (Array.isArray(out) ? out : [out]).map((e) =>
                    e instanceof Event ? e.toWit() : new Event(e).toWit(),
                );
            });
        } catch (e) {
            fail('transform', e);
        }
    };
}
