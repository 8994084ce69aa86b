"""Family "http": a valid request for a route of the router, then one to three mutations of
its path segments, query parameters, headers or body (about one case in twelve goes as it is).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from urllib.parse import quote

from bench.fuzz import values
from bench.fuzz.fixture import Fixture
from bench.fuzz.routes import Draft
from bench.fuzz.wire import encode_request

BODY_METHODS = ("POST", "PUT", "PATCH")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
           "PROPFIND", "get", "FOO", "G\u00c9T", "X" * 300)


def render(d: Draft) -> bytes:
    body = d.body
    if body is None and d.has_doc:
        body = json.dumps(d.doc, ensure_ascii=d.ascii).encode("utf-8", "surrogatepass")
    headers = list(d.headers)
    if body is not None and d.content_type is not None and d.header("Content-Type") is None:
        headers.append(("Content-Type", d.content_type))
    if body is None and d.method.upper() in BODY_METHODS:
        body = b""
    return encode_request(d.method, d.target, headers, body)


def _pct(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


# Dates a parser of ``YYYY-MM-DDTHH:MM:SS`` may not expect.
ODD_DATES = ("2099-13-45T99:99:99", "9999-12-31T23:59:59", "10000-01-01T00:00:00",
             "2099-02-30T00:00:00", "2099-01-01T23:59:60", "2099-01-01T00:00:00.5",
             "2099-01-01 00:00:00", "2099-01-01T00:00:00Z", "2099-01-01T00:00:00+01:00",
             "0000-01-01T00:00:00", "-2099-01-01T00:00:00", "2099-1-1T0:0:0",
             "\u0662\u0660\u0669\u0669-01-01T00:00:00")


# Path ---------------------------------------------------------------------------------------


def _segment(d: Draft, rng: random.Random) -> int:
    fields = [i for i in d.fields.values() if i < len(d.segments)]
    if fields and rng.random() < 0.7:
        return rng.choice(fields)
    return rng.randrange(len(d.segments))


def path_long(d: Draft, rng: random.Random, fx: Fixture) -> str:
    i = _segment(d, rng)
    d.segments[i] = rng.choice("aZ9._-") * rng.choice((64, 65, 255, 256, 1024, 4096, 9000))
    return f"path: long segment {i}"


def path_unicode(d: Draft, rng: random.Random, fx: Fixture) -> str:
    i = _segment(d, rng)
    extra = rng.choice(values.UNICODE)
    if rng.random() < 0.5:
        d.segments[i] += _pct(extra)
        return f"path: percent-encoded unicode in segment {i}"
    d.segments[i] += extra
    return f"path: raw unicode in segment {i}"


def path_percent(d: Draft, rng: random.Random, fx: Fixture) -> str:
    i = _segment(d, rng)
    junk = rng.choice(("%", "%2", "%zz", "%2F", "%2f", "%00", "%25", "%C0%AF", "%FF", "%ED%A0%80",
                       "%2e%2e", "%2E", "%5C", "%0A", "%0D%0A", "%20", "%u0041", "%%", "+"))
    at = rng.randint(0, len(d.segments[i]))
    d.segments[i] = d.segments[i][:at] + junk + d.segments[i][at:]
    return f"path: {junk!r} in segment {i}"


def path_control(d: Draft, rng: random.Random, fx: Fixture) -> str:
    i = _segment(d, rng)
    char = rng.choice((*values.CONTROL, " ", "#", "?", "\\"))
    d.segments[i] += char
    return f"path: raw {char!r} in segment {i}"


def path_dots(d: Draft, rng: random.Random, fx: Fixture) -> str:
    i = rng.randrange(len(d.segments) + 1)
    dots = rng.choice((".", "..", "...", "%2e", "%2e%2e", ".%2e"))
    d.segments.insert(i, dots)
    _shift(d, i)
    return f"path: {dots!r} segment at {i}"


def path_slashes(d: Draft, rng: random.Random, fx: Fixture) -> str:
    i = rng.randrange(len(d.segments) + 1)
    d.segments.insert(i, "")
    _shift(d, i)
    if rng.random() < 0.3:
        d.segments.insert(i, "")
        _shift(d, i)
    return f"path: empty segment (doubled slash) at {i}"


def path_swap(d: Draft, rng: random.Random, fx: Fixture) -> str:
    i = _segment(d, rng)
    d.segments[i] = rng.choice((
        fx.claim_id, fx.subscription_id, fx.queue, fx.project, "", "-", "_", ".hidden",
        "5b2a8f1e9c3d4e5f6a7b8c9d", (fx.message_ids or ["x"])[0].upper(),
    )) or "x"
    return f"path: other id in segment {i}"


def path_case(d: Draft, rng: random.Random, fx: Fixture) -> str:
    i = rng.randrange(len(d.segments))
    d.segments[i] = d.segments[i].upper() if d.segments[i] != d.segments[i].upper() else (
        d.segments[i].lower())
    return f"path: case of segment {i}"


def path_extra(d: Draft, rng: random.Random, fx: Fixture) -> str:
    if rng.random() < 0.5 and len(d.segments) > 1:
        d.segments.pop()
        d.fields = {k: v for k, v in d.fields.items() if v < len(d.segments)}
        return "path: last segment dropped"
    d.segments.append(rng.choice(("x", "stats", "messages", "claims", "confirm", "..", "")))
    return "path: segment added"


def method_swap(d: Draft, rng: random.Random, fx: Fixture) -> str:
    d.method = rng.choice(METHODS)
    return f"method: {d.method[:20]}"


def _shift(d: Draft, at: int) -> None:
    d.fields = {k: (v + 1 if v >= at else v) for k, v in d.fields.items()}


# Query --------------------------------------------------------------------------------------

_QUERY_KEYS = ("limit", "marker", "detailed", "with_count", "name", "echo", "include_claimed",
               "include_delayed", "ids", "claim_ids", "pop", "claim_id")


def _query_value(rng: random.Random) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return str(values.integer(rng))
    if kind == 1:
        return rng.choice(("1.5", "1e3", "-0", "nan", "inf", "0x10", "1_0", "\u0663", "\uff11",
                           " 5"))
    if kind == 2:
        return ""
    if kind == 3:
        return rng.choice(("%00", "%FF", "%", "%zz", "a%00b", "%ED%A0%80"))
    if kind == 4:
        return _pct(values.text(rng, "fz"))
    if kind == 5:
        return rng.choice(("yes", "TRUE", "2", "on", "off", "t", "ja", "null", "[]"))
    if kind == 6:
        return ",".join(["5b2a8f1e9c3d4e5f6a7b8c9d"] * rng.choice((0, 1, 20, 21, 500)))
    return "x" * rng.choice((257, 8192, 9000))


def _own_keys(d: Draft) -> list[str]:
    """The draft's query keys that a mutation may give odd values: not a long poll's ``wait``
    (an odd value of up to 20 would be a wait past the run's timeout, a false hang)."""
    return [k for k, _ in d.query if k != "wait"]


def query_known(d: Draft, rng: random.Random, fx: Fixture) -> str:
    own = _own_keys(d)
    key = rng.choice(own if own and rng.random() < 0.5 else list(_QUERY_KEYS))
    d.query = [(k, v) for k, v in d.query if k != key] + [(key, _query_value(rng))]
    return f"query: odd {key}"


def query_unknown(d: Draft, rng: random.Random, fx: Fixture) -> str:
    key = rng.choice(("fz", "_default_message_ttl", "description", "a.b", "$gt", "%00", "",
                      _pct(values.text(rng, "k"))))
    d.query.append((key, _query_value(rng)))
    return f"query: unknown key {key[:20]!r}"


def query_repeat(d: Draft, rng: random.Random, fx: Fixture) -> str:
    key = rng.choice(_own_keys(d) or list(_QUERY_KEYS))
    d.query += [(key, _query_value(rng)) for _ in range(rng.randint(1, 3))]
    return f"query: {key} repeated"


def query_shape(d: Draft, rng: random.Random, fx: Fixture) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        d.query.append((rng.choice(_QUERY_KEYS), None))
        return "query: key without '='"
    if kind == 1:
        d.query += [(f"k{i}", str(i)) for i in range(rng.choice((50, 600)))]
        return "query: many parameters"
    if kind == 2:
        d.query.append(("&&", "=="))
        return "query: stray separators"
    d.query.append((rng.choice(_QUERY_KEYS), rng.choice(("\x00", "\x7f", "é", "a b", "#"))))
    return "query: raw odd byte"


# Headers ------------------------------------------------------------------------------------


def header_client_id(d: Draft, rng: random.Random, fx: Fixture) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        d.drop_header("Client-ID")
        return "header: no Client-ID"
    value = rng.choice((
        "", "not-a-uuid", fx.client_id.upper(), fx.client_id.replace("-", ""),
        fx.client_id + " ", fx.client_id + "0", fx.client_id[:-1], "{" + fx.client_id + "}",
        "\u0663" * 32, "00000000-0000-0000-0000-000000000000", fx.client_id.replace("-", "", 1),
        "urn:uuid:" + fx.client_id, "x" * 40000,
    ))
    if kind == 1:
        d.set_header("Client-ID", value)
        return f"header: Client-ID {value[:40]!r}"
    d.headers.append(("Client-ID", value))
    return "header: two Client-IDs"


def header_project(d: Draft, rng: random.Random, fx: Fixture) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        d.drop_header("X-Project-ID")
        return "header: no X-Project-ID"
    if kind == 1:
        d.headers.append(("X-Project-ID", fx.project + "-other"))
        return "header: two X-Project-IDs"
    value = rng.choice(("", " ", "p" * 256, "p" * 257, "p" * 20000, "\u00e9t\u00e9", "😀",
                        fx.project.upper(), fx.project + "\u00a0", "\t" + fx.project))
    if kind == 2:
        d.set_header("X-Project-ID", value)
        return f"header: X-Project-ID {value[:40]!r}"
    raw = rng.choice((b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"))
    d.set_header("X-Project-ID", fx.project.encode() + raw)
    return f"header: X-Project-ID with bytes {raw!r}"


def header_accept(d: Draft, rng: random.Random, fx: Fixture) -> str:
    name = rng.choice(("Accept", "Content-Type"))
    value = rng.choice((
        "text/plain", "application/*", "*/*;q=0", ";;;", "application/json; q=abc",
        "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
        "application/json; charset=latin-1", "application/json-home", "", "*", "x" * 5000,
        "application/openstack-messaging-v2.0-json-patch", "application/msgpack",
    ))
    if name == "Content-Type":
        d.content_type = value if rng.random() < 0.8 else None
    else:
        d.set_header(name, value)
    return f"header: {name} {value[:40]!r}"


def header_signature(d: Draft, rng: random.Random, fx: Fixture) -> str:
    grant = dict(fx.signed) or {"URL-Signature": "0" * 64, "URL-Expires": "2099-01-01T00:00:00",
                                 "URL-Methods": "GET", "URL-Paths": "/v2/queues/x/messages"}
    key = rng.choice(list(grant))
    grant[key] = rng.choice(("", "0" * 64, "zz", "0", "GET,POST,,", "x" * 3000, "/v2/queues",
                             "1e10", "../" * 10, "\u00e9", *ODD_DATES))
    if rng.random() < 0.3:
        grant.pop(rng.choice(list(grant)))
    for name, value in grant.items():
        d.set_header(name, value)
    return f"header: signed-URL set, odd {key}"


def header_roles(d: Draft, rng: random.Random, fx: Fixture) -> str:
    value = rng.choice(("admin", "ADMIN", " admin ", "admin,admin", "reader,admin", ",", "",
                        "a" * 10000, "\u0430dmin", "admin\u200b"))
    d.set_header("X-Roles", value)
    return f"header: X-Roles {value[:20]!r}"


def header_misc(d: Draft, rng: random.Random, fx: Fixture) -> str:
    kind = rng.randrange(6)
    if kind == 0:
        d.headers += [(f"X-Fz-{i}", "v") for i in range(rng.choice((99, 101, 300)))]
        return "header: many fields"
    if kind == 1:
        d.headers.append(("X-Fz", "v" * rng.choice((8000, 33000, 140000))))
        return "header: huge field"
    if kind == 2:
        d.headers.append(("X-Auth-Token", rng.choice(("", "x" * 5000, "gAAAA", "\u00e9", "a b"))))
        return "header: X-Auth-Token"
    if kind == 3:
        d.headers.append(("Expect", "100-continue"))
        return "header: Expect 100-continue"
    if kind == 4:
        d.headers.append(("Content-Encoding", rng.choice(("gzip", "br", "identity, x"))))
        return "header: Content-Encoding"
    d.headers.append((rng.choice(("X Fz", "X-Fz\u00e9", "(x)", "X-Fz\t")), "v"))
    return "header: odd field name"


# Body ---------------------------------------------------------------------------------------


def body_doc(d: Draft, rng: random.Random, fx: Fixture) -> str:
    if rng.random() < 0.1:
        d.ascii = True
    if not d.has_doc:
        d.has_doc, d.doc = True, values.scalar(rng)
        return "body: a body where none is expected"
    d.doc, label = values.mutate_doc(d.doc, rng)
    return f"body: {label}"


def body_date(d: Draft, rng: random.Random, fx: Fixture) -> str:
    if isinstance(d.doc, dict) and "expires" in d.doc:
        d.doc = {**d.doc, "expires": rng.choice((*ODD_DATES, 4102444800, None, ""))}
        return "body: odd expires"
    return body_doc(d, rng, fx)


def body_bytes(d: Draft, rng: random.Random, fx: Fixture) -> str:
    raw = json.dumps(d.doc if d.has_doc else {"fz": 1}, ensure_ascii=False).encode(
        "utf-8", "surrogatepass")
    kind = rng.randrange(9)
    if kind == 0:
        d.body = raw[: rng.randint(0, max(0, len(raw) - 1))]
        return "body: truncated JSON"
    if kind == 1:
        at = rng.randint(0, len(raw))
        d.body = raw[:at] + rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                        b"\xc0\xaf", b"\x00")) + raw[at:]
        return "body: invalid UTF-8"
    if kind == 2:
        pad = rng.choice((65537, 131073, 262145, 1_100_000))
        d.body = b'{"messages": [{"body": "' + b"x" * pad + b'"}]}'
        return f"body: oversized ({pad} bytes)"
    if kind == 3:
        d.body = rng.choice((b"", b"null", b"[]", b'""', b"0", b"{}", b"\xef\xbb\xbf{}",
                             b"{} {}", b"{,}", b'{"a":1,"a":2}', b"NaN", b"[1e999]",
                             b'{"x": -0.0e-400}', b"1" * 5000, b'"\\ud800"',
                             b'{"\\u0000": "\\u0000"}'))
        return f"body: literal {d.body[:30]!r}"
    if kind == 4:
        depth = rng.choice((32, 33, 34, 10_000))
        d.body = b"[" * depth + b"]" * depth
        return f"body: {depth} nested arrays"
    if kind == 5:
        d.body = raw.replace(b"60", b"1" + b"0" * rng.choice((20, 400)), 1)
        return "body: integer past 64 bits"
    if kind == 6:
        d.body = raw.replace(b"60", rng.choice((b"60.0", b"6e1", b"Infinity", b"-NaN")), 1)
        return "body: odd number literal"
    if kind == 7:
        d.body = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
        return "body: random bytes"
    d.body = raw.replace(b'"', b"'")
    return "body: single quotes"


Mutator = Callable[[Draft, random.Random, Fixture], str]

FAMILIES: dict[str, tuple[Mutator, ...]] = {
    "path": (path_long, path_unicode, path_percent, path_control, path_dots, path_slashes,
             path_swap, path_case, path_extra, method_swap),
    "query": (query_known, query_unknown, query_repeat, query_shape),
    "headers": (header_client_id, header_project, header_accept, header_signature,
                header_roles, header_misc),
    "body": (body_doc, body_doc, body_date, body_bytes),
}


def mutate(d: Draft, rng: random.Random, fx: Fixture) -> list[str]:
    """Apply 0 (one case in twelve) to 3 mutations; the labels of what was done."""
    if rng.random() < 1 / 12:
        return ["valid"]
    count = rng.choices((1, 2, 3), weights=(6, 3, 1))[0]
    labels = []
    for _ in range(count):
        family = rng.choices(list(FAMILIES), weights=(3, 2, 3, 3))[0]
        labels.append(rng.choice(FAMILIES[family])(d, rng, fx))
    _contain_pool_uri(d, fx)
    return labels


def _contain_pool_uri(d: Draft, fx: Fixture) -> None:
    """A pool's SQLite URI makes the store create its file: a mutated one (a prefix of the
    path, another case) must not name a file outside the fixture's pool folder."""
    if not isinstance(d.doc, dict):
        return
    folder = fx.pool_uri.rsplit("/", 1)[0] + "/" if fx.pool_uri else None
    uri = d.doc.get("uri")
    if isinstance(uri, str) and "sqlite" in uri.lower() and (
            folder is None or not uri.startswith(folder) or ".." in uri):
        d.doc = {**d.doc, "uri": fx.pool_uri}
