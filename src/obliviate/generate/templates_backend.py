"""``templates``: an offline, seeded stand-in for the papers' data generators (not a language model).

ULMR writes its rewrites and negative responses with Llama-3-8B-Instruct, SNAP its negative
instructions with GPT-4 and its obliterated responses with GPT-3.5. Neither runs offline, and
the small local models write poor data (they answer instead of refusing, or repeat the
instruction). :class:`TemplatesGenerator` answers the question the papers' results depend on —
*does the method forget when its training data is as good as theirs?* — by writing that data
from curated templates (``template_bank.json``) instead of a model:

* it **recognises** which of the project's verbatim prompts it was sent (one recogniser per
  prompt file in ``obliviate/prompts``, built from the file's fixed text, see :func:`recognisers`)
  and extracts its slots (the instruction, the target, the number of questions asked);
* ULMR Table 1 (rewrite): a paraphrase of the instruction by rules (interrogative re-orderings
  such as "Where was X born?" → "What is the birthplace of X?", embedded questions "Could you
  tell me where X was born?", wh-word swaps, a small synonym dictionary, wrappers);
* ULMR Table 2 (negative response) and SNAP Appendix E (obliterated response): a refusal from
  the bank (ULMR's "not available in my knowledge base", TOFU's ten "I don't know" answers,
  SNAP's "I do not have access to information about ..."), naming the subject of the question
  when one is found;
* SNAP Table 7 (negative instructions, per category; the Marvel retaining prompts): as many
  distinct questions as asked, from per-category templates, as a numbered list; "Generate 30
  more questions." continues the chat without repeating a question (when the bank runs out the
  answer holds no list and the augmenter stops that chat);
* SNAP's "List the top k individuals/organizations": the stand-in has no world knowledge; it
  lists the names the bank's ``entities`` map (or an ``entities=`` file) gives for the target,
  or names found in other turns of the prompt, and otherwise an answer without a list (the
  augmenter then has no related entity: give them with ``--related``).

A prompt that opens with the packaged few-shot demonstrations (``few_shot`` > 0,
:mod:`obliviate.augment.few_shot`) is answered as the verbatim prompt after them: the stand-in
needs no demonstrations, and its output does not depend on them.

Anything else (a bare question such as SNAP's retaining questions, any other prompt) raises
:class:`PromptNotRecognised` naming the prompt's first line: the stand-in never invents an
answer. Retaining answers should come from the model being unlearned (``augment snap
--answer-generator``).

Every output is a pure function of (bank, generator seed, prompt, decoding seed when sampling,
the index of an identical prompt within one call): the same seed gives the same data, another
seed other phrasings and another choice and order of questions. Temperature 0 behaves like
greedy decoding (the decoding seed and repeats of a prompt do not matter).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Sequence

from .base import GenerationParams, Messages, StreamingGenerator

BANK_FILE = "template_bank.json"

#: (prompt file stem, kind, category) — one recogniser per packaged prompt file.
PROMPT_KINDS: tuple[tuple[str, str, str | None], ...] = (
    ("ulmr_prompt_rewrite", "ulmr_rewrite", None),
    ("ulmr_negative_prompt", "ulmr_negative", None),
    ("snap_negative_general", "snap_questions", "General"),
    ("snap_negative_5w1h", "snap_questions", "5W1H"),
    ("snap_negative_relational", "snap_questions", "Relational"),
    ("snap_negative_open_ended", "snap_questions", "Open-Ended"),
    ("snap_negative_implicit", "snap_questions", "Implicit"),
    ("snap_negative_multi_hop", "snap_questions", "Multi-Hop"),
    ("snap_retain_marvel_general", "marvel_questions", "General"),
    ("snap_retain_marvel_5w1h", "marvel_questions", "5W1H"),
    ("snap_retain_marvel_relational", "marvel_questions", "Relational"),
    ("snap_retain_marvel_open_ended", "marvel_questions", "Open-Ended"),
    ("snap_retain_marvel_implicit", "marvel_questions", "Implicit"),
    ("snap_related_individuals", "related", "individuals"),
    ("snap_related_organizations", "related", "organizations"),
    ("snap_obliterated", "obliterated", None),
    ("snap_more", "more", None),
)


class PromptNotRecognised(ValueError):
    """The templates stand-in got a prompt that is none of the project's templated prompts."""


