"""Runs scim2-tester's check_server against a live Keysmith.

Usage: run_tester.py BASE_URL SECRET
Prints one JSON object per check result (status, title, resource type,
tags, reason); the Rust test decides which statuses are acceptable.
"""

import json
import sys

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import check_server


def main() -> int:
    base_url, secret = sys.argv[1], sys.argv[2]
    http = Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )
    client = SyncSCIMClient(http)
    results = check_server(client)
    for r in results:
        print(
            json.dumps(
                {
                    "status": r.status.name,
                    "title": r.title or "",
                    "resource_type": r.resource_type or "",
                    "tags": sorted(r.tags or []),
                    "reason": str(r.reason or "")[:2000],
                }
            )
        )
    print(json.dumps({"done": len(results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
