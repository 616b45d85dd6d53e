"""abnf — the grammar of docs/PROTOCOL.md, read from its ```abnf blocks and
turned into regular expressions, so that the checker and the docs test
hold wire values to the document's own rules, not to a hand copy.

RFC 5234 with RFC 7405's %s/%i: rules, "=" and "=/", alternation,
concatenation, repetition (n, *, n*m), groups, options, char-vals
(case-insensitive unless %s), num-vals (%x, %d, %b; ranges and dotted
strings) and comments. Prose values (<...>) and recursive rules are not
supported: the protocol's grammar needs neither, and a rule that uses one
is reported as an error rather than approximated."""

import re

# RFC 5234 appendix B.1, the ones the document may use without defining
CORE = {
    "ALPHA": "[A-Za-z]",
    "BIT": "[01]",
    "CHAR": "[\\x01-\\x7f]",
    "CR": "\\r",
    "CRLF": "\\r\\n",
    "CTL": "[\\x00-\\x1f\\x7f]",
    "DIGIT": "[0-9]",
    "DQUOTE": '"',
    "HEXDIG": "[0-9A-Fa-f]",
    "HTAB": "\\t",
    "LF": "\\n",
    "OCTET": "[\\x00-\\xff]",
    "SP": " ",
    "VCHAR": "[\\x21-\\x7e]",
    "WSP": "[ \\t]",
}


class AbnfError(Exception):
    pass


TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>;[^\n]*)
  | (?P<defas>=/|=)
  | (?P<repeat>\d*\*\d*|\d+)
  | (?P<name>[A-Za-z][A-Za-z0-9-]*)
  | (?P<charval>%[si]"[^"]*"|"[^"]*")
  | (?P<numval>%[xdb][0-9A-Fa-f]+(?:(?:\.[0-9A-Fa-f]+)+|-[0-9A-Fa-f]+)?)
  | (?P<prose><[^>]*>)
  | (?P<punct>[/()\[\]])
