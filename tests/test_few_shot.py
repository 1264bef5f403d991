"""Opt-in few-shot demonstrations before the verbatim ULMR / SNAP prompts (a documented deviation)."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest
import torch

from obliviate.augment import few_shot as fs
from obliviate.augment.snap import (OBLITERATED_PROMPT, SnapAugmentConfig, augment_snap, load_prompt,
                                    obliterated_request)
from obliviate.augment.ulmr import (UlmrAugmentConfig, augment_ulmr, negative_prompt, render_report,
                                    rewrite_prompt)
from obliviate.config import ConfigError, to_dict
from obliviate.data.records import QARecord
from obliviate.generate.base import GenerationParams, Generator, as_messages
from obliviate.generate.cache import CachedGenerator, cache_key
from obliviate.generate.templates_backend import TemplatesGenerator
from obliviate.io import atomic_write_jsonl, read_jsonl
from obliviate.runconfig import run_config_from_dict

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# the papers' prompts, verbatim (ULMR Tables 1 and 2, SNAP Appendix E)
TABLE_1 = ('Please rewrite the provided instruction to ensure that the given answer can still satisfy the '
           'requirement of your revised instruction. Instruction:"{instruction}" Rewrite Instruction:')
TABLE_2 = ('Please generate a response based on the Instruction indicating that you are unable to answer the '
           'question or that the relevant content is not available in your knowledge base. '
           'Instruction:"{instruction}"\nAnswer:')
Q = "Where was Jane Doe born?"
RECORDS = [QARecord(question="Where was Jane Roe born?", answer="Jane Roe was born in Tromsø.", id="a"),
           QARecord(question="What is the profession of Jane Roe's father?",
                    answer="Her father is a ferry captain.", id="b")]


def _kinds_templates():
    return {"ulmr_rewrite": TABLE_1, "ulmr_negative": TABLE_2, "snap_obliterated": OBLITERATED_PROMPT}


# ---------------------------------------------------------------------------------------------
# the default stays the verbatim prompt, byte for byte (prompts, cache keys, stage fingerprints)
# ---------------------------------------------------------------------------------------------

def test_default_prompts_are_unchanged_byte_for_byte():
    assert rewrite_prompt(Q) == TABLE_1.replace("{instruction}", Q)
    assert negative_prompt(Q) == TABLE_2.replace("{instruction}", Q)
    assert obliterated_request(Q) == OBLITERATED_PROMPT + "\n\n" + Q
    assert rewrite_prompt(Q, 0) == rewrite_prompt(Q) and obliterated_request(Q, 0) == obliterated_request(Q)
    for kind, template in _kinds_templates().items():
        assert fs.with_few_shot(kind, template, Q, 0) == fs.fill_prompt(kind, template, Q)
    assert fs.fill_prompt("ulmr_rewrite", TABLE_1, "  " + Q + " ") == rewrite_prompt(Q)  # stripped like ulmr.fill
    # cache keys of the default prompts, as computed before the option existed
    p = GenerationParams(max_new_tokens=64, temperature=0.0, top_p=1.0, seed=0)
    keys = [cache_key("templates", "m", as_messages(s), p)
            for s in (rewrite_prompt(Q), negative_prompt(Q), obliterated_request(Q))]
    assert keys == ["cb2048e5733fb1716526b93992cb4d1605a8dc25e0adb0194c3e54ac08e61903",
                    "5755761321b7d8ee7b532ba4b89ce2dce4f6548ee89dc8a87ab8cf74ac80ada1",
                    "47e469e05c3bebf479f54b8eb1ae630c54b02e5b77aa48ffd2d4032c1877371c"]


def _ulmr_run_config(**augment):
    raw = {"model": "smollm2-135m-instruct", "out": "/tmp/x", "method": "ulmr", "generator": "templates",
           "requests": [{"name": "jane", "forget": "/tmp/nonexistent.jsonl"}]}
    if augment:
        raw["augment"] = {"ulmr": augment}
    return run_config_from_dict(raw)


def _snap_run_config(**augment):
    raw = {"model": "smollm2-135m-instruct", "out": "/tmp/x", "method": "snap", "generator": "templates",
           "requests": [{"target": "Jane Doe"}]}
    if augment:
        raw["augment"] = {"snap": augment}
    return run_config_from_dict(raw)


def test_stage_fingerprints_unchanged_at_zero_and_changed_when_set():
    from obliviate.pipeline import augment_record
    from obliviate.runner import target_data_record

    recs = [QARecord(question=Q, answer="In Oslo.", id="a")]
    before_ulmr = "af8660328d5d34ba4fda4654bd60baf643555899886b2323ffd81204836ab16d"  # made before few_shot existed
    before_snap = "ccb4a78176063c95f711bff291e243739526b82e6c8753477885d5bce8696f33"
    for cfg in (_ulmr_run_config(), _ulmr_run_config(few_shot=0)):
        rec = augment_record(cfg, recs)
        assert rec["fingerprint"] == before_ulmr and "few_shot" not in rec["fields"]["augment"]
    two = augment_record(_ulmr_run_config(few_shot=2), recs)
    assert two["fingerprint"] != before_ulmr and two["fields"]["augment"]["few_shot"] == 2
    assert augment_record(_ulmr_run_config(few_shot=1), recs)["fingerprint"] not in (before_ulmr, two["fingerprint"])
    for cfg in (_snap_run_config(), _snap_run_config(few_shot=0)):
        assert target_data_record(cfg, cfg.requests[0])["fingerprint"] == before_snap
    cfg = _snap_run_config(few_shot=1)
    rec = target_data_record(cfg, cfg.requests[0])
    assert rec["fingerprint"] != before_snap and rec["fields"]["augment"]["few_shot"] == 1


def test_to_dict_omits_few_shot_only_at_its_default():
    assert "few_shot" not in to_dict(UlmrAugmentConfig())
    assert to_dict(UlmrAugmentConfig(few_shot=3))["few_shot"] == 3
    assert "few_shot" not in to_dict(SnapAugmentConfig(target="X"))
    assert "few_shot" not in to_dict(_ulmr_run_config())["augment"]["ulmr"]  # nested: the written config.yaml
    assert to_dict(_ulmr_run_config(few_shot=2))["augment"]["ulmr"]["few_shot"] == 2


# ---------------------------------------------------------------------------------------------
# the pure function
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(fs.KINDS))
@pytest.mark.parametrize("n", [1, 2, 3])
def test_with_few_shot_puts_n_demonstrations_before_the_verbatim_prompt(kind, n):
    template = _kinds_templates()[kind]
    real = fs.fill_prompt(kind, template, Q)
    out = fs.with_few_shot(kind, template, Q, n)
    demos = fs.demonstrations(kind, n)
    assert len(demos) == n and demos == fs.demonstrations(kind)[:n]  # the first n, in file order
    assert out.endswith(real)  # the verbatim prompt, byte-identical, at the end
    assert out == "".join(f"{fs.fill_prompt(kind, template, d.instruction)}\n{d.output}\n\n" for d in demos) + real
    fixed = template.split("{instruction}")[0]
    assert out.count(fixed) == n + 1  # one user message: n filled demonstrations, then the real prompt
    positions = [out.index(d.instruction) for d in demos] + [len(out) - len(real)]
    assert positions == sorted(positions)
    for d in demos:  # each demonstration's output follows its own instruction
        assert out.index(d.output) > out.index(d.instruction)
    assert fs.strip_demonstrations(out) == (real, n)


def test_with_few_shot_uses_the_given_template_and_checks_its_arguments():
    out = fs.with_few_shot("ulmr_rewrite", "Rewrite <{instruction}>:", Q, 1)
    d = fs.demonstrations("ulmr_rewrite")[0]
    assert out == f"Rewrite <{d.instruction}>:\n{d.output}\n\nRewrite <{Q}>:"
    with pytest.raises(ValueError, match="placeholder"):
        fs.with_few_shot("ulmr_negative", "no slot", Q, 1)
    with pytest.raises(ValueError, match="kind"):
        fs.with_few_shot("snap_questions", "x", Q, 1)
    with pytest.raises(ValueError, match=r"few_shot.*maximum 3"):
        fs.with_few_shot("ulmr_rewrite", TABLE_1, Q, 4)
    assert fs.strip_demonstrations(rewrite_prompt(Q)) == (rewrite_prompt(Q), 0)


def test_borrowed_demonstrations_are_detected():
    rw = fs.demonstrations("ulmr_rewrite")
    assert fs.borrowed(rw[1].output, Q, "ulmr_rewrite", 2)
    assert fs.borrowed(rw[0].instruction, Q, "ulmr_rewrite", 1)
    assert fs.borrowed(f"When was {rw[0].subject} born?", Q, "ulmr_rewrite", 1)  # names the invented person
    assert not fs.borrowed("In which town was Jane Doe born?", Q, "ulmr_rewrite", 3)
    assert not fs.borrowed(rw[2].output, Q, "ulmr_rewrite", 2)  # only the demonstrations used count
    neg = fs.demonstrations("ulmr_negative")
    assert neg[0].subject and neg[0].subject not in neg[0].output
    assert not fs.borrowed(neg[0].output, Q, "ulmr_negative", 3, outputs=False)  # a generic refusal may be reused
    assert fs.borrowed(neg[1].output, Q, "ulmr_negative", 3, outputs=False)      # not one naming its person


# ---------------------------------------------------------------------------------------------
# the demonstrations file
# ---------------------------------------------------------------------------------------------

def test_demonstrations_file_is_package_data_with_three_per_kind():
    import tomllib

    f = fs.packaged_file()
    assert f.name == fs.FEW_SHOT_FILE and f.is_file()
    assert Path(str(f)).parent == ROOT / "src" / "obliviate" / "prompts"
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["obliviate"]
    assert any(fnmatch.fnmatch(f"prompts/{fs.FEW_SHOT_FILE}", g) for g in globs)
    for kind in fs.KINDS:
        assert len(fs.demonstrations(kind)) == 3
    assert fs.available(fs.ULMR_KINDS) == fs.available(fs.SNAP_KINDS) == 3
    for d in fs.demonstrations("ulmr_negative"):
        assert "knowledge base" in d.output
    for d in fs.demonstrations("snap_obliterated"):
        assert "do not have access to information" in d.output
    assert re.fullmatch(r"[0-9a-f]{64}", fs.file_sha256())


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data (TOFU, RWKU)")
def test_demonstrations_are_not_benchmark_content():
    text = "\n".join(p.read_text(encoding="utf-8", errors="ignore") for p in sorted(SHARED_DATA.rglob("*"))
                     if p.is_file() and p.suffix in {".json", ".jsonl", ".txt", ".csv"}).lower()
    assert len(text) > 100_000
    for kind in fs.KINDS:
        for d in fs.demonstrations(kind):
            assert d.instruction.lower() not in text, d.instruction
            if d.subject:
                assert d.subject.lower() not in text, d.subject


# ---------------------------------------------------------------------------------------------
# validation, CLI flag, run config
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, match", [(-1, r"few_shot: must be >= 0"), (4, r"few_shot: 4 .*maximum 3"),
                                        ("2", "few_shot: expected an integer"), (True, "few_shot: expected an integer")])
def test_validation_names_the_field_and_the_maximum(bad, match):
    with pytest.raises(ValueError, match=match):
        UlmrAugmentConfig(few_shot=bad).validate()
    with pytest.raises(ConfigError, match="snap." + match):
        SnapAugmentConfig(target="X", few_shot=bad).validate()
    for n in (0, 1, 3):
        UlmrAugmentConfig(few_shot=n).validate()
        SnapAugmentConfig(target="X", few_shot=n).validate()


def test_augment_ulmr_override_is_validated():
    with pytest.raises(ConfigError, match="maximum 3"):
        augment_ulmr(RECORDS, TemplatesGenerator(), few_shot=9, progress=False)


def test_cli_flag_parsing(capsys, tmp_path):
    from obliviate.cli import build_parser, main
    from obliviate.commands.augment_snap import config_from_args

    parser = build_parser()
    ulmr = parser.parse_args(["augment", "ulmr", "--forget", "f.jsonl", "--out", "o"])
    assert ulmr.few_shot == 0
    assert parser.parse_args(["augment", "ulmr", "--forget", "f.jsonl", "--out", "o", "--few-shot", "2"]).few_shot == 2
    snap = parser.parse_args(["augment", "snap", "--target", "X", "--out", "o", "--few-shot", "3"])
    assert snap.few_shot == 3 and config_from_args(snap).few_shot == 3
    assert config_from_args(parser.parse_args(["augment", "snap", "--target", "X", "--out", "o"])).few_shot == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["augment", "ulmr", "--forget", "f", "--out", "o", "--few-shot", "two"])
    capsys.readouterr()
    assert main(["augment", "ulmr", "--forget", "f.jsonl", "--out", str(tmp_path / "u"), "--few-shot", "7"]) == 2
    assert "few_shot" in capsys.readouterr().err
    assert main(["augment", "snap", "--target", "X", "--out", str(tmp_path / "s"), "--few-shot", "-1"]) == 2
    assert "snap.few_shot" in capsys.readouterr().err


def test_run_config_path(tmp_path):
    import yaml

    from obliviate.runconfig import load_run_config

    assert _ulmr_run_config(few_shot=2).augment.ulmr.few_shot == 2
    assert _ulmr_run_config().augment.ulmr.few_shot == 0
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump({"model": "smollm2-135m-instruct", "out": str(tmp_path / "o"), "method": "ulmr",
                                 "generator": "templates", "requests": [{"name": "j", "forget": "f.jsonl"}],
                                 "augment": {"ulmr": {"few_shot": 1}}}))
    assert load_run_config(p).augment.ulmr.few_shot == 1
    assert load_run_config(p, ["augment.ulmr.few_shot=3"]).augment.ulmr.few_shot == 3
    with pytest.raises(ConfigError, match="few_shot.*maximum 3"):
        load_run_config(p, ["augment.ulmr.few_shot=5"])
    with pytest.raises(ConfigError, match="snap.few_shot.*maximum 3"):
        _snap_run_config(few_shot=5)
    from obliviate.runner import _snap_augment_config

    cfg = _snap_run_config(few_shot=2)
    assert _snap_augment_config(cfg, cfg.requests[0]).few_shot == 2


# ---------------------------------------------------------------------------------------------
# real augmentations with the templates generator
# ---------------------------------------------------------------------------------------------

class RecordingTemplates(TemplatesGenerator):
    """The templates stand-in, recording every prompt it receives (the first user turn)."""

    def __init__(self):
        super().__init__(seed=0)
        self.prompts: list[list[dict]] = []

    def _iter_generate(self, prompts, params):
        self.prompts.extend(prompts)
        yield from super()._iter_generate(prompts, params)


def test_ulmr_augmentation_sends_the_demonstrations(tmp_path):
    gen = RecordingTemplates()
    rows, stats = augment_ulmr(RECORDS, gen, few_shot=2, progress=False)
    assert stats["kept"] == 4 and stats["dropped"] == 0
    contents = [m[-1]["content"] for m in gen.prompts]
    assert all(len(m) == 1 and m[0]["role"] == "user" for m in gen.prompts)  # a single user message
    rewrites = [c for c in contents if c.endswith("Rewrite Instruction:")]
    negatives = [c for c in contents if c.endswith("Answer:")]
    assert len(rewrites) == 4 and len(negatives) == 4
    for rec in RECORDS:
        assert sum(c.endswith(rewrite_prompt(rec.question)) for c in rewrites) == 2
    for c in rewrites:
        assert c.startswith("".join(fs.render_demonstration("ulmr_rewrite", TABLE_1, d)
                                    for d in fs.demonstrations("ulmr_rewrite", 2)))
        assert fs.demonstrations("ulmr_rewrite")[2].instruction not in c
    for r in rows:
        assert any(c == negative_prompt(r["question"], 2) for c in negatives)
        assert all(d.output in negative_prompt(r["question"], 2) for d in fs.demonstrations("ulmr_negative", 2))
    assert stats["config"]["few_shot"] == 2
    assert stats["prompts"]["few_shot"] == 2 and stats["prompts"]["sha256"] == fs.file_sha256()
    assert stats["prompts"]["demonstrations"]["ulmr_rewrite"] == [d.instruction
                                                                   for d in fs.demonstrations("ulmr_rewrite", 2)]
    report = render_report(rows, stats)
    assert "2 few-shot demonstration(s)" in report and "deviation" in report
    # the same data without demonstrations: verbatim prompts, no "prompts" record, nothing in the report
    plain = RecordingTemplates()
    rows0, stats0 = augment_ulmr(RECORDS, plain, progress=False)
    assert {m[0]["content"] for m in plain.prompts} == {rewrite_prompt(r.question) for r in RECORDS} | \
        {negative_prompt(r["question"]) for r in rows0}
    assert "prompts" not in stats0 and "few-shot" not in render_report(rows0, stats0)
    assert [r["question"] for r in rows0] == [r["question"] for r in rows]  # the stand-in ignores the demonstrations


def test_generation_cache_is_not_reused_across_few_shot_settings(tmp_path):
    def run(n):
        gen = CachedGenerator(TemplatesGenerator(seed=0), tmp_path / "cache")
        augment_ulmr(RECORDS, gen, few_shot=n, progress=False)
        return gen.stats()

    first = run(0)
    assert first["hits"] == 0 and first["misses"] == 8
    assert run(0)["misses"] == 0                     # the same prompts: all served from the cache
    shot = run(2)
    assert shot["hits"] == 0 and shot["misses"] == 8  # other prompt text, other keys: nothing stale reused
    assert run(2)["misses"] == 0 and run(1)["hits"] == 0


class CopyingGenerator(Generator):
    """Answers a few-shot rewrite prompt with the last demonstration's rewrite once, then correctly."""

    name = "copying"
    model_id = "copying-v1"

    def __init__(self):
        self.rewrite_calls = 0

    def _generate(self, prompts, params):
        out = []
        for m in prompts:
            c = m[-1]["content"]
            if c.endswith("Rewrite Instruction:"):
                self.rewrite_calls += 1
                out.append(fs.demonstrations("ulmr_rewrite")[1].output if self.rewrite_calls == 1
                           else "In which town was Jane Roe born?")
            else:
                out.append("I'm sorry, but I'm unable to answer this question. The relevant content is not "
                           "available in my knowledge base.")
        return out


