"""Issue 11: OpenFeature's OFREP provider for Python against the receiver.

    python3 ofrep.py BASE_URL KEY < cases.json

openfeature-provider-ofrep with openfeature-sdk, the key as `X-API-Key`. Reads
`[{context, flag, default}, ...]` on standard input; prints, in the same order,
`[{value, reason, variant, errorCode}, ...]`, each read through the getter of the default's type.
"""

import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def main():
    base_url, key = sys.argv[1:3]
    cases = json.load(sys.stdin)
    api.set_provider(OFREPProvider(base_url, headers_factory=lambda: {"X-API-Key": key}))
    client = api.get_client()
    rows = []
    for case in cases:
        attributes = dict(case["context"])
        targeting_key = attributes.pop("targetingKey", None)
        context = EvaluationContext(targeting_key, attributes)
        fallback = case["default"]
        if isinstance(fallback, bool):
            get = client.get_boolean_details
        elif isinstance(fallback, str):
            get = client.get_string_details
        elif isinstance(fallback, int):
            get = client.get_integer_details
        else:
            get = client.get_float_details
        details = get(case["flag"], fallback, context)
        rows.append(
            {
                "value": details.value,
                "reason": str(getattr(details.reason, "value", details.reason)),
                "variant": details.variant,
                "errorCode": getattr(details.error_code, "value", details.error_code),
            }
        )
    api.shutdown()
    json.dump(rows, sys.stdout)


if __name__ == "__main__":
    main()
