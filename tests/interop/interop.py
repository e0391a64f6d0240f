"""The Python side of the interop check (run by tests/interop/run, see README.md there).

    python interop.py DIR

1. Checks every request the bus sent (DIR/bus/*.json, written by the Rust test
   `bus_writes_requests`) with foreign code: the CNCF CloudEvents SDK 2.x reads the events
   (its current API, `cloudevents.core`, and, for structured mode, its 1.x API kept as
   `cloudevents.v1`) and they
   must hold what the bus says it sent; Standard Webhooks signatures must verify with the
   `standardwebhooks` library and with `svix`'s `Webhook.verify`, and fail on a tampered
   body; GitHub, Stripe-style and Jido signatures are recomputed from their published
   algorithms (stdlib `hmac`); every webhook must carry `webhook-id`.
2. Writes requests made by those libraries to DIR/py/*.json (structured, binary with JSON,
   text and bytes data, batch; Standard Webhooks and Svix signatures, valid and tampered) for
   the Rust test `bus_reads_python_requests`.

Writes DIR/python.count (`passed failed`), prints `python: N passed, M failed`, and exits 1
when any check failed.
"""

import base64
import hashlib
import hmac
import json
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path

import cloudevents
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from cloudevents.v1 import conversion as ce1_conversion
from cloudevents.v1 import http as ce1_http
from dateutil.parser import isoparse
from standardwebhooks.webhooks import Webhook as StandardWebhook
from svix.webhooks import Webhook as SvixWebhook

CORE = ("specversion", "id", "source", "type", "subject", "time", "datacontenttype",
        "dataschema")

passed = 0
failures = []


def check(case, what, fn):
    """Runs one check: `fn` raises (or returns a message) when it fails."""
    global passed
    try:
        problem = fn()
    except Exception as e:  # noqa: BLE001 - any exception is a failed check
        problem = f"{type(e).__name__}: {e}"
        if "-v" in sys.argv:
            traceback.print_exc()
    if problem:
        failures.append(f"{case}: {what}: {problem}")
    else:
        passed += 1


def same_event(get, expect, binary):
    """`get(name)` of a read event against the member of the bus's JSON form."""
    for name, want in expect.items():
        if name == "data":
            got = get("data")
            if got != want:
                return f"data is {got!r}, expected {want!r}"
        elif name == "data_base64":
            got = get("data")
            if got != base64.b64decode(want):
                return f"data is {got!r}, expected the bytes of {want}"
        elif name == "time":
            got = get("time")
            got = got if isinstance(got, datetime) else isoparse(got)
            if got != isoparse(want):
                return f"time is {got!r}, expected {want}"
        else:
            got = get(name)
            if binary and name not in CORE:
                want = str(want)
            if got != want:
                return f"{name} is {got!r}, expected {want!r}"
    if "data" not in expect and "data_base64" not in expect and get("data") is not None:
        return f"data is {get('data')!r}, expected none"
    return None


def core_getter(event):
    def get(name):
        if name == "data":
            return event.get_data()
        if name in CORE:
            return event.get_attributes().get(name)
        return event.get_extension(name)
    return get


def v1_getter(event):
    def get(name):
        if name == "data":
            return event.data
        return event.get(name)
    return get


