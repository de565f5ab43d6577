#!/usr/bin/env python3
"""Verify received webhooks with the official `standardwebhooks` library.

Usage: verify_standard_webhooks.py <cases.json>

Each case is {"secret", "body", "headers"}; prints a JSON list of true (verified) or false
(the library raised WebhookVerificationError), one per case.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

results = []
for case in json.load(open(sys.argv[1])):
    try:
        Webhook(case["secret"]).verify(case["body"], case["headers"])
        results.append(True)
    except WebhookVerificationError:
        results.append(False)
print(json.dumps(results))
