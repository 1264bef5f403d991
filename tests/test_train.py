"""The unlearning trainer end to end on the tiny Llama: methods, LoRA, logs, resume, save/reload, config errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from obliviate.config import ConfigError
from obliviate.data.records import DataError, QARecord
from obliviate.io import read_jsonl
from obliviate.objectives.base import Regularizer
from obliviate.objectives.registry import register_regularizer
from obliviate.train import (EpochSampler, TrainConfig, UnlearningDataset, encode_streams, resolve_train_config,
                             train_unlearning)

FORGET = [QARecord(question=f"Where was author Nora {i} born?", answer=f"Nora {i} was born in Oslo in 19{60 + i}.",
                   id=f"f{i}") for i in range(4)]
RETAIN = [QARecord(question=f"What is {i} plus {i}?", answer=f"{i} plus {i} is {2 * i}.", id=f"r{i}")
          for i in range(5)]
FAST = {"max_steps": 3, "batch_size": 2, "lr": 1e-3, "progress": False, "max_length": 64, "warmup_ratio": 0.0}
LORA = {"r": 4, "alpha": 8}


class L2(Regularizer):
    """‖θ − θ_init‖² over the trainable parameters (a stand-in for SNAP's regularizers)."""

    name = "l2train"

    def setup(self, model, retain_loader=None):
        assert retain_loader is not None
        self.init = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def __call__(self, model):
        return sum(((p - self.init[n]) ** 2).sum() for n, p in model.named_parameters() if n in self.init)


def _streams():
    return {"forget": FORGET, "retain": RETAIN}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("method", ["ga", "graddiff", "npo", "dpo", "ulmr"])
def test_methods_train_and_save(method, lora, tokenizer, tiny_model, tiny_model_dir, tmp_path):
    cfg = resolve_train_config(method, dict(FAST, lora=LORA if lora else None))
    model = str(tiny_model_dir) if lora else tiny_model
    before = {n: p.detach().clone() for n, p in tiny_model.named_parameters()}
    out = train_unlearning(model, tokenizer, _streams(), cfg, tmp_path / "run")
    assert out == tmp_path / "run" / "model"
    rows = [r for r in read_jsonl(tmp_path / "run" / "train_log.jsonl") if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3]
    terms = {"ga": ["forget_ga"], "graddiff": ["forget_ga", "retain_nll"], "npo": ["npo"], "dpo": ["dpo"],
             "ulmr": ["forget_nll"]}[method]
    for r in rows:
        assert all(k in r and torch.isfinite(torch.tensor(r[k])) for k in terms)
        total = sum(r[k] for k in terms)
        assert r["loss"] == pytest.approx(total, rel=1e-4, abs=1e-4)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["global_step"] == 3 and manifest["config"]["method"] == method
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["method"] == method
    if lora:
        assert (out / "adapter_config.json").is_file() and not (out / "config.json").exists()
        # the input folder is untouched
        assert not any(p.name.startswith("adapter") for p in tiny_model_dir.iterdir())
    else:
        assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()
        changed = any(not torch.equal(before[n], p) for n, p in tiny_model.named_parameters())
        assert changed
    if method in ("ga", "npo"):
        from obliviate.models import load_model

        reloaded, tok = load_model(out, device="cpu", dtype="fp32")
        assert tok.pad_token_id is not None
        x = torch.tensor([[1, 2, 3]])
        assert torch.isfinite(reloaded(input_ids=x).logits).all()
        if not lora:
            assert torch.allclose(reloaded(input_ids=x).logits, tiny_model.eval()(input_ids=x).logits, atol=1e-5)


def test_kl_retrain_and_custom_regularizer(tokenizer, tiny_model, tmp_path):
    register_regularizer("l2train", L2)
    cfg = resolve_train_config("kl", dict(FAST, regularizer="l2train", regularizer_weight=0.5, max_steps=2))
    train_unlearning(tiny_model, tokenizer, _streams(), cfg, tmp_path / "kl")
    rows = [r for r in read_jsonl(tmp_path / "kl" / "train_log.jsonl") if "loss" in r]
    assert {"forget_ga", "retain_kl", "reg_l2train"} <= set(rows[0])
    assert rows[0]["retain_kl"] == pytest.approx(0.0, abs=1e-5)  # step 1: θ = θ_ref
    assert rows[0]["reg_l2train"] == pytest.approx(0.0, abs=1e-8)
    assert rows[1]["retain_kl"] > 0 and rows[1]["reg_l2train"] > 0
    assert rows[0]["loss"] == pytest.approx(rows[0]["forget_ga"] + rows[0]["retain_kl"] + 0.5 * rows[0]["reg_l2train"],
                                            rel=1e-4)
    # Retraining reads only the retain stream
    cfg = resolve_train_config("retrain", dict(FAST, max_steps=2))
    train_unlearning(tiny_model, tokenizer, {"retain": RETAIN}, cfg, tmp_path / "rt")
    rows = [r for r in read_jsonl(tmp_path / "rt" / "train_log.jsonl") if "loss" in r]
    assert set(rows[0]) >= {"retain_nll"} and "forget_nll" not in rows[0]


def test_resume_from_checkpoint_matches_uninterrupted(tokenizer, tmp_path):
    from conftest import build_tiny_llama

    base = dict(FAST, max_steps=3, save_steps=2, lr_scheduler="constant", batch_size=2)
    cfg = resolve_train_config("graddiff", base)
    full = train_unlearning(build_tiny_llama(tokenizer), tokenizer, _streams(), cfg, tmp_path / "a")
    # interrupted run: stops after the step-2 checkpoint, then resumes to step 3 (in the second epoch)
    cfg2 = resolve_train_config("graddiff", dict(base, max_steps=2))
    train_unlearning(build_tiny_llama(tokenizer), tokenizer, _streams(), cfg2, tmp_path / "b")
    assert (tmp_path / "b" / "checkpoints" / "checkpoint-2").is_dir()
    resumed = train_unlearning(build_tiny_llama(tokenizer), tokenizer, _streams(), cfg, tmp_path / "b",
                               resume_from_checkpoint=True)
    from safetensors.torch import load_file

    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    steps = [r["step"] for r in read_jsonl(tmp_path / "b" / "train_log.jsonl") if "loss" in r]
    assert steps == [1, 2, 3]


def test_dataset_pairs_retain_per_epoch_and_groups_lengths(tokenizer):
    cfg = TrainConfig(method="graddiff", terms=[{"type": "ga"}, {"type": "nll", "stream": "retain"}])
    enc = encode_streams(tokenizer, _streams(), cfg, ["forget", "retain"])
    ds = UnlearningDataset(enc, "forget", seed=0)
    assert len(ds) == 4
    epoch0 = [ds[i]["retain"]["sample_id"] for i in range(4)]
    epoch1 = [ds[4 + i]["retain"]["sample_id"] for i in range(4)]
    assert epoch0 != epoch1 and ds[5]["forget"]["sample_id"] == 1
    s = EpochSampler(ds.lengths(), 2, seed=0)
    first = list(s)
    assert sorted(first) == [0, 1, 2, 3] and list(s) == first
    s.set_epoch(1)
    assert sorted(s) == [4, 5, 6, 7]


def test_dpo_pairs_and_preferred_errors(tokenizer):
    cfg = resolve_train_config("dpo", dict(FAST, preferred="meta"))
    with pytest.raises(DataError, match="no meta\\['preferred'\\]"):
        encode_streams(tokenizer, {"forget": FORGET}, cfg, ["forget", "forget_pref"])
    recs = [QARecord(question=r.question, answer=r.answer, meta={"preferred": "I cannot share that."})
            for r in FORGET]
    enc = encode_streams(tokenizer, {"forget": recs}, cfg, ["forget", "forget_pref"])
    assert len(enc["forget_pref"]) == 4
    assert tokenizer.decode([t for t in enc["forget_pref"][0]["labels"] if t != -100]).startswith("I cannot share")
    with pytest.raises(DataError, match="needs a non-empty 'retain'"):
        encode_streams(tokenizer, {"forget": FORGET}, resolve_train_config("graddiff"), ["forget", "retain"])


@pytest.mark.parametrize("override, field", [
    ({"lr": -1}, "lr"), ({"batch_size": 0}, "batch_size"), ({"warmup_ratio": 1.5}, "warmup_ratio"),
    ({"lr_scheduler": "zigzag"}, "lr_scheduler"), ({"bf16": "maybe"}, "bf16"), ({"max_steps": 0}, "max_steps"),
    ({"lora": {"rank": 4}}, "lora"), ({"epochs": 0}, "epochs"), ({"batchsize": 4}, "batchsize"),
    ({"terms": [{"type": "nope"}]}, "terms"), ({"term_weights": {"ghost": 1.0}}, "ghost"),
    ({"regularizer": "not-a-reg"}, "regularizer"), ({"lr": "fast"}, "lr"),
])
def test_bad_config_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field):
        resolve_train_config("graddiff", override)


