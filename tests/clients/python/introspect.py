"""Drives Keysmith with Authlib, as a resource server would: read the RFC 8414
metadata document of the issuer, then RFC 7662 introspection with
client_secret_basic. Run by tests/integration/bearer/oauth_clients.rs.

Input (environment, so nothing secret shows in `ps`):
  KEYSMITH_ISSUER         the issuer identifier, e.g. http://127.0.0.1:3000
  KEYSMITH_CLIENT_ID      the introspection client's id
  KEYSMITH_CLIENT_SECRET  its secret
  KEYSMITH_TOKENS         a JSON array of tokens to introspect
Output (stdout, one JSON object):
  {"metadata": {...}, "metadata_errors": {field: message},
   "results": [{"status": 200, "body": {...}}, ...]}
or {"discovery_error": "..."} with exit status 1.
"""

import json
import os
import sys
from urllib.parse import urlsplit, urlunsplit

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata


def well_known_url(issuer):
    # RFC 8414 §3.1: the well-known segment goes between host and path.
    parts = urlsplit(issuer)
    path = "/.well-known/oauth-authorization-server" + parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def main():
    issuer = os.environ["KEYSMITH_ISSUER"]
    tokens = json.loads(os.environ.get("KEYSMITH_TOKENS", "[]"))

    response = requests.get(well_known_url(issuer), timeout=10)
    if response.status_code != 200:
        print(json.dumps({"discovery_error": f"status {response.status_code}"}))
        sys.exit(1)
    metadata = AuthorizationServerMetadata(response.json())
    # RFC 8414 §3.3: the issuer must be identical to the one asked about.
    if metadata.get("issuer") != issuer:
        print(json.dumps({"discovery_error": f"issuer {metadata.get('issuer')!r}"}))
        sys.exit(1)
    # Authlib's validator, field by field, so the answer says which fields
    # it objects to rather than only the first.
    metadata_errors = {}
    for key in AuthorizationServerMetadata.REGISTRY_KEYS:
        try:
            getattr(metadata, f"validate_{key}")()
        except ValueError as e:
            metadata_errors[key] = str(e)

    session = OAuth2Session(
        client_id=os.environ["KEYSMITH_CLIENT_ID"],
        client_secret=os.environ["KEYSMITH_CLIENT_SECRET"],
        token_endpoint_auth_method="client_secret_basic",
    )
    results = []
    for token in tokens:
        r = session.introspect_token(
            metadata["introspection_endpoint"],
            token=token,
            token_type_hint="access_token",
            timeout=10,
        )
        try:
            body = r.json()
        except ValueError:
            body = None
        results.append({"status": r.status_code, "body": body})

    print(
        json.dumps(
            {
                "metadata": dict(metadata),
                "metadata_errors": metadata_errors,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
