// flagsmith-nodejs against a flagpost-receiver, in remote and in local evaluation mode: both must
// give the same flags.
//
// Usage: NODE_PATH=<pinned SDK>/node_modules node local_evaluation.js API_URL CLIENT_KEY SERVER_KEY < identities.json
// identities.json: {"identifier": {"trait_key": trait_value, ...}, ...}
// Prints {"remote": ANSWERS, "local": ANSWERS}, ANSWERS being
// {"environment": TABLE, "identities": {identifier: TABLE}}, TABLE {feature_name: [enabled, value]}.
// In local mode the SDK answers only from the environment document (it throws if it has none).
'use strict';

const { Flagsmith } = require('flagsmith-nodejs');

function asTable(flags) {
    const table = {};
    for (const flag of flags.allFlags()) {
        table[flag.featureName] = [flag.enabled, flag.value];
    }
    return table;
}

async function answers(client, identities) {
    const result = { environment: asTable(await client.getEnvironmentFlags()), identities: {} };
    for (const [identifier, traits] of Object.entries(identities)) {
        result.identities[identifier] = asTable(await client.getIdentityFlags(identifier, traits));
    }
    return result;
}

async function main() {
    const [apiUrl, clientKey, serverKey] = process.argv.slice(2, 5);
    const identities = JSON.parse(require('fs').readFileSync(0, 'utf8'));
    const remote = new Flagsmith({ environmentKey: clientKey, apiUrl });
    const local = new Flagsmith({
        environmentKey: serverKey,
        apiUrl,
        enableLocalEvaluation: true,
        environmentRefreshIntervalSeconds: 3600,
    });
    const result = { remote: await answers(remote, identities), local: await answers(local, identities) };
    await local.close();
    await remote.close();
    process.stdout.write(JSON.stringify(result));
}

main().catch((error) => {
    console.error(error);
    process.exit(2);
});
