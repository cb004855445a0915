"""The official Flagsmith Python SDK with realtime updates against a flagpost-receiver: local
evaluation (the environment document from API_URL with a server key), refreshed only when the
realtime stream at REALTIME_URL says the environment changed (the SDK polls nothing then).

Usage: PYTHONPATH=<pinned SDK> python3 realtime.py API_URL REALTIME_URL SERVER_KEY FEATURE EXPECTED
Prints `ready <value>` once the SDK is up, then `changed <value>` as soon as FEATURE's value is
EXPECTED (values JSON-encoded), and exits; exits 3 if that never happens within two minutes.
"""

import json
import sys
import time

from flagsmith import Flagsmith


def main() -> int:
    api_url, realtime_url, server_key, feature, expected = sys.argv[1:6]
    flagsmith = Flagsmith(
        environment_key=server_key,
        api_url=api_url,
        enable_local_evaluation=True,
        enable_realtime_updates=True,
        realtime_api_url=realtime_url,
    )

    def value() -> str:
        return json.dumps(flagsmith.get_environment_flags().get_feature_value(feature))

    print("ready", value(), flush=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        # Local evaluation: each call reads the document the SDK holds, no request.
        if value() == expected:
            print("changed", value(), flush=True)
            return 0
        time.sleep(0.002)
    return 3


if __name__ == "__main__":
    sys.exit(main())
