"""CloudWatch Logs filter patterns, as subscription filters apply them.

Three syntaxes, as in the CloudWatch Logs documentation:
  terms            ERROR   "disk full"   ?ERROR ?WARN   ERROR -Exiting   %regex%
  JSON             { $.level = "error" && ($.latency > 100 || $.code IS NULL) }
  space-delimited  [ip, user, verb, status=5*, size>1000, ...]
A space-delimited pattern with named fields also yields the event's
`extractedFields` (name -> string value), which CloudWatch Logs adds to each
delivered event.

`compile_pattern(text)` returns an object whose `match(message)` gives None when
the event does not match, else a dict of extracted fields (empty for term and JSON
patterns). Malformed patterns raise `PatternError`, as PutSubscriptionFilter's
InvalidParameterException does.
"""

import fnmatch
import json
import operator
import re


class PatternError(ValueError):
    pass


def compile_pattern(text):
    text = (text or "").strip()
    if not text:
        return _MatchAll()
    if text.startswith("{"):
        return _JsonPattern(text)
    if text.startswith("["):
        return _DelimitedPattern(text)
    return _TermPattern(text)


class _MatchAll:
    def match(self, message):
        return {}


# --- terms -------------------------------------------------------------------


def _split_terms(text):
    """Splits on whitespace, keeping "quoted phrases" and %regex% terms whole."""
    terms, i = [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        start = i
        prefix = ""
        if text[i] in "?-":
            prefix = text[i]
            i += 1
        if i < len(text) and text[i] in "\"%":
            close = text[i]
            j = i + 1
            while j < len(text) and text[j] != close:
                j += 2 if text[j] == "\\" and close == '"' else 1
            if j >= len(text):
                raise PatternError(f"unterminated {close} in filter pattern at {start}")
            body = text[i + 1 : j]
            kind = "regex" if close == "%" else "phrase"
            terms.append((prefix, kind, body.replace('\\"', '"')))
            i = j + 1
        else:
            j = i
            while j < len(text) and not text[j].isspace():
                j += 1
            terms.append((prefix, "word", text[i:j]))
            i = j
    return terms


class _TermPattern:
    def __init__(self, text):
        self.required, self.any_of, self.excluded = [], [], []
        for prefix, kind, body in _split_terms(text):
            if not body:
                raise PatternError("empty term in filter pattern")
            test = _term_test(kind, body)
            {"": self.required, "?": self.any_of, "-": self.excluded}[prefix].append(test)

    def match(self, message):
        if not all(t(message) for t in self.required):
            return None
        if self.any_of and not any(t(message) for t in self.any_of):
            return None
        if any(t(message) for t in self.excluded):
            return None
        return {}


def _term_test(kind, body):
    if kind == "regex":
        try:
            rx = re.compile(body)
        except re.error as e:
            raise PatternError(f"invalid regular expression %{body}%: {e}") from e
        return lambda m: rx.search(m) is not None
    return lambda m: body in m


# --- JSON ---------------------------------------------------------------------

_JSON_TOKEN = re.compile(
    r"""\s*(?:
      (?P<and>&&) | (?P<or>\|\|) | (?P<lp>\() | (?P<rp>\)) |
      (?P<op>!=|<=|>=|=|<|>) |
      (?P<sel>\$(?:\.[A-Za-z0-9_\-@$]+|\[\d+\]|\.\*)*) |
      (?P<str>"(?:[^"\\]|\\.)*") |
      (?P<regex>%[^%]*%) |
      (?P<word>[^\s()&|!=<>"]+)
    )""",
    re.VERBOSE,
)


def _tokenize_json(body):
    tokens, pos = [], 0
    body = body.strip()
    while pos < len(body):
        m = _JSON_TOKEN.match(body, pos)
        if not m or m.end() == pos:
            if body[pos:].strip() == "":
                break
            raise PatternError(f"unexpected text in JSON filter pattern: {body[pos:]!r}")
        kind = m.lastgroup
        tokens.append((kind, m.group(kind)))
        pos = m.end()
        while pos < len(body) and body[pos].isspace():
            pos += 1
    return tokens


_MISSING = object()


def _select(doc, selector):
    value = doc
    for part in re.findall(r"\.([A-Za-z0-9_\-@$]+)|\[(\d+)\]", selector[1:]):
        key, index = part
        if key:
            if not isinstance(value, dict) or key not in value:
                return _MISSING
            value = value[key]
        else:
            i = int(index)
            if not isinstance(value, list) or i >= len(value):
                return _MISSING
            value = value[i]
    return value


_ORDER = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}