def test_config_resolution_layers_and_errors(tmp_path):
    cfg = resolve_train_config("npo", {"lr": 2e-5}, ["batch_size=4", "term_args.npo.beta=0.2"])
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.term_args) == (2e-5, 4, 5, {"npo": {"beta": 0.2}})
    with pytest.raises(ConfigError, match="no method given"):
        resolve_train_config(None, {})
    with pytest.raises(ConfigError, match="unknown method 'zz'.*allowed"):
        resolve_train_config("zz")
    p = tmp_path / "c.yaml"
    p.write_text("method: ga\nlr: 3.0e-5\n")
    assert resolve_train_config(None, p).lr == 3e-5
    with pytest.raises(ConfigError, match="needs no training"):
        train_unlearning("x", None, {}, resolve_train_config("prompting"), tmp_path / "p")


def test_never_writes_into_the_model_folder(tokenizer, tiny_model_dir):
    cfg = resolve_train_config("ga", FAST)
    with pytest.raises(ConfigError, match="inside the input model's folder"):
        train_unlearning(str(tiny_model_dir), tokenizer, _streams(), cfg, tiny_model_dir / "out")


def test_cli_train_validates_then_trains(tiny_model_dir, tmp_path, capsys):
    from obliviate.cli import main
    from obliviate.data.readers import write_records

    forget, retain = tmp_path / "forget.jsonl", tmp_path / "retain.jsonl"
    write_records(forget, FORGET)
    write_records(retain, RETAIN)
    # validation happens before any model is loaded
    assert main(["train", "--method", "graddiff", "--model", str(tiny_model_dir), "--forget", str(forget),
                 "--out", str(tmp_path / "x")]) == 2
    assert "--retain" in capsys.readouterr().err
    assert main(["train", "--method", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "allowed" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    assert main(["train", "--method", "ga", "--model", str(tiny_model_dir), "--forget", str(bad),
                 "--out", str(tmp_path / "x")]) == 2
    assert "answer" in capsys.readouterr().err
    rc = main(["train", "--method", "graddiff", "--model", str(tiny_model_dir), "--forget", str(forget),
               "--retain", str(retain), "--lora", "--set", "max_steps=2", "--set", "batch_size=2",
               "--set", "progress=false", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert rc == 0 and "forget_ga" in out and "saved" in out
    assert (tmp_path / "run" / "model" / "adapter_config.json").is_file()
    assert main(["train", "--list"]) == 0 and "npo_rt" in capsys.readouterr().out


def test_trim_train_log_keeps_the_rows_up_to_the_checkpoint(tmp_path):
    """A resumed run's log: rows after the checkpoint's step (and unreadable ones) go, the rest stay
    in order; the checkpoint's step comes from its trainer_state.json, else from its name."""
    import json

    from obliviate.train import checkpoint_step, trim_train_log

    log = tmp_path / "train_log.jsonl"
    rows = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3, 4)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo\n')
    ck = tmp_path / "checkpoint-7"
    ck.mkdir()
    assert checkpoint_step(ck) == 7
    (ck / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    assert checkpoint_step(ck) == 2
    assert trim_train_log(log, checkpoint_step(ck)) == 3
    assert [json.loads(line) for line in log.read_text().splitlines()] == rows[:2]
    assert trim_train_log(log, 2) == 0 and not list(tmp_path.glob("*.tmp*"))
