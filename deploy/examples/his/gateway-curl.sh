#!/usr/bin/env bash
# A vendor's session with his-gateway, by hand: token, FHIR PUT, native events, refusals.
#
#   export GATEWAY=http://127.0.0.1:8081 CLIENT_ID=his-... CLIENT_SECRET=...
#   bash deploy/examples/his/gateway-curl.sh
#
# CLIENT_ID and CLIENT_SECRET come from `reminders gateway client add --name NAME
# --practices 01054321` (the secret is printed once). Needs curl; jq is optional.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
GATEWAY="${GATEWAY:-http://127.0.0.1:8081}"
: "${CLIENT_ID:?set CLIENT_ID}" "${CLIENT_SECRET:?set CLIENT_SECRET}"

echo "== 1. a token (OAuth 2.0 client credentials, HTTP Basic)"
token_json="$(curl -sS -u "$CLIENT_ID:$CLIENT_SECRET" \
  -d grant_type=client_credentials "$GATEWAY/oauth/token")"
echo "$token_json"
TOKEN="$(printf '%s' "$token_json" | sed -E 's/.*"access_token":"([^"]+)".*/\1/')"

echo "== 2. PUT a FHIR R4 Appointment (200: it is on his.appointments.v1)"
curl -sS -i -X PUT "$GATEWAY/fhir/Appointment/A-2026-118735" \
  -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/fhir+json" \
  -H "Prefer: return=OperationOutcome" \
  --data-binary @"$here/appointment-fhir.json"
echo

echo "== 3. the same PUT again: harmless (booking_events drops the duplicate)"
curl -sS -o /dev/null -w "%{http_code}\n" -X PUT "$GATEWAY/fhir/Appointment/A-2026-118735" \
  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/fhir+json" \
  --data-binary @"$here/appointment-fhir.json"

echo "== 4. a native AppointmentEvent (one, or a JSON list of at most 500)"
curl -sS -X POST "$GATEWAY/v1/appointment-events" \
  -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \
  --data-binary @"$here/appointment-native.json"
echo

echo "== 5. a refused event: 422 and an OperationOutcome with the DLQ's reason codes"
sed -e 's/"start": "2026-12-01T09:40:00+01:00"/"start": "2026-12-01T09:40:00"/' \
  "$here/appointment-fhir.json" |
  curl -sS -X PUT "$GATEWAY/fhir/Appointment/A-2026-118735" \
    -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/fhir+json" \
    --data-binary @-
echo

echo "== 6. without a token: 401 with WWW-Authenticate"
curl -sS -i -o /dev/null -w "%{http_code}\n" -X PUT "$GATEWAY/fhir/Appointment/A-2026-118735" \
  -H "Content-Type: application/fhir+json" --data-binary @"$here/appointment-fhir.json"

echo "== 7. what the server can do"
curl -sS "$GATEWAY/fhir/metadata" | head -c 400
echo
