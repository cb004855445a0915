// Issue 11: OpenFeature's OFREP providers for Node against the receiver.
//
//   node ofrep.js server|web BASE_URL KEY < cases.json
//
// `server`: @openfeature/ofrep-provider with @openfeature/server-sdk, one request per flag, the
// key as `Authorization: Bearer`. `web`: @openfeature/ofrep-web-provider with
// @openfeature/web-sdk (static context: one bulk request per context), the key as `X-API-Key`.
// Reads `[{context, flag, default}, ...]` on standard input; prints, in the same order,
// `[{value, reason, variant, errorCode}, ...]`, each read through the getter of the default's type.
const [kind, baseUrl, key] = process.argv.slice(2);

function readStdin() {
    return new Promise((resolve) => {
        let text = '';
        process.stdin.on('data', (chunk) => (text += chunk));
        process.stdin.on('end', () => resolve(JSON.parse(text)));
    });
}

function getter(client, value) {
    switch (typeof value) {
        case 'boolean':
            return client.getBooleanDetails.bind(client);
        case 'string':
            return client.getStringDetails.bind(client);
        case 'number':
            return client.getNumberDetails.bind(client);
        default:
            return client.getObjectDetails.bind(client);
    }
}

function row(details) {
    return {
        value: details.value,
        reason: details.reason ?? null,
        variant: details.variant ?? null,
        errorCode: details.errorCode ?? null,
    };
}

async function server(cases) {
    const { OpenFeature } = require('@openfeature/server-sdk');
    const { OFREPProvider } = require('@openfeature/ofrep-provider');
    const provider = new OFREPProvider({ baseUrl, headers: [['Authorization', `Bearer ${key}`]] });
    await OpenFeature.setProviderAndWait(provider);
    const client = OpenFeature.getClient();
    const rows = [];
    for (const { context, flag, default: fallback } of cases) {
        rows.push(row(await getter(client, fallback)(flag, fallback, context)));
    }
    await OpenFeature.close();
    return rows;
}

async function web(cases) {
    const { OpenFeature } = require('@openfeature/web-sdk');
    const { OFREPWebProvider } = require('@openfeature/ofrep-web-provider');
    const provider = new OFREPWebProvider({
        baseUrl,
        headers: [['X-API-Key', key]],
        pollInterval: 0,
        cacheMode: 'disabled',
        changeDetection: 'none',
    });
    const rows = [];
    let current = null;
    for (const { context, flag, default: fallback } of cases) {
        const text = JSON.stringify(context);
        if (current === null) {
            await OpenFeature.setContext(context);
            await OpenFeature.setProviderAndWait(provider);
        } else if (text !== current) {
            // A new static context: the provider evaluates every flag again, in one request.
            await OpenFeature.setContext(context);
        }
        current = text;
        rows.push(row(getter(OpenFeature.getClient(), fallback)(flag, fallback)));
    }
    await OpenFeature.close();
    return rows;
}

readStdin()
    .then((cases) => (kind === 'web' ? web(cases) : server(cases)))
    .then((rows) => process.stdout.write(JSON.stringify(rows)))
    .catch((error) => {
        console.error(error);
        process.exit(1);
    });
