"""Checks that flag degenerate LLM generations before they become training data (ULMR, SNAP).

A generation is *degenerate* when it is empty, repeats itself, merely copies the prompt or the
instruction it was asked about, or — for a negative response that should withhold an answer —
still states that answer. Each check returns a short reason code (counted in augmentation
reports) or ``None`` when the text is usable:

* ``empty``: nothing but whitespace/punctuation;
* ``repetitive``: long text with very few distinct words, or one n-gram repeated many times;
* ``copy_of_prompt``: the text reproduces the prompt that was sent (e.g. the template echoed);
* ``copy_of_instruction``: the text is (nearly) the instruction it should rewrite or answer;
* ``duplicate``: the text equals another generation for the same source (e.g. two identical rewrites);
* ``states_answer``: ROUGE-L recall of the original answer's *content words* (those not already
  in the question) in the text is at least ``answer_threshold`` (default 0.5): the response
  still says what should be forgotten;
* ``leaks_entity``: the text contains a key entity of the answer (a name, number or date that
  the answer states and the question does not mention);
* ``not_instruction``: a rewrite that is not a question or instruction (see
  :func:`looks_like_instruction`; checked by the ULMR augmentation for rewrites).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

#: English function words ignored when comparing content (the words that carry no answer).
STOPWORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between
both but by can could did do does doing down during each few for from further had has have having he her here
hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
off on once only or other our ours ourselves out over own same she should so some such than that the their
theirs them themselves then there these they this those through to too under until up very was we were what
when where which while who whom why will with would you your yours yourself yourselves one ones may might must
shall upon yes well known notable also however like many much several various often
""".split())

REASONS = ("empty", "repetitive", "copy_of_prompt", "copy_of_instruction", "duplicate", "states_answer",
           "leaks_entity", "not_instruction")

#: first words of a question or of an imperative instruction
_INSTRUCTION_START = frozenset("""
what who whom whose where when why how which is are was were do does did can could will would should shall may
might has have had am describe explain tell name list provide give identify share mention discuss outline
summarize summarise write state specify elaborate detail compare please in on at for from by according
""".split())


def looks_like_instruction(text: str) -> bool:
    """True when ``text`` reads as a question or an instruction (ends with "?" or starts with an
    interrogative / imperative word such as "What", "Describe", "Tell me"), not as an answer.

    A small model asked to rewrite a question often answers it instead; such a "rewrite" is
    rejected as ``not_instruction``.
    """
    t = (text or "").strip()
    if not t:
        return False
    if t.rstrip("\"'”’) ").endswith("?"):
        return True
    ws = words(t)
    return bool(ws) and ws[0] in _INSTRUCTION_START

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (letters/digits, with an inner apostrophe)."""
    return [w.lower() for w in _WORD.findall(text or "")]


def content_words(text: str) -> list[str]:
    """The words of ``text`` without :data:`STOPWORDS` and possessive ``'s``, in order."""
    out = []
    for w in words(text):
        w = re.sub(r"['’]s$", "", w)
        if w and w not in STOPWORDS:
            out.append(w)
    return out


def _norm(text: str) -> str:
    return " ".join(words(text))


def content_recall(text: str, reference: str, exclude: Iterable[str] = ()) -> float:
    """ROUGE-L recall of ``reference``'s content words in ``text``'s content words.

    ``LCS(content(text), content(reference)) / |content(reference)|`` computed with
    ``rouge_score`` (Porter stemming), the metric TOFU uses, restricted to content words so that
    "the", "is", "author" ... shared by any two sentences do not count as stating the answer.
    Words of the ``exclude`` texts (the question: naming the subject is not stating the answer)
    are removed from the reference first. 0 when the reference has no content word left.
    """
    skip = {w for e in exclude for w in content_words(e)}
    ref = [w for w in content_words(reference) if w not in skip]
    if not ref:
        return 0.0
    from ..evals.metrics import rouge_l_recall

    return rouge_l_recall(" ".join(content_words(text)), " ".join(ref))


_ENTITY = re.compile(
    r"(?:\b\d{1,4}(?:[.,]\d+)?(?:st|nd|rd|th)?\b)"            # numbers, years, ordinals
    r"|(?:\b[A-Z][\w'’\-]+(?:\s+(?:[A-Z][\w'’\-]+|de|da|van|von|del|la|le|of|the|and)){0,5}\b)"  # Capitalised spans
)
_GENERIC_CAPS = frozenset({"the", "a", "an", "yes", "no", "in", "on", "his", "her", "their", "this", "that", "it",
                           "he", "she", "they", "i", "as", "born", "although", "however", "while", "with", "for",
                           "from", "at", "by", "to", "after", "before", "during", "being", "some", "one", "another",
                           "author", "authors", "book", "books", "novel", "novels", "writer", "award", "prize"})