def _order_test(op, raw, number, as_number):
    """A numeric comparison; `as_number` turns a field value into a number or None."""
    if number is None:
        raise PatternError(f"{op} needs a number, found {raw}")
    compare = _ORDER[op]
    return lambda v: (n := as_number(v)) is not None and compare(n, number)


def _number(token):
    try:
        return float(token)
    except (TypeError, ValueError):
        return None


class _JsonPattern:
    def __init__(self, text):
        if not text.endswith("}"):
            raise PatternError("a JSON filter pattern must end with }")
        self.tokens = _tokenize_json(text[1:-1])
        self.pos = 0
        self.expr = self._or()
        if self.pos != len(self.tokens):
            raise PatternError(f"unexpected {self.tokens[self.pos][1]!r} in JSON filter pattern")

    def _peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None)

    def _take(self, kind):
        k, v = self._peek()
        if k != kind:
            raise PatternError(f"expected {kind} in JSON filter pattern, found {v!r}")
        self.pos += 1
        return v

    def _or(self):
        left = self._and()
        while self._peek()[0] == "or":
            self.pos += 1
            right = self._and()
            left = (lambda a, b: lambda d: a(d) or b(d))(left, right)
        return left

    def _and(self):
        left = self._unary()
        while self._peek()[0] == "and":
            self.pos += 1
            right = self._unary()
            left = (lambda a, b: lambda d: a(d) and b(d))(left, right)
        return left

    def _unary(self):
        if self._peek()[0] == "lp":
            self.pos += 1
            inner = self._or()
            self._take("rp")
            return inner
        selector = self._take("sel")
        kind, value = self._peek()
        if kind == "word" and value.upper() in ("IS", "NOT"):
            return self._keyword(selector)
        op = self._take("op")
        kind, value = self._peek()
        if kind not in ("str", "word", "regex"):
            raise PatternError(f"expected a value after {selector} {op}")
        self.pos += 1
        return _comparison(selector, op, kind, value)

    def _keyword(self, selector):
        word = self._take("word").upper()
        if word == "NOT":
            if self._take("word").upper() != "EXISTS":
                raise PatternError("expected NOT EXISTS")
            return lambda d: _select(d, selector) is _MISSING
        what = self._take("word").upper()
        expected = {"TRUE": True, "FALSE": False, "NULL": None}
        if what not in expected:
            raise PatternError(f"expected TRUE, FALSE or NULL after IS, found {what}")
        want = expected[what]
        return lambda d: (v := _select(d, selector)) is not _MISSING and v is want and type(v) is type(want)

    def match(self, message):
        try:
            doc = json.loads(message)
        except ValueError:
            return None
        if not isinstance(doc, (dict, list)):
            return None
        return {} if self.expr(doc) else None


def _comparison(selector, op, kind, raw):
    if kind == "regex":
        if op not in ("=", "!="):
            raise PatternError("a regular expression only compares with = or !=")
        rx = re.compile(raw[1:-1])
        hit = lambda v: isinstance(v, str) and rx.search(v) is not None  # noqa: E731
        return (lambda d: hit(_select(d, selector))) if op == "=" else (lambda d: not hit(_select(d, selector)))
    text = json.loads(raw) if kind == "str" else raw
    number = _number(text) if kind == "word" else None
    if op in _ORDER:
        test = _order_test(op, raw, number, lambda v: float(v) if _is_num(v) else None)
        return lambda d: test(_select(d, selector))

    def equal(v):
        if v is _MISSING:
            return False
        if number is not None and _is_num(v):
            return float(v) == number
        if isinstance(v, str):
            return fnmatch.fnmatchcase(v, text) if "*" in text else v == text
        return False

    if op == "=":
        return lambda d: equal(_select(d, selector))
    return lambda d: _select(d, selector) is not _MISSING and not equal(_select(d, selector))


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --- space-delimited ----------------------------------------------------------


