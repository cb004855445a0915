"""Evaluates flags through the official Flagsmith Python SDK in local evaluation mode, reading
the environment document from flagpost (`API_URL` + `environment-document/`).

Usage: python3 flagsmith_local_eval.py API_URL SERVER_KEY IDENTITIES_JSON
IDENTITIES_JSON is a list of {"identifier": ..., "traits": {...}}.
Prints one JSON object: the environment's flags, and each identity's, as
{feature_name: [enabled, value]}. Exits non-zero if the SDK could not read the document.
"""

import json
import os
import sys

from flagsmith import Flagsmith


def as_table(flags):
    return {flag.feature_name: [flag.enabled, flag.value] for flag in flags.all_flags()}


def main():
    api_url, server_key, identities = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    client = Flagsmith(
        environment_key=server_key,
        api_url=api_url,
        enable_local_evaluation=True,
        # The test asks once; no background refresh is needed.
        environment_refresh_interval_seconds=3600,
    )
    if client._evaluation_context is None:
        sys.exit("the SDK did not load the environment document")
    answer = {
        "environment": as_table(client.get_environment_flags()),
        "identities": {
            i["identifier"]: as_table(
                client.get_identity_flags(identifier=i["identifier"], traits=i["traits"])
            )
            for i in identities
        },
    }
    print(json.dumps(answer), flush=True)
    # The SDK's polling thread would otherwise keep the process for its interval.
    os._exit(0)


if __name__ == "__main__":
    main()
