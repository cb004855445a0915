// Flagsmith's JS client (`flagsmith`) in realtime mode against a flagpost-receiver: flags from
// API_URL with the client key, the realtime stream from EVENT_SOURCE_URL.
//
// Usage: NODE_PATH=<pinned SDKs>/node_modules node realtime.js API_URL EVENT_SOURCE_URL CLIENT_KEY FEATURE EXPECTED
// Prints `ready <value>` once the first flags are in, then `changed <value>` as soon as FEATURE's
// value is EXPECTED (JSON-encoded values), and exits. Refetches happen only on the stream's
// events: the client polls nothing.
'use strict';

// The client opens its stream only in a browser (`window`), through the global `EventSource`,
// which Node lacks: the `eventsource` package stands in for the browser's.
globalThis.EventSource = require('eventsource');
globalThis.window = globalThis;
const flagsmith = require('flagsmith').createFlagsmithInstance();

const [apiUrl, eventSourceUrl, clientKey, feature, expected] = process.argv.slice(2, 7);

function value() {
    return JSON.stringify(flagsmith.getValue(feature));
}

let ready = false;
flagsmith
    .init({
        environmentID: clientKey,
        api: apiUrl,
        realtime: true,
        eventSourceUrl,
        fetch: globalThis.fetch,
        cacheFlags: false,
        enableAnalytics: false,
        onChange: () => {
            if (ready && value() === expected) {
                process.stdout.write(`changed ${value()}\n`);
                process.exit(0);
            }
        },
    })
    .then(() => {
        ready = true;
        process.stdout.write(`ready ${value()}\n`);
    })
    .catch((error) => {
        console.error(error);
        process.exit(2);
    });
