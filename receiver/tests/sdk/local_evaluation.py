"""The official Flagsmith Python SDK against a flagpost-receiver, in remote and in local evaluation
mode: both must give the same flags.

Usage: PYTHONPATH=<pinned SDK> python3 local_evaluation.py API_URL CLIENT_KEY SERVER_KEY < identities.json
identities.json: {"identifier": {"trait_key": trait_value, ...}, ...}
Prints {"remote": ANSWERS, "local": ANSWERS}, ANSWERS being
{"environment": TABLE, "identities": {identifier: TABLE}}, TABLE {feature_name: [enabled, value]}.
Exits non-zero if local evaluation did not load the receiver's environment document (the SDK
would otherwise fall back to remote calls without a word).
"""

import json
import os
import sys

from flagsmith import Flagsmith


def as_table(flags):
    return {flag.feature_name: [flag.enabled, flag.value] for flag in flags.all_flags()}


def answers(client, identities):
    return {
        "environment": as_table(client.get_environment_flags()),
        "identities": {
            identifier: as_table(client.get_identity_flags(identifier=identifier, traits=traits))
            for identifier, traits in identities.items()
        },
    }


def main():
    api_url, client_key, server_key = sys.argv[1:4]
    identities = json.load(sys.stdin)
    remote = Flagsmith(environment_key=client_key, api_url=api_url)
    local = Flagsmith(
        environment_key=server_key,
        api_url=api_url,
        enable_local_evaluation=True,
        environment_refresh_interval_seconds=3600,
    )
    if local._evaluation_context is None:
        print("local evaluation loaded no environment document", file=sys.stderr)
        sys.stderr.flush()
        os._exit(2)
    result = {"remote": answers(remote, identities), "local": answers(local, identities)}
    print(json.dumps(result))
    sys.stdout.flush()
    # The local client's polling thread would keep the interpreter alive.
    os._exit(0)


if __name__ == "__main__":
    main()
