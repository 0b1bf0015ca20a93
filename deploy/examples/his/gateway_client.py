"""A minimal HIS-side client of his-gateway: token, PUT, retry. Python 3.11 + httpx.

    GATEWAY=http://127.0.0.1:8081 CLIENT_ID=his-... CLIENT_SECRET=... \\
        python deploy/examples/his/gateway_client.py deploy/examples/his/appointment-fhir.json

Keeps its access token until shortly before it expires, asks for a new one on a 401, and
repeats a PUT that got 503 (the broker did not confirm) after Retry-After: repeating is
harmless, so every transient failure is simply retried. A 4xx other than 401 is the
vendor's to fix: the OperationOutcome says what, with the DLQ's reason codes.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import httpx


class Gateway:
    def __init__(self, base_url: str, client_id: str, client_secret: str) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=30)
        self._auth = (client_id, client_secret)
        self._token: str | None = None
        self._expires = 0.0

    def _bearer(self) -> str:
        if self._token is None or time.monotonic() > self._expires - 30:
            response = self._http.post(
                "/oauth/token", data={"grant_type": "client_credentials"}, auth=self._auth
            )
            response.raise_for_status()
            body = response.json()
            self._token = body["access_token"]
            self._expires = time.monotonic() + body["expires_in"]
        assert self._token is not None
        return self._token

    def put_appointment(self, resource: dict[str, object], attempts: int = 5) -> httpx.Response:
        content = json.dumps(resource).encode()
        for attempt in range(attempts):
            response = self._http.put(
                f"/fhir/Appointment/{resource['id']}",
                content=content,
                headers={
                    "Authorization": f"Bearer {self._bearer()}",
                    "Content-Type": "application/fhir+json",
                    "Prefer": "return=minimal",
                },
            )
            if response.status_code == 401:
                self._token = None  # expired or revoked: one new token, then give up
                if attempt > 0:
                    return response
                continue
            if response.status_code == 503 or response.status_code >= 500:
                time.sleep(float(response.headers.get("Retry-After", "2")))
                continue
            return response
        return response


def main() -> int:
    gateway = Gateway(
        os.environ.get("GATEWAY", "http://127.0.0.1:8081"),
        os.environ["CLIENT_ID"],
        os.environ["CLIENT_SECRET"],
    )
    status = 0
    for path in sys.argv[1:]:
        resource = json.loads(Path(path).read_text())
        response = gateway.put_appointment(resource)
        if response.status_code == 200:
            print(f"{path}: stored (ETag {response.headers.get('ETag')})")
            continue
        status = 1
        print(f"{path}: HTTP {response.status_code}")
        for issue in response.json().get("issue", []):
            codes = [c["code"] for c in issue.get("details", {}).get("coding", [])]
            where = ",".join(issue.get("expression", []))
            print(f"  {issue['code']} {codes} {where}: {issue['diagnostics']}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