# ---------------------------------------------------------------------------------------------
# recognisers
# ---------------------------------------------------------------------------------------------
def _ws(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class Recogniser:
    """Matches one prompt file's text with its slots as regex groups.

    Built from the file itself: the fixed text must match exactly (whitespace runs compared as
    one space); ``%s`` becomes the ``target`` slot (a repeated ``%s`` must repeat the same
    value), ``%d`` the ``k`` slot, ``{instruction}`` the ``instruction`` slot and the first
    number in the text the ``n`` slot (how many questions are asked). The obliterated prompt is
    followed by the instruction it is about (``instruction`` slot).
    """

    stem: str
    kind: str
    category: str | None
    pattern: re.Pattern
    fixed_chars: int

    def match(self, text: str) -> dict | None:
        """The slot values when ``text`` is this prompt filled in, else None."""
        m = self.pattern.fullmatch(_ws(text))
        if not m:
            return None
        slots = {k: v for k, v in m.groupdict().items() if v is not None}
        for key in ("n", "k"):
            if key in slots:
                slots[key] = int(slots[key])
        return slots


def _build(stem: str, kind: str, category: str | None, template: str) -> Recogniser:
    t = _ws(template)
    parts: list[str] = []
    fixed = 0
    seen_target = seen_n = False
    pos = 0
    for m in re.finditer(r"%s|%d|\{instruction\}|\d+", t):
        lit = t[pos:m.start()]
        parts.append(re.escape(lit))
        fixed += len(lit)
        tok = m.group(0)
        if tok == "%s":
            parts.append("(?P=target)" if seen_target else "(?P<target>.+?)")
            seen_target = True
        elif tok == "%d":
            parts.append(r"(?P<k>\d+)")
        elif tok == "{instruction}":
            parts.append("(?P<instruction>.*?)")
        elif not seen_n:
            parts.append(r"(?P<n>\d+)")
            seen_n = True
        else:
            parts.append(r"\d+")
        pos = m.end()
    lit = t[pos:]
    parts.append(re.escape(lit))
    fixed += len(lit)
    rx = "".join(parts)
    if kind == "obliterated":
        rx += r" (?P<instruction>.+)"
    return Recogniser(stem, kind, category, re.compile(rx, re.DOTALL), fixed)


def _load_prompt_file(stem: str) -> str:
    return resources.files("obliviate").joinpath("prompts", f"{stem}.txt").read_text(encoding="utf-8")


_RECOGNISERS: list[Recogniser] | None = None


def recognisers() -> list[Recogniser]:
    """One :class:`Recogniser` per prompt file of :data:`PROMPT_KINDS`, built from the packaged files."""
    global _RECOGNISERS
    if _RECOGNISERS is None:
        _RECOGNISERS = [_build(stem, kind, cat, _load_prompt_file(stem)) for stem, kind, cat in PROMPT_KINDS]
    return _RECOGNISERS


@dataclass(frozen=True)
class Recognised:
    """Which prompt a text is (``stem``, ``kind``, ``category``) and its slot values."""

    stem: str
    kind: str
    category: str | None
    slots: dict = field(default_factory=dict)


def recognise(text: str) -> Recognised | None:
    """The templated prompt ``text`` is, or None.

    When several templates match (the General question prompt is a prefix of the 5W1H one, with
    the rest absorbed by the target slot), the one with the most fixed text wins.
    """
    best: tuple[int, Recognised] | None = None
    for r in recognisers():
        slots = r.match(text)
        if slots is not None and (best is None or r.fixed_chars > best[0]):
            best = (r.fixed_chars, Recognised(r.stem, r.kind, r.category, slots))
    return best[1] if best else None


# ---------------------------------------------------------------------------------------------
# the bank
# ---------------------------------------------------------------------------------------------
def load_bank(path: str | Path | None = None, entities: str | Path | None = None) -> dict:
    """The template bank (the packaged ``template_bank.json``, or ``path``), with the ``entities``
    file's per-target entries (``{"<target>": {"related": [...], "descriptions": [...]}}``) merged in."""
    if path is None:
        bank = json.loads(resources.files("obliviate").joinpath("generate", BANK_FILE).read_text(encoding="utf-8"))
    else:
        bank = json.loads(Path(path).read_text(encoding="utf-8"))
    for key in ("refusals", "paraphrase", "questions", "implicit_descriptions"):
        if key not in bank:
            raise ValueError(f"template bank {path or BANK_FILE}: missing section {key!r}")
    bank.setdefault("entities", {})
    bank.setdefault("marvel", {"characters": [], "questions": {}})
    if entities is not None:
        extra = json.loads(Path(entities).read_text(encoding="utf-8"))
        if not isinstance(extra, dict):
            raise ValueError(f"entities file {entities}: expected a mapping target -> {{related, descriptions}}")
        for name, entry in extra.items():
            if not isinstance(entry, dict):
                raise ValueError(f"entities file {entities}: entry {name!r} must be a mapping")
            bank["entities"][name] = entry
    return bank


def _rng(*parts: Any) -> random.Random:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


_ALT = re.compile(r"\{([^{}]*\|[^{}]*)\}")


def _alternatives(text: str, rng: random.Random) -> str:
    """Resolve ``{a|b|c}`` choices."""
    return _ALT.sub(lambda m: rng.choice(m.group(1).split("|")), text)


def possessive(name: str) -> str:
    """``Stephen King`` → ``Stephen King's``; ``Serena Williams`` → ``Serena Williams'``."""
    return name + ("'" if name.endswith("s") else "'s")


def initials(name: str) -> str:
    """``Stephen King`` → ``S. K.``; ``Confucius`` → ``C.``."""
    return " ".join(w[0].upper() + "." for w in re.findall(r"[A-Za-z][\w'’-]*", name)) or name[:1] + "."


def _entity(bank: dict, target: str) -> dict:
    low = target.strip().lower()
    for name, entry in bank.get("entities", {}).items():
        if name.strip().lower() == low:
            return entry
    return {}


# ---------------------------------------------------------------------------------------------
# subjects named in a question
# ---------------------------------------------------------------------------------------------
_QUOTED = re.compile(r"[\"“”‘’]([^\"“”‘’]*)[\"“”‘’]|(?<!\w)'([^']*)'(?!\w)")
_CAP_SPAN = re.compile(r"[A-Z][\w'’\-.]*(?:\s+(?:(?:de|da|van|von|del|al|bin|la|le)\s+)?[A-Z][\w'’\-.]*)*")
_SPAN_STOP = frozenset("""what who whom whose where when why how which is are was were do does did can could will
would should may might has have had in on at for from by to the a an of and or but if please tell describe explain
name list give provide discuss i you he she it they we this that these those there here regarding through
according as with about after before during since""".split())


def subject_of(question: str) -> str | None:
    """The main named subject of a question, or None.

    Capitalised word runs outside quotes, minus a leading question/function word; a run
    followed by ``'s`` (the owner of what is asked) wins, then the longest run of two or more
    words. A place introduced by "in"/"at"/"from" is not taken as the subject.
    """
    text = _QUOTED.sub(lambda m: " " * len(m.group(0)), question)
    best: tuple[int, str] | None = None
    for m in _CAP_SPAN.finditer(text):
        words = m.group(0).split()
        start = m.start()
        while words and words[0].lower().strip(".") in _SPAN_STOP:
            start += len(words[0]) + 1
            words = words[1:]
        if not words:
            continue
        span = " ".join(words).rstrip(".")
        poss = bool(re.match(r"['’]s?\b|['’]\s", text[start + len(span):start + len(span) + 3]))
        span = re.sub(r"['’]s?$", "", span)
        before = text[:start].rstrip().split()
        place = bool(before) and before[-1].lower().strip(",") in ("in", "at", "from", "near", "to", "into")
        if place or (len(words) == 1 and not poss) or not any(len(w.strip(".")) > 1 for w in words):
            continue  # a place, a lone capitalised word, or bare initials ("S. K.")
        score = (100 if poss else 0) + len(words)
        if best is None or score > best[0]:
            best = (score, span)
    return best[1] if best else None


# ---------------------------------------------------------------------------------------------
# paraphrasing (ULMR Table 1)
# ---------------------------------------------------------------------------------------------
_WH = ("what", "who", "whom", "whose", "where", "when", "why", "how", "which")
_BE = frozenset({"is", "are", "was", "were"})
_HAVE = frozenset({"has", "have", "had"})
_DO = frozenset({"do", "does", "did"})
_MODAL = frozenset({"can", "could", "will", "would", "should", "may", "might", "must", "shall"})
_AUX = _BE | _HAVE | _DO | _MODAL
_IRREGULAR = frozenset("""born known written won made done given taken seen been become begun grown held led met read
run said told thought brought built bought caught drawn driven eaten fallen felt found forgotten gotten got heard
hidden kept left lost meant paid put risen sold sent set shown spent spoken stood struck sung taught understood worn
chosen drunk flown forgiven frozen ridden rung shaken sworn thrown woken""".split())
_SUBJ_ADJ = frozenset("""unusual special interesting unique notable remarkable significant important different
known new common distinctive noteworthy surprising so""".split())
_PREP_WH = re.compile(r"^(In|On|At|For|From|To|With|By|Through|Under|During)\s+(which|what|whom|whose)\b", re.I)
_FAMOUS = re.compile(r"\b((?:(?:most|best|widely|well|primarily|mainly|chiefly|also|often|commonly|particularly)\s+)*"
                     r"(?:known|famous|recognized|recognised|celebrated|renowned|remembered|noted)\b)")
_WORD_RE = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")


def _words(s: str) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(s)]


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def similarity(a: str, b: str) -> float:
    """Word-level LCS over the longer length (1.0: the same words in the same order)."""
    wa, wb = _words(a), _words(b)
    if not wa or not wb:
        return 0.0
    return _lcs(wa, wb) / max(len(wa), len(wb))