def split_fields(message):
    """Splits a message into whitespace-separated fields; "quoted" and [bracketed]
    runs are single fields, without their delimiters."""
    fields, i, n = [], 0, len(message)
    while i < n:
        if message[i].isspace():
            i += 1
            continue
        if message[i] in "\"[":
            close = '"' if message[i] == '"' else "]"
            j = message.find(close, i + 1)
            if j < 0:
                j = n
            fields.append(message[i + 1 : j])
            i = j + 1
        else:
            j = i
            while j < n and not message[j].isspace():
                j += 1
            fields.append(message[i:j])
            i = j
    return fields


_FIELD_CONDITION = re.compile(
    r"""^\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>!=|<=|>=|=|<|>)\s*(?P<value>"(?:[^"\\]|\\.)*"|\S+)\s*$"""
)


class _DelimitedPattern:
    def __init__(self, text):
        if not text.endswith("]"):
            raise PatternError("a space-delimited filter pattern must end with ]")
        self.names = []  # per position: a name, or "..." for any run of fields
        self.conditions = []  # (alternatives, position): each alternative is (name, test)
        for item in _split_commas(text[1:-1]):
            item = item.strip()
            if item == "...":
                self.names.append("...")
                continue
            if not item:
                raise PatternError("empty field in space-delimited filter pattern")
            alternatives = []
            for alt in re.split(r"\|\|", item):
                tests = []
                for part in re.split(r"&&", alt):
                    part = part.strip()
                    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
                        tests.append((part, None))
                        continue
                    m = _FIELD_CONDITION.match(part)
                    if not m:
                        raise PatternError(f"cannot parse field condition {part!r}")
                    tests.append((m["name"], _field_test(m["op"], m["value"])))
                alternatives.append(tests)
            name = alternatives[0][0][0]
            if any(n != name for alt in alternatives for n, _ in alt):
                raise PatternError(f"conditions in {item!r} must all name {name}")
            self.names.append(name)
            self.conditions.append((name, alternatives))

    def match(self, message):
        values = _align(self.names, split_fields(message))
        if values is None:
            return None
        for name, alternatives in self.conditions:
            v = values[name]
            if not any(all(t is None or t(v) for _, t in alt) for alt in alternatives):
                return None
        return values


def _split_commas(body):
    parts, quote, current = [], False, ""
    for ch in body:
        if ch == '"':
            quote = not quote
        if ch == "," and not quote:
            parts.append(current)
            current = ""
            continue
        current += ch
    parts.append(current)
    return parts


def _align(names, fields):
    """Assigns fields to names; each "..." takes any number of fields."""
    def go(ni, fi):
        if ni == len(names):
            return {} if fi == len(fields) else None
        if names[ni] == "...":
            for take in range(len(fields) - fi, -1, -1):
                rest = go(ni + 1, fi + take)
                if rest is not None:
                    return rest
            return None
        if fi >= len(fields):
            return None
        rest = go(ni + 1, fi + 1)
        if rest is None:
            return None
        return {names[ni]: fields[fi], **rest}

    return go(0, 0)


def _field_test(op, raw):
    text = json.loads(raw) if raw.startswith('"') else raw
    number = None if raw.startswith('"') else _number(raw)
    if op in _ORDER:
        return _order_test(op, raw, number, _number)

    def equal(v):
        if number is not None and _number(v) is not None:
            return _number(v) == number
        return fnmatch.fnmatchcase(v, text) if "*" in text else v == text

    return equal if op == "=" else (lambda v: not equal(v))
