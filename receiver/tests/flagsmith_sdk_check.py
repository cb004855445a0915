"""Reads flags through the official Flagsmith Python SDK pointed at a flagpost-receiver.

Usage: python3 flagsmith_sdk_check.py API_URL ENVIRONMENT_KEY IDENTIFIER
Prints one JSON object: the environment's flags and the identity's flags, each as
{feature_name: [enabled, value]}.
"""

import json
import sys

from flagsmith import Flagsmith


def as_table(flags):
    return {flag.feature_name: [flag.enabled, flag.value] for flag in flags.all_flags()}


def main():
    api_url, environment_key, identifier = sys.argv[1:4]
    client = Flagsmith(environment_key=environment_key, api_url=api_url)
    environment = client.get_environment_flags()
    identity = client.get_identity_flags(identifier=identifier, traits={"plan": "pro"})
    print(json.dumps({"environment": as_table(environment), "identity": as_table(identity)}))


if __name__ == "__main__":
    main()