def _lower_first(s: str) -> str:
    w = s.split(" ", 1)[0]
    if w.lower().strip(",") in _WH or w.lower() in _AUX or w.lower() in _SPAN_STOP:
        return s[:1].lower() + s[1:]
    return s


def _upper_first(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fix_articles(s: str) -> str:
    def fix(m: re.Match) -> str:
        art, word = m.group(1), m.group(2)
        want = "an" if word[0].lower() in "aeiou" else "a"
        if art[0].isupper():
            want = want.capitalize()
        return f"{want} {word}"

    return re.sub(r"\b([Aa]n?) ([A-Za-z][\w-]*)", fix, s)


def _is_participle(w: str) -> bool:
    return w.islower() and (w in _IRREGULAR or (len(w) > 4 and w.endswith("ed")))


def _insert_before_participle(words: list[str], aux: str) -> list[str] | None:
    for i, w in enumerate(words):
        if i > 0 and _is_participle(w.strip(",;:")):
            return words[:i] + [aux] + words[i:]
    return None


def embedded_question(question: str) -> str | None:
    """The question as an embedded clause ("where X was born"), or None when unsure.

    Handles wh-questions and yes/no questions with *be* or *have* (the auxiliary moves after the
    subject: before the first participle, before "known for", or to the end) and subject
    wh-questions ("What makes X unique?" → "what makes X unique"). Questions with do-support or
    a modal are left alone (they would need verb inflection).
    """
    q = question.strip()
    if not q.endswith("?") or q.count("?") != 1:
        return None
    body = q[:-1].strip()
    words = body.split()
    if len(words) < 2:
        return None
    m = _PREP_WH.match(body)
    if m:
        head_len = 2
    elif words[0].lower() in _WH:
        head_len = 1
    elif words[0].lower() in _BE | _HAVE:
        aux, rest = words[0].lower(), words[1:]
        moved = _insert_before_participle(rest, aux) if aux in _HAVE else None
        if moved is None and aux in _BE:
            fm = _FAMOUS.search(" ".join(rest))
            if fm and fm.start() > 0:
                moved = (" ".join(rest)[:fm.start()] + aux + " " + " ".join(rest)[fm.start():]).split()
        if moved is None:
            return None
        return "whether " + " ".join(moved)
    else:
        return None
    head = [w.lower() if i == 0 or w.lower() in _WH else w for i, w in enumerate(words[:head_len])]
    k = next((i for i in range(head_len, min(len(words), head_len + 5)) if words[i].lower() in _AUX), None)
    if k is None:
        if head_len == 1 and words[0].lower() in ("what", "who", "which") and not words[1].lower() in _AUX:
            return " ".join(head + words[1:])  # subject question: "what makes X unique"
        return None
    wh_phrase = head + words[head_len:k]
    aux = words[k].lower()
    rest = words[k + 1:]
    if not rest or aux in _DO or aux in _MODAL:
        return None
    if aux in _HAVE:
        moved = _insert_before_participle(rest, aux)
        return None if moved is None else " ".join(wh_phrase + moved)
    # be
    if len(wh_phrase) == 1 and rest[0].lower() in _SUBJ_ADJ and wh_phrase[0] in ("what", "who"):
        return " ".join(wh_phrase + [aux] + rest)  # "what is unusual about X"
    joined = " ".join(rest)
    fm = _FAMOUS.search(joined)
    if fm and fm.start() > 0:
        return " ".join(wh_phrase) + " " + joined[:fm.start()] + aux + " " + joined[fm.start():]
    if _is_participle(rest[-1].strip(",")) and len(rest) > 1:
        return " ".join(wh_phrase + rest[:-1] + [aux, rest[-1]])
    if any(_is_participle(w) for w in rest[1:]) and len(wh_phrase) > 1:
        moved = _insert_before_participle(rest, aux)
        if moved is not None:
            return " ".join(wh_phrase + moved)
    return " ".join(wh_phrase + rest + [aux])


_RULES: list[tuple[re.Pattern, list[str]]] = [(re.compile(p, re.I), outs) for p, outs in [
    (r"^Where was (?P<x>.+) born\?$", ["What is the birthplace of {x}?", "In which place was {x} born?",
                                       "What is the place of birth of {x}?"]),
    (r"^When was (?P<x>.+) born\?$", ["What is the date of birth of {x}?", "On what date was {x} born?",
                                      "In which year was {x} born?"]),
    (r"^What is (?:the )?(?:birthplace|place of birth) of (?P<x>.+)\?$", ["Where was {x} born?"]),
    (r"^What is (?P<x>.+?)['’]s? (?:birthplace|place of birth)\?$", ["Where was {x} born?"]),
    (r"^In which (?P<n>city|country|city and country|town|place|state|region) was (?P<x>.+) born\?$",
     ["What {n} was {x} born in?", "Where was {x} born (which {n})?", "Which {n} is the birthplace of {x}?"]),
    (r"^What is the full name of (?P<x>.+)\?$", ["What is the complete name of {x}?",
                                                "Can you give the full name of {x}?",
                                                "Could you tell me the full name of {x}?"]),
    (r"^What gender is (?P<x>.+)\?$", ["What is the gender of {x}?", "How does {x} identify in terms of gender?"]),
    (r"^How does (?P<x>.+) identify in terms of (?:his |her |their )?gender\?$",
     ["What gender does {x} identify as?", "What is the gender identity of {x}?"]),
    (r"^Who is (?P<x>(?:the|an?) .+)\?$", ["Can you identify {x}?", "Which person is {x}?"]),
    (r"^Can you tell me about (?P<x>.+)\?$", ["What can you tell me about {x}?", "Tell me about {x}.",
                                             "Please share what you know about {x}."]),
    (r"^(?:Can|Could) you (?P<v>name|list|describe|explain|provide|give|share|mention|outline|identify|discuss|"
     r"elaborate on|summarize|summarise|detail) (?P<x>.+)\?$",
     ["{V} {x}.", "Please {v} {x}.", "Would you {v} {x}?"]),
    (r"^What are some (?P<x>.+)\?$", ["Can you name some {x}?", "Could you describe some {x}?",
                                      "Which {x} stand out?"]),
    (r"^What is the (?P<n>[a-z]+(?: [a-z]+)?) of (?P<x>[A-Z][^,?]{0,60})\?$", ["What is {xp} {n}?"]),
    (r"^What is (?P<x>[A-Z][^,?]{0,60}?)['’]s? (?P<n>[a-z]+(?: [a-z]+){0,2})\?$", ["What is the {n} of {x}?"]),
    (r"^What (?P<n>influence|impact|effect|role) (?P<a>did|does|has|have|had) ",
     ["What kind of {n} {a} ", "What sort of {n} {a} "]),
    (r"^Which (?P<n>[a-z]+) ", ["What {n} "]),
    (r"^What (?P<n>(?!influence |impact |effect |role |kind |sort )[a-z]+) (?P<a>is|are|was|were|does|do|did|has|have|had) ",
     ["Which {n} {a} "]),
    (r"^How (?P<a>is|are|was|were|do|does|did|has|have|had|can|could|would|will|might) ",
     ["In what way {a} ", "In what ways {a} "]),
    (r"^Why (?P<a>is|are|was|were|do|does|did|has|have|had|can|could|would|will|might) ", ["For what reason {a} "]),
    (r"^In which ", ["In what "]),
    (r"^In what ", ["In which "]),
    (r"^Can you ", ["Could you ", "Would you be able to "]),
    (r"^Could you ", ["Can you ", "Would you "]),
]]


def _rule_rewrites(q: str) -> list[list[str]]:
    """The rewrites of every matching rule, one list per rule."""
    groups = []
    for rx, outs in _RULES:
        m = rx.search(q)
        if not m:
            continue
        g = dict(m.groupdict())
        if "x" in g:
            g["xp"] = possessive(g["x"])
        if "v" in g:
            g["v"] = g["v"].lower()
            g["V"] = _upper_first(g["v"])
        out = []
        for o in outs:
            s = o.format(**g)
            if m.end() < len(q):  # a prefix rule: keep the rest of the question
                s = s + q[m.end():]
            s = _upper_first(s) if not s[:1].isupper() else s
            out.append(s)
        groups.append(out)
    return groups


def _synonym_swap(text: str, synonyms: dict[str, str], rng: random.Random, *, every: bool = False) -> str:
    """Replace dictionary words (lower-case, outside quotes) with their synonym; one or all of them."""
    spans = [(m.start(), m.end()) for m in _QUOTED.finditer(text)]

    def quoted(i: int) -> bool:
        return any(a <= i < b for a, b in spans)

    hits = [m for m in re.finditer(r"\b[a-z][a-z-]*\b", text) if m.group(0) in synonyms and not quoted(m.start())]
    if not hits:
        return text
    chosen = hits if every else [rng.choice(hits)]
    out, pos = [], 0
    for m in sorted(chosen, key=lambda m: m.start()):
        out += [text[pos:m.start()], synonyms[m.group(0)]]
        pos = m.end()
    out.append(text[pos:])
    return _fix_articles("".join(out))


def paraphrase_candidates(instruction: str, bank: dict, rng: random.Random) -> tuple[list[list[str]], list[list[str]]]:
    """Candidate rewrites of ``instruction`` as (structural groups, light groups).

    Each group is one kind of rewrite (one rule, the embedded question, the wrappers) with its
    variants and their synonym-swapped forms. *Structural* rewrites re-order
    the question (rules, embedded questions, wh-word swaps); *light* ones only wrap it ("I'd
    like to know: ...") or swap synonyms. Capitalised words (names, titles) and quoted text are
    never changed, so the subject is kept. A candidate whose words are >= 90 % the original's,
    in order, or that is a piece of the original ("Can you name X?" → "Name X."), is dropped, and
    so is a group left empty.
    """
    q = re.sub(r"\s+", " ", instruction).strip()
    para = bank["paraphrase"]
    syn = para["synonyms"]
    structural: list[list[str]] = []
    light: list[list[str]] = []
    if q.endswith("?"):
        emb = embedded_question(q)
        if emb:
            tail = emb[0].lower() + emb[1:]
            structural.append([f"Could you tell me {tail}?", f"Do you know {tail}?", f"Please tell me {tail}.",
                               f"Would you mind telling me {tail}?"]
                              + ([f"Can you explain {tail}?"] if tail.startswith(("how ", "why ")) else []))
        structural += _rule_rewrites(q)
        light.append([w.format(q=_lower_first(q)) for w in para["wrappers"]])
    else:
        bare = q.rstrip(".!")
        light.append([w.format(i=_lower_first(q) if q[-1:] in ".!" else _lower_first(q) + ".",
                               i_bare=_lower_first(bare)) for w in para["imperative_wrappers"]])
        structural += _rule_rewrites(q)
    seen: set[str] = set()
    q_norm = " ".join(_words(q))

    def group(members: list[str]) -> list[str]:
        out = []
        for c in members:
            c = re.sub(r"\s+", " ", c).strip()
            key = " ".join(_words(c))
            if key and key not in seen and similarity(c, q) < 0.9 and key not in q_norm:  # not a cut-down copy
                seen.add(key)
                out.append(c)
        return out

    s_groups = [group(g + [_synonym_swap(b, syn, rng) for b in g]) for g in structural]
    l_groups = [group(g + [_synonym_swap(b, syn, rng) for b in g]) for g in light]
    l_groups.append(group([_synonym_swap(q, syn, rng, every=True)]))
    return [g for g in s_groups if g], [g for g in l_groups if g]


# ---------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------
_LIST_ITEM = re.compile(r"^\s*\d+\.\s+(.*\S)\s*$", re.M)


class TemplatesGenerator(StreamingGenerator):
    """The offline stand-in for the papers' data generators (see the module docstring).

    ``seed`` selects phrasings and question order; ``bank`` replaces the packaged
    ``template_bank.json``; ``entities`` adds per-target related names and implicit descriptions
    (a JSON mapping ``{"<target>": {"related": [...], "descriptions": [...]}}``).
    """

    name = "templates"

    def __init__(self, seed: int = 0, bank: str | Path | None = None, entities: str | Path | None = None):
        self.seed = int(seed)
        self.bank = load_bank(bank, entities)
        prompts = {stem: _load_prompt_file(stem) for stem, _, _ in PROMPT_KINDS}
        digest = hashlib.sha256(json.dumps([self.bank, prompts], sort_keys=True, ensure_ascii=False)
                                .encode("utf-8")).hexdigest()[:12]
        self.model_id = f"template-bank@{digest}/seed={self.seed}"

    def __repr__(self) -> str:
        return f"TemplatesGenerator(seed={self.seed}, model_id={self.model_id!r})"

    # -- interface ---------------------------------------------------------------------------

    def _iter_generate(self, prompts: list[Messages], params: GenerationParams) -> Iterator[tuple[int, str]]:
        seen: dict[str, int] = {}
        for i, msgs in enumerate(prompts):
            key = json.dumps([[m["role"], m["content"]] for m in msgs], ensure_ascii=False)
            occ = seen.get(key, 0)
            seen[key] = occ + 1
            yield i, self.respond(msgs, params, occurrence=occ)

    # -- dispatch ----------------------------------------------------------------------------
    def respond(self, messages: Messages, params: GenerationParams | None = None, *, occurrence: int = 0) -> str:
        """The completion for one chat: recognise the prompt, fill its answer template.

        ``occurrence`` is the index of this exact chat among identical ones in the same call
        (ULMR asks for two rewrites of the same prompt): with sampling it selects another
        candidate; greedy (temperature 0) ignores it and the decoding seed.
        """
        params = params or GenerationParams()
        sampled = params.temperature > 0
        draw = (params.seed, occurrence) if sampled else (None, 0)
        users = [m for m in messages if m["role"] == "user"]
        if not users or messages[-1]["role"] != "user":
            raise PromptNotRecognised("templates generator: the chat must end with a user turn")
        from ..augment.few_shot import strip_demonstrations

        first = recognise(strip_demonstrations(users[0]["content"])[0])
        if first is None or first.kind == "more":
            self._unrecognised(users[0]["content"])
        if len(users) > 1:
            if first.kind not in ("snap_questions", "marvel_questions"):
                self._unrecognised(users[-1]["content"])
            for u in users[1:]:
                r = recognise(u["content"])
                if r is None or r.kind != "more":
                    if not re.search(r"\bmore\b", u["content"], re.I):
                        self._unrecognised(u["content"])
        context = " ".join(m["content"] for m in messages if m is not users[0])
        if first.kind == "ulmr_rewrite":
            return self._rewrite(first.slots["instruction"], draw)
        if first.kind in ("ulmr_negative", "obliterated"):
            return self._refusal(first.slots["instruction"], first.kind, draw)
        if first.kind == "related":
            return self._related(first.slots["target"], first.category or "", first.slots.get("k", 5), context)
        previous = [m["content"] for m in messages if m["role"] == "assistant"]
        n = first.slots.get("n", 30)
        if len(users) > 1:
            nums = re.findall(r"\d+", users[-1]["content"])
            n = int(nums[0]) if nums else n
        return self._questions(first.kind, first.category or "General", first.slots["target"], n, previous,
                               params.seed if sampled else None)

    @staticmethod
    def _unrecognised(text: str) -> None:
        line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        raise PromptNotRecognised(
            f"templates generator: prompt not recognised (first line: {line[:120]!r}). The stand-in writes only "
            "the project's templated prompts (ULMR Tables 1-2, SNAP Table 7 and Appendix E, the related-entity "
            "lists); it cannot answer questions: use a model for that (augment snap --answer-generator SPEC)")

    # -- answers -------------------------------------------------------------------------------
    def _rewrite(self, instruction: str, draw: tuple) -> str:
        rng = _rng("rewrite", self.seed, instruction, draw[0])
        structural, light = paraphrase_candidates(instruction, self.bank, rng)
        rng.shuffle(structural)
        rng.shuffle(light)
        groups = structural + light  # the k-th copy of a prompt takes the k-th rewrite (another structure)
        if not groups:
            return "Please answer the following question: " + instruction.strip()
        for g in groups:
            rng.shuffle(g)
        k = draw[1]
        g = groups[k % len(groups)]
        return g[(k // len(groups)) % len(g)]

    def _refusal(self, instruction: str, kind: str, draw: tuple) -> str:
        ref = self.bank["refusals"]
        if kind == "obliterated":
            bank = list(ref.get("snap", []))
        else:
            bank = list(ref.get("ulmr", [])) + list(ref.get("tofu_idk", [])) + list(ref.get("snap", []))
        subj = subject_of(instruction)
        usable = [b for b in bank if "{s}" not in b or subj]
        if not usable:
            raise ValueError("template bank: no refusal usable without a subject")
        rng = _rng("refusal", self.seed, kind, instruction, draw[0])
        rng.shuffle(usable)
        return usable[draw[1] % len(usable)].replace("{s}", subj or "")

    def _related(self, target: str, which: str, k: int, context: str) -> str:
        entry = _entity(self.bank, target)
        names = [n for n in entry.get(which, entry.get("related", []) if which == "individuals" else []) if n]
        if not names and context:
            names = [s for s in dict.fromkeys(m.group(0) for m in _CAP_SPAN.finditer(context))
                     if len(s.split()) >= 2 and s.lower() != target.lower()]
        if not names:
            return (f"(The templates stand-in has no world knowledge and knows no {which} related to {target}; "
                    "give them with --related or an entities file.)")
        return "\n".join(f"{i + 1}. {n}" for i, n in enumerate(names[:k]))

    def _pool(self, kind: str, category: str, target: str, sample_seed: int | None) -> list[str]:
        rng = _rng("questions", self.seed, kind, category, target, sample_seed)
        if kind == "marvel_questions":
            return self._marvel_pool(category, target, rng)
        entry = _entity(self.bank, target)
        descs = [d for d in entry.get("descriptions", []) if d] or [
            d.format(initials=initials(target)) for d in self.bank["implicit_descriptions"]]
        templates = list(self.bank["questions"].get(category, []))
        if category == "Relational":
            related = [r for r in entry.get("related", []) + entry.get("organizations", []) if r]
            templates += [t.replace("{r}", r) for r in related for t in self.bank["questions"].get(
                "Relational_with_entity", [])]
        def render(ts: list) -> list[str]:
            out = []
            for t in ts:
                t = _alternatives(rng.choice(t) if isinstance(t, list) else t, rng)
                out.append(_upper_first(t.format(t=target, tp=possessive(target), d=rng.choice(descs))))
            rng.shuffle(out)
            return out

        # the hand-written questions first, then questions from topic frames (one frame per topic)
        frames = self.bank.get("topic_frames", {}).get(category, [])
        topical = [rng.choice(frames).replace("{topic}", topic) for topic in self.bank.get("topics", [])] if frames else []
        return list(dict.fromkeys(render(templates) + render(topical)))

    def _marvel_pool(self, category: str, target: str, rng: random.Random) -> list[str]:
        low = target.lower()
        chars = [c for c in self.bank["marvel"]["characters"]
                 if not any(low in n.lower() or n.lower() in low for n in [c["name"], *c.get("aliases", [])])]
        templates = list(self.bank["marvel"]["questions"].get(category, []))
        if not chars or not templates:
            return []
        rng.shuffle(chars)
        out = []
        for ci, c in enumerate(chars):  # character-major: one question per template per character
            others = [o for o in chars if o is not c]
            for t in templates:
                c2 = rng.choice(others)["name"] if others else c["name"]
                out.append(_upper_first(t.format(c=c["name"], cp=possessive(c["name"]),
                                                 cd=c.get("description", c["name"]), c2=c2)))
        # interleave so consecutive questions are about different characters and templates
        by_t = [out[i::len(templates)] for i in range(len(templates))]
        mixed = [q for row in zip(*by_t) for q in row]
        return list(dict.fromkeys(mixed))

    def _questions(self, kind: str, category: str, target: str, n: int, previous: Sequence[str],
                   sample_seed: int | None) -> str:
        asked = {" ".join(_words(m.group(1))) for p in previous for m in _LIST_ITEM.finditer(p)}
        fresh = [q for q in self._pool(kind, category, target, sample_seed) if " ".join(_words(q)) not in asked]
        if not fresh:
            return "I have no further distinct questions to add."
        return "\n".join(f"{i + 1}. {q}" for i, q in enumerate(fresh[:max(1, n)]))