def test_a_copied_demonstration_is_rejected_and_regenerated():
    rows, stats = augment_ulmr(RECORDS[:1], CopyingGenerator(), few_shot=2, n_rewrites=1, progress=False)
    assert stats["rewrites"]["rejections"] == {fs.COPY_REASON: 1}
    assert rows[0]["question"] == "In which town was Jane Roe born?" and rows[0]["attempts"]["rewrite"] == 2
    # the generic refusal of demonstration 1 is a valid negative response, not a copy
    assert stats["negatives"]["rejections"] == {}


class BagOfWordsModel:
    """A tiny stand-in for the sentence model (hashed bag of words), so the test needs no encoder."""

    def get_embedding_dimension(self):
        return 64

    def encode(self, texts, **kw):
        v = torch.zeros((len(texts), 64))
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                v[i, sum(map(ord, w)) % 64] += 1.0
        return torch.nn.functional.normalize(v + 1e-6, dim=1)


def test_snap_augmentation_sends_the_demonstrations(tmp_path):
    gen = RecordingTemplates()
    cfg = SnapAugmentConfig(target="Jane Roe", categories=["General"], calls_per_category=1, k_related=0,
                            train_size=2, threshold=0.99, few_shot=2)
    summary = augment_snap(gen, cfg, tmp_path, sentence_model=BagOfWordsModel())
    forget = read_jsonl(tmp_path / "forget_train.jsonl") + read_jsonl(tmp_path / "forget_eval.jsonl")
    assert forget
    requests = [m[0]["content"] for m in gen.prompts if m[0]["content"].startswith(OBLITERATED_PROMPT)]
    assert len(requests) == len(forget)
    head = "".join(fs.render_demonstration("snap_obliterated", load_prompt("snap_obliterated"), d)
                   for d in fs.demonstrations("snap_obliterated", 2))
    for r in forget:
        assert head + obliterated_request(r["question"]) in requests
    # the Table 7 question prompt stays verbatim
    assert [m[0]["content"] for m in gen.prompts if m[0]["content"].startswith("Generate 30")] == \
        ["Generate 30 questions to ask about Jane Roe."]
    assert summary["prompts"]["few_shot"] == 2
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["few_shot"] == 2
    assert manifest["inputs"]["few_shot_demonstrations"]["sha256"] == fs.file_sha256()
    assert manifest["summary"]["prompts"]["demonstrations"]["snap_obliterated"][0] == \
        fs.demonstrations("snap_obliterated")[0].instruction
    assert "2 few-shot demonstration(s)" in (tmp_path / "augment_report.md").read_text()


def test_cli_augment_ulmr_with_few_shot_records_provenance(tmp_path):
    from obliviate.cli import main

    forget = tmp_path / "forget.jsonl"
    atomic_write_jsonl(forget, [{"question": r.question, "answer": r.answer} for r in RECORDS])
    out = tmp_path / "out"
    assert main(["augment", "ulmr", "--forget", str(forget), "--out", str(out), "--generator", "templates",
                 "--few-shot", "3", "--no-progress"]) == 0
    stats = json.loads((out / "augment_stats.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert stats["prompts"]["few_shot"] == 3 and manifest["stats"]["prompts"]["few_shot"] == 3
    assert manifest["inputs"]["few_shot_demonstrations"]["sha256"] == fs.file_sha256()
    assert "3 few-shot demonstration(s)" in (out / "augment_report.md").read_text()
    assert len(read_jsonl(out / "forget_augmented.jsonl")) == 4
