// Issue 11: Flagsmith's JavaScript client (`flagsmith`) identifies a transient identity with
// traits and no identifier against the receiver: `identify(null, traits, true)`.
//
//   node transient_identity.js API_URL CLIENT_KEY < traits.json
//
// Prints `{"flags": {name: [enabled, value]}}` as the client holds them afterwards.
const { createFlagsmithInstance } = require('flagsmith/isomorphic');

const [api, environmentID] = process.argv.slice(2);

function readStdin() {
    return new Promise((resolve) => {
        let text = '';
        process.stdin.on('data', (chunk) => (text += chunk));
        process.stdin.on('end', () => resolve(JSON.parse(text)));
    });
}

async function main() {
    const traits = await readStdin();
    const flagsmith = createFlagsmithInstance();
    await flagsmith.init({ environmentID, api, fetch: globalThis.fetch, onError: (e) => { throw e; } });
    await flagsmith.identify(null, traits, true);
    const flags = {};
    for (const [name, flag] of Object.entries(flagsmith.getAllFlags())) {
        flags[name] = [flag.enabled, flag.value ?? null];
    }
    process.stdout.write(JSON.stringify({ flags }));
}

main().catch((error) => {
    console.error(error);
    process.exit(1);
});