""", re.X)


def _tokens(text):
    pos, out = 0, []
    while pos < len(text):
        m = TOKEN_RE.match(text, pos)
        if not m:
            raise AbnfError("cannot read %r" % text[pos:pos + 30])
        pos = m.end()
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        if kind == "prose":
            raise AbnfError("prose value %s is not supported" % m.group())
        out.append((kind, m.group()))
    return out


def _uncomment(line):
    """line without its comment (a ";" outside a quoted string)."""
    quoted = False
    for i, c in enumerate(line):
        if c == '"':
            quoted = not quoted
        elif c == ";" and not quoted:
            return line[:i]
    return line


def split_rules(block):
    """[(name, defined-as, text)] of a block: a rule starts in column 0,
    indented lines continue it."""
    rules, cur = [], None
    for line in block.split("\n"):
        bare = _uncomment(line).rstrip()
        if not bare.strip():
            continue
        if line[0] in " \t":
            if cur is None:
                raise AbnfError("continuation without a rule: %r" % line)
            cur[2] += " " + bare.strip()
            continue
        m = re.match(r"([A-Za-z][A-Za-z0-9-]*)\s*(=/|=)\s*(.*)$", bare)
        if not m:
            raise AbnfError("not a rule: %r" % line)
        cur = [m.group(1), m.group(2), m.group(3)]
        rules.append(cur)
    return [tuple(r) for r in rules]


def _num_regex(tok):
    base = {"x": 16, "d": 10, "b": 2}[tok[1]]
    body = tok[2:]

    def ch(v):
        return "\\x%02x" % v if v < 256 else chr(v)
    if "-" in body:
        lo, hi = (int(x, base) for x in body.split("-"))
        return "[%s-%s]" % (ch(lo), ch(hi))
    return "".join(ch(int(x, base)) for x in body.split("."))


class Grammar:
    """Rules by lowercase name (ABNF names are case-insensitive), each as
    its token list; regex(name) the anchored-free regex of a rule."""

    def __init__(self):
        self.rules = {}     # lower name -> (name, tokens)
        self.where = {}     # lower name -> where it was defined
        self._cache = {}

    def add_block(self, block, where=""):
        for name, defas, text in split_rules(block):
            key = name.lower()
            toks = _tokens(text)
            if defas == "=/":
                if key not in self.rules:
                    raise AbnfError("%s: =/ for undefined rule %s" % (where, name))
                self.rules[key] = (name, self.rules[key][1] + [("punct", "/")] + toks)
                continue
            if key in self.rules or key.upper() in CORE:
                raise AbnfError("%s: rule %s defined again (first: %s)"
                                % (where, name, self.where.get(key, "RFC 5234 core")))
            self.rules[key] = (name, toks)
            self.where[key] = where

    def undefined(self):
        """Names used but defined nowhere."""
        out = set()
        for _, toks in self.rules.values():
            for kind, val in toks:
                if kind == "name" and val.lower() not in self.rules and val.upper() not in CORE:
                    out.add(val)
        return sorted(out)

    def regex(self, name, _stack=()):
        key = name.lower()
        if name.upper() in CORE and key not in self.rules:
            return CORE[name.upper()]
        if key in self._cache:
            return self._cache[key]
        if key not in self.rules:
            raise AbnfError("rule %s is not defined" % name)
        if key in _stack:
            raise AbnfError("rule %s is recursive" % name)
        toks = self.rules[key][1]
        rx, rest = self._alternation(toks, 0, _stack + (key,))
        if rest != len(toks):
            raise AbnfError("rule %s: unexpected %r" % (name, toks[rest][1]))
        self._cache[key] = rx
        return rx

    def matches(self, name, text):
        return re.fullmatch(self.regex(name), text, re.S) is not None

    # recursive descent over the tokens of one rule
    def _alternation(self, toks, i, stack):
        alts = []
        rx, i = self._concatenation(toks, i, stack)
        alts.append(rx)
        while i < len(toks) and toks[i] == ("punct", "/"):
            rx, i = self._concatenation(toks, i + 1, stack)
            alts.append(rx)
        return ("(?:%s)" % "|".join(alts) if len(alts) > 1 else alts[0]), i

    def _concatenation(self, toks, i, stack):
        parts = []
        while i < len(toks) and toks[i] not in (("punct", "/"), ("punct", ")"),
                                                ("punct", "]")):
            rx, i = self._repetition(toks, i, stack)
            parts.append(rx)
        if not parts:
            raise AbnfError("empty concatenation")
        return "".join(parts), i

    def _repetition(self, toks, i, stack):
        lo, hi = 1, 1
        if toks[i][0] == "repeat":
            r = toks[i][1]
            if "*" in r:
                a, b = r.split("*")
                lo, hi = int(a or 0), (int(b) if b else None)
            else:
                lo = hi = int(r)
            i += 1
        rx, i = self._element(toks, i, stack)
        if (lo, hi) == (1, 1):
            return rx, i
        return "(?:%s){%d,%s}" % (rx, lo, "" if hi is None else hi), i

    def _element(self, toks, i, stack):
        kind, val = toks[i]
        if kind == "name":
            return "(?:%s)" % self.regex(val, stack), i + 1
        if kind == "charval":
            sensitive = val.startswith("%s")
            text = val[val.index('"') + 1:-1]
            lit = re.escape(text)
            return (lit if sensitive or not re.search("[A-Za-z]", text)
                    else "(?i:%s)" % lit), i + 1
        if kind == "numval":
            return _num_regex(val), i + 1
        if val in ("(", "["):
            close = ")" if val == "(" else "]"
            rx, j = self._alternation(toks, i + 1, stack)
            if j >= len(toks) or toks[j] != ("punct", close):
                raise AbnfError("missing %s" % close)
            return ("(?:%s)" % rx if val == "(" else "(?:%s)?" % rx), j + 1
        raise AbnfError("unexpected %r" % val)


def abnf_blocks(markdown):
    """[(heading, block text)] of the ```abnf blocks of a markdown text."""
    out, heading = [], ""
    for m in re.finditer(r"(?ms)^(#+ [^\n]*)$|^```abnf\n(.*?)^```", markdown):
        if m.group(1):
            heading = m.group(1).lstrip("# ").strip()
        else:
            out.append((heading, m.group(2)))
    return out


def protocol_grammar(markdown):
    """The Grammar of every ```abnf block of the document."""
    g = Grammar()
    for heading, block in abnf_blocks(markdown):
        g.add_block(block, heading)
    return g