def check_bus(directory):
    files = sorted((directory / "bus").glob("*.json"))
    if not files:
        failures.append("no requests from the bus in " + str(directory / "bus"))
    for path in files:
        fixture = json.loads(path.read_text())
        case = "bus/" + fixture["case"]
        headers = {name: value for name, value in fixture["headers"]}
        body = base64.b64decode(fixture["body_b64"])
        mode = fixture["mode"]
        expect = fixture["expect"]
        message = ce_http.HTTPMessage(headers=headers, body=body)

        if mode == "batch":
            def read_batch():
                if headers.get("content-type") != "application/cloudevents-batch+json":
                    return f"content-type is {headers.get('content-type')}"
                elements = json.loads(body)
                if len(elements) != len(expect):
                    return f"{len(elements)} events, expected {len(expect)}"
                for i, (element, want) in enumerate(zip(elements, expect)):
                    event = JSONFormat().read(None, json.dumps(element).encode())
                    problem = same_event(core_getter(event), want, False)
                    if problem:
                        return f"event {i}: {problem}"
                return None
            check(case, "cloudevents SDK reads the batch", read_batch)
        else:
            binary = mode == "binary"
            reader = ce_http.from_binary if binary else ce_http.from_structured
            check(case, "cloudevents SDK reads it",
                  lambda: same_event(core_getter(reader(message, JSONFormat())),
                                     expect[0], binary))
            check(case, "cloudevents SDK detects its mode",
                  lambda: same_event(core_getter(ce_http.from_http(message, JSONFormat())),
                                     expect[0], binary))
            # The 1.x API, structured mode only: it predates the binding's percent-encoding
            # of `ce-*` values (CloudEvents 1.0.2) and gives binary text data as bytes.
            if not binary:
                check(case, "cloudevents 1.x API reads it",
                      lambda: same_event(v1_getter(ce1_http.from_http(headers, body)),
                                         expect[0], binary))
            if binary and "datacontenttype" in expect[0]:
                check(case, "Content-Type is datacontenttype as it is",
                      lambda: None if headers.get("content-type") == expect[0]["datacontenttype"]
                      else f"content-type is {headers.get('content-type')!r}")

        signing = fixture["signing"]
        if signing is None:
            continue
        check(case, "carries webhook-id",
              lambda: None if headers.get("webhook-id", "").startswith("msg_")
              else f"webhook-id is {headers.get('webhook-id')!r}")
        scheme, secret = signing["scheme"], signing["secret"]
        tampered = body + b" "
        if scheme == "standard-webhooks":
            check(case, "standardwebhooks verifies it",
                  lambda: StandardWebhook(secret).verify(body, headers, json_parse=False))
            check(case, "svix verifies it", lambda: SvixWebhook(secret).verify(body, headers))

            def refuses(verifier):
                try:
                    verifier.verify(tampered, headers)
                except Exception:  # noqa: BLE001 - any refusal will do
                    return None
                return "a tampered body verified"
            check(case, "standardwebhooks refuses a tampered body",
                  lambda: refuses(StandardWebhook(secret)))
            check(case, "svix refuses a tampered body", lambda: refuses(SvixWebhook(secret)))
        elif scheme == "github":
            def github():
                mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(headers["x-hub-signature-256"], "sha256=" + mac):
                    return "x-hub-signature-256 does not match"
                return None
            check(case, "GitHub's algorithm verifies it", github)
        elif scheme == "stripe":
            def stripe():
                parts = dict(p.split("=", 1) for p in headers["stripe-signature"].split(","))
                signed = parts["t"].encode() + b"." + body
                mac = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(parts["v1"], mac):
                    return "stripe-signature v1 does not match"
                return None
            check(case, "Stripe's algorithm verifies it", stripe)
        elif scheme == "jido":
            def jido():
                signed = headers["x-webhook-timestamp"].encode() + b"." + body
                mac = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(headers["x-webhook-signature"], mac):
                    return "x-webhook-signature does not match"
                return None
            check(case, "Jido's algorithm verifies it", jido)
        elif scheme != "unsigned":
            failures.append(f"{case}: unknown scheme {scheme}")


def expectation(event, binary):
    """What the bus must read from a request made of `event`: its structured JSON members
    (extensions as strings in binary mode)."""
    out = {}
    for name, value in event.get_attributes().items():
        if isinstance(value, datetime):
            value = value.isoformat().replace("+00:00", "Z")
        elif binary and name not in CORE:
            value = str(value)
        out[name] = value
    data = event.get_data()
    if isinstance(data, (bytes, bytearray)):
        out["data_base64"] = base64.b64encode(data).decode()
    elif data is not None:
        out["data"] = data
    return out