def key_entities(answer: str, exclude: Iterable[str] = ()) -> list[str]:
    """Names, numbers and dates that ``answer`` states and none of the ``exclude`` texts mention.

    Capitalised word spans (minus a leading generic word such as "The", "His") and numbers are
    candidates; those whose words all occur in an ``exclude`` text (typically the question, which
    names the subject) are dropped, since mentioning the subject of a question is not a leak.
    """
    seen_words = set()
    for e in exclude:
        seen_words.update(re.sub(r"['’]s$", "", w) for w in words(e))
    out: list[str] = []
    for m in _ENTITY.finditer(answer or ""):
        span = m.group(0).strip()
        toks = span.split()
        while toks and toks[0].lower().strip("'’") in _GENERIC_CAPS:
            toks = toks[1:]
        while toks and toks[-1].lower() in {"of", "the", "and", "de", "da", "la", "le"}:
            toks = toks[:-1]
        if not toks:
            continue
        span = " ".join(toks)
        ws = [re.sub(r"['’]s$", "", w) for w in words(span)]
        ws = [w for w in ws if w and w not in STOPWORDS]
        if not ws or all(w in seen_words for w in ws):
            continue
        if len(ws) == 1 and len(ws[0]) < 3 and not ws[0].isdigit():
            continue
        if span not in out:
            out.append(span)
    return out


def leaked_entity(text: str, answer: str, exclude: Iterable[str] = ()) -> str | None:
    """The first key entity of ``answer`` (see :func:`key_entities`) that ``text`` reveals, or None.

    An entity is revealed when one of its *new* words (not in an ``exclude`` text, not a stopword,
    at least 3 letters or a number) occurs in ``text`` as a whole word, case-insensitive: "his
    father, Lorenzo" reveals "Lorenzo Vasquez" even when the question already names "Vasquez".
    """
    seen = {re.sub(r"['’]s$", "", w) for e in exclude for w in words(e)}
    text_words = {re.sub(r"['’]s$", "", w) for w in words(text)}
    for ent in key_entities(answer, exclude):
        new = [re.sub(r"['’]s$", "", w) for w in words(ent)]
        new = [w for w in new if w not in seen and w not in STOPWORDS and (len(w) >= 3 or w.isdigit())]
        if any(w in text_words for w in new):
            return ent
    return None


def is_repetitive(text: str) -> bool:
    """True for long text with < 25 % distinct words, or a 3-gram repeated ≥ 4 times covering ≥ half of it."""
    ws = words(text)
    if len(ws) >= 12 and len(set(ws)) / len(ws) < 0.25:
        return True
    if len(ws) >= 12:
        grams = Counter(tuple(ws[i:i + 3]) for i in range(len(ws) - 2))
        gram, n = grams.most_common(1)[0]
        if n >= 4 and n * 3 >= len(ws) / 2:
            return True
    return False


def is_copy(text: str, source: str, threshold: float = 0.9) -> bool:
    """True when ``text`` is (nearly) ``source``: equal after normalisation, or each covers ≥ 90 % of the other."""
    a, b = _norm(text), _norm(source)
    if not a or not b:
        return False
    if a == b:
        return True
    from ..evals.metrics import rouge_l_recall

    return rouge_l_recall(a, b) >= threshold and rouge_l_recall(b, a) >= threshold


def degenerate_reason(text: str, prompt: str | None = None, *, instruction: str | None = None,
                      answer: str | None = None, context: Sequence[str] = (), others: Sequence[str] = (),
                      answer_threshold: float = 0.5, check_entities: bool = True) -> str | None:
    """Why ``text`` is unusable as training data (a code from :data:`REASONS`), or None when it is fine.

    ``prompt``: the full prompt sent to the generator (an echo of it is degenerate).
    ``instruction``: the instruction the text rewrites or answers (a copy of it is degenerate).
    ``answer``: the answer that must not be stated (negative responses; also rewrites must not
    give it away): ``states_answer`` when :func:`content_recall` ≥ ``answer_threshold``,
    ``leaks_entity`` when a key entity of the answer, not mentioned in ``instruction`` or
    ``context`` (e.g. the original question), appears in the text.
    ``others``: generations already kept for the same source (``duplicate`` if equal to one).
    """
    t = (text or "").strip()
    if not words(t):
        return "empty"
    if is_repetitive(t):
        return "repetitive"
    if prompt and (is_copy(t, prompt) or (len(words(t)) >= 8 and _norm(t) in _norm(prompt)
                                          and _norm(t) != _norm(instruction or ""))):
        return "copy_of_prompt"
    if instruction and is_copy(t, instruction, threshold=0.95):
        return "copy_of_instruction"
    if any(_norm(t) == _norm(o) for o in others if o):
        return "duplicate"
    if answer:
        exclude = [x for x in (instruction, *context) if x]
        if content_recall(t, answer, exclude) >= answer_threshold:
            return "states_answer"
        if check_entities:
            if leaked_entity(t, answer, exclude) is not None:
                return "leaks_entity"
    return None


def is_degenerate(text: str, prompt: str | None = None, **kwargs) -> bool:
    """``degenerate_reason(...) is not None``."""
    return degenerate_reason(text, prompt, **kwargs) is not None
