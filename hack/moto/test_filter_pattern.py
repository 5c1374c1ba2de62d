"""The filter pattern evaluator, on examples from the CloudWatch Logs documentation."""

import pytest

from filter_pattern import PatternError, compile_pattern, split_fields

APACHE = '127.0.0.1 - frank [10/Oct/2000:13:25:15 -0700] "GET /apache_pb.gif HTTP/1.0" 404 1534'


@pytest.mark.parametrize(
    "pattern, message, expected",
    [
        ("", "anything", {}),
        ("ERROR", "[ERROR] Caught IllegalArgumentException", {}),
        ("ERROR", "[INFO] fine", None),
        ("ERROR Exception", "[ERROR] Caught IllegalArgumentException", {}),
        ("ERROR Exception", "[ERROR] Unhandled", None),
        ('"Failed to process"', "ERROR Failed to process the request", {}),
        ("?ERROR ?WARN", "WARN low disk", {}),
        ("?ERROR ?WARN", "INFO all good", None),
        ("ERROR -Exiting", "ERROR Exiting program", None),
        ("ERROR -Exiting", "ERROR Caught", {}),
        ("%user [0-9]+%", "login by user 42", {}),
        ("%user [0-9]+%", "login by user bob", None),
        ('{ $.eventType = "UpdateTrail" }', '{"eventType":"UpdateTrail"}', {}),
        ("{ $.eventType = UpdateTrail }", '{"eventType":"UpdateTrail"}', {}),
        ('{ $.sourceIPAddress != "123.123.*" }', '{"sourceIPAddress":"10.0.0.1"}', {}),
        ('{ $.sourceIPAddress != "123.123.*" }', '{"sourceIPAddress":"123.123.1.1"}', None),
        ("{ $.arrayKey[0] = value }", '{"arrayKey":["value","x"]}', {}),
        ("{ $.objectList[1].id = 2 }", '{"objectList":[{"id":1},{"id":2}]}', {}),
        ("{ $.bandwidth > 75 }", '{"bandwidth":80}', {}),
        ("{ $.bandwidth > 75 }", '{"bandwidth":70}', None),
        ("{ $.latency >= 500 && $.status = 200 }", '{"latency":500,"status":200}', {}),
        ('{ ($.user.id = 1) && ($.users[0].email = "a@b.c") }', '{"user":{"id":1},"users":[{"email":"a@b.c"}]}', {}),
        ('{ $.a = 1 || $.b = "x" }', '{"a":2,"b":"x"}', {}),
        ("{ $.isAdmin IS TRUE }", '{"isAdmin":true}', {}),
        ("{ $.isAdmin IS TRUE }", '{"isAdmin":"true"}', None),
        ("{ $.err IS NULL }", '{"err":null}', {}),
        ("{ $.err NOT EXISTS }", '{"ok":1}', {}),
        ("{ $.err NOT EXISTS }", '{"err":1}', None),
        ('{ $.level = "error" }', "not json", None),
        ("[ip, user, username, timestamp, request, status_code, bytes]", APACHE,
         {"ip": "127.0.0.1", "user": "-", "username": "frank", "timestamp": "10/Oct/2000:13:25:15 -0700",
          "request": "GET /apache_pb.gif HTTP/1.0", "status_code": "404", "bytes": "1534"}),
        ("[ip, user, username, timestamp, request, status_code=4*, bytes]", APACHE.replace("404", "200"), None),
        ("[..., status_code=404, bytes]", APACHE, {"status_code": "404", "bytes": "1534"}),
        ("[ip, ..., bytes>1000]", APACHE, {"ip": "127.0.0.1", "bytes": "1534"}),
        ("[ip, ..., bytes<1000]", APACHE, None),
        ("[ip, user, ..., status_code = 404 || status_code = 410, bytes]", APACHE,
         {"ip": "127.0.0.1", "user": "-", "status_code": "404", "bytes": "1534"}),
        ("[a, b]", "one two three", None),
        ('[a, b="two"]', "one two", {"a": "one", "b": "two"}),
    ],
)
def test_patterns(pattern, message, expected):
    assert compile_pattern(pattern).match(message) == expected


@pytest.mark.parametrize("pattern", ['"open', "{ $.a = ", "{ $.a > x }", "[a, b", "[a, ?b]", "%[%"])
def test_malformed_patterns(pattern):
    with pytest.raises(PatternError):
        compile_pattern(pattern)


def test_split_fields():
    assert split_fields(APACHE) == [
        "127.0.0.1", "-", "frank", "10/Oct/2000:13:25:15 -0700", "GET /apache_pb.gif HTTP/1.0", "404", "1534",
    ]