def write_python(directory):
    out = directory / "py"
    out.mkdir(parents=True, exist_ok=True)
    when = datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=timezone.utc)

    def event(ident, data, datacontenttype=None, **extensions):
        attributes = {
            "type": "order.placed",
            "source": "/shop eu/ü",
            "id": ident,
            "subject": 'order/7 "x" 100%',
            "time": when,
            "dataschema": "https://example.com/order.json",
            "tenant": "acme corp",
            **extensions,
        }
        if datacontenttype:
            attributes["datacontenttype"] = datacontenttype
        return CloudEvent(attributes, data)

    events = [
        event("json", {"total": 42, "items": ["a", "ü"]}, "application/json", attempt=3),
        # An object: the SDK's binary writer serializes only dicts as JSON (a list would go
        # as its Python repr, `[1, 2.5, None]`, which no JSON reader takes).
        event("json-charset", {"list": [1, 2.5, None]}, "application/json; charset=utf-8"),
        event("text", "hello, wörld", "text/plain; charset=utf-8"),
        event("bytes", bytes([0, 1, 0xFE, 0xFF, 0x80]), "application/octet-stream"),
        event("no-data", None),
    ]

    def write(case, headers, body, expect, signing=None):
        fixture = {
            "case": case,
            "headers": sorted(headers.items()),
            "body_b64": base64.b64encode(body).decode(),
            "expect": expect,
            "signing": signing,
        }
        (out / f"{case}.json").write_text(json.dumps(fixture, indent=1))

    for e in events:
        ident = e.get_id()
        m = ce_http.to_structured(e, JSONFormat())
        write(f"structured-{ident}", m.headers, m.body, [expectation(e, False)])
        m = ce_http.to_binary(e, JSONFormat())
        write(f"binary-{ident}", m.headers, m.body, [expectation(e, True)])

    # The 1.x API's writers.
    legacy = ce1_http.CloudEvent(
        {"type": "order.placed", "source": "/legacy api", "id": "v1", "tenant": "acme"},
        {"k": "ü"},
    )
    want = {"type": "order.placed", "source": "/legacy api", "id": "v1", "tenant": "acme",
            "data": {"k": "ü"}}
    headers, body = ce1_conversion.to_structured(legacy)
    write("v1-structured", dict(headers), body, [want])
    headers, body = ce1_conversion.to_binary(legacy)
    write("v1-binary", dict(headers), body, [want])

    # A batch: the SDK has no batch writer; its JSON format writes each element.
    batch = b"[" + b",".join(JSONFormat().write(e) for e in events) + b"]"
    write("batch", {"content-type": "application/cloudevents-batch+json"}, batch,
          [expectation(e, False) for e in events])

    # Signed by the Python libraries: Standard Webhooks and Svix's header names.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    now = datetime.now(timezone.utc)
    signing = {"scheme": "standard-webhooks", "secret": secret, "valid": True}
    tampered_signing = dict(signing, valid=False)
    m = ce_http.to_structured(events[0], JSONFormat())
    text = m.body.decode()
    signature = StandardWebhook(secret).sign("msg_py1", now, text)
    std_headers = dict(m.headers, **{
        "webhook-id": "msg_py1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    })
    write("signed-standardwebhooks", std_headers, m.body, [expectation(events[0], False)],
          signing)
    write("signed-standardwebhooks-tampered", std_headers, m.body + b" ", [], tampered_signing)
    m = ce_http.to_binary(events[2], JSONFormat())
    signature = SvixWebhook(secret).sign("msg_py2", now, m.body.decode())
    svix_headers = dict(m.headers, **{
        "svix-id": "msg_py2",
        "svix-timestamp": str(int(now.timestamp())),
        "svix-signature": signature,
    })
    write("signed-svix", svix_headers, m.body, [expectation(events[2], True)], signing)
    write("signed-svix-tampered", dict(svix_headers, **{"svix-id": "msg_other"}), m.body, [],
          tampered_signing)
    return len(list(out.glob("*.json")))


def main():
    directory = Path(sys.argv[1])
    print(f"cloudevents {cloudevents.__version__}")
    check_bus(directory)
    written = write_python(directory)
    print(f"wrote {written} requests made by the Python libraries to {directory / 'py'}")
    for failure in failures:
        print("FAILED " + failure, file=sys.stderr)
    (directory / "python.count").write_text(f"{passed} {len(failures)}\n")
    print(f"python: {passed} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
