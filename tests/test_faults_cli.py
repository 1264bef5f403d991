"""Faults through the real ``obliviate`` command (subprocesses) and the checks behind them.

Every ordinary fault ends in ONE line on stderr and exit code 2 (the traceback only with ``-v``);
nothing an input or a user folder holds is damaged; training never saves a non-finite model;
checkpoints are written atomically and ``--resume`` skips an incomplete one.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from obliviate.cli import format_error, main

ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
FAST = ["--set", "max_steps=2", "--set", "batch_size=2", "--set", "progress=false", "--set", "max_length=64"]


def cli(*args, cwd=None, env=None, timeout=240) -> subprocess.CompletedProcess:
    """Run ``python -m obliviate ARGS`` (OBLIVIATE_CACHE comes from the test session's environment)."""
    return subprocess.run([sys.executable, "-m", "obliviate", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, **ENV, **(env or {})})


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Assert exit 2 with no traceback and a last stderr line ``obliviate CMD: error: ...`` holding ``needles``."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("obliviate ") and ": error: " in last, last
    for n in needles:
        assert n in last, (n, last)
    return last


@pytest.fixture()
def forget_file(tmp_path):
    p = tmp_path / "forget.jsonl"
    p.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Where was author Nora {i} born?",
                                     "answer": f"Nora {i} was born in Oslo in 19{60 + i}."}) + "\n"
                         for i in range(4)))
    return p


# ------------------------------------------------------------------------------ item 1: demo --fresh
def test_demo_fresh_never_deletes_a_folder_it_did_not_make(tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    # a bad --data-source: refused before anything is deleted
    r = cli("demo", "--fresh", "--out", precious, "--data-source", tmp_path / "no-such-tofu")
    one_line_error(r, "no-such-tofu")
    assert (precious / "thesis.tex").read_text() == "years of work"
    # valid settings, but the folder is not a demo run folder: refused, kept
    from obliviate.commands.demo import run_demo
    from obliviate.io import RUN_MARKER, mark_run_dir, remove_run_dir

    with pytest.raises(FileExistsError, match="not made by obliviate demo"):
        run_demo(precious, fresh=True, log=lambda *a: None)
    assert (precious / "thesis.tex").is_file()
    # a folder the demo marked is deleted (and an empty one)
    ours = tmp_path / "ours"
    mark_run_dir(ours, "demo")
    (ours / "teach").mkdir()
    assert remove_run_dir(ours, "demo") and not ours.exists()
    assert (precious / RUN_MARKER).exists() is False


# ------------------------------------------------------------------------------ item 2: non-finite training
def test_nan_term_weight_is_refused(tiny_model_dir, forget_file, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--method", "ga", "--model", tiny_model_dir, "--forget", forget_file, "--out", out,
            "--set", "term_weights.forget_ga=nan", *FAST)
    one_line_error(r, "term_weights.forget_ga", "finite")
    assert not (out / "model").exists()


def test_diverging_run_stops_and_saves_nothing(tiny_model_dir, forget_file, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--method", "ga", "--model", tiny_model_dir, "--forget", forget_file, "--out", out,
            "--set", "lr=1e8", "--set", "max_grad_norm=0", "--set", "max_steps=6", "--set", "batch_size=2",
            "--set", "progress=false", "--set", "max_length=64")
    last = one_line_error(r, "training diverged", "nothing was saved")
    assert "max_grad_norm" in last
    assert not (out / "model").exists()
    losses = [row.get("loss") for row in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())]
    assert 0.0 not in losses  # the NaN filter no longer logs a diverged loss as 0


def _nan_model_dir(tokenizer, tmp_path) -> Path:
    from conftest import build_tiny_llama

    m = build_tiny_llama(tokenizer)
    with torch.no_grad():
        m.model.layers[0].mlp.down_proj.weight[0, 0] = float("nan")
    d = tmp_path / "nan-model"
    m.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def test_eval_of_a_non_finite_model_says_so(tokenizer, forget_file, tmp_path):
    d = _nan_model_dir(tokenizer, tmp_path)
    r = cli("eval", "refusal", "--model", d, "--forget", forget_file, "--out", tmp_path / "ev")
    one_line_error(r, "NaN", "down_proj")
    assert not (tmp_path / "ev" / "metrics.json").exists()


def test_save_refuses_non_finite_weights(tokenizer, tmp_path):
    """Even when the last step's loss was finite, weights gone NaN in that step are never saved."""
    from conftest import build_tiny_llama

    from obliviate.train import TrainingDivergedError, resolve_train_config, train_unlearning
    from test_train import FORGET

    model = build_tiny_llama(tokenizer)
    cfg = resolve_train_config("ulmr", {"max_steps": 1, "batch_size": 2, "progress": False, "max_length": 64})

    orig_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        out = orig_step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("inf"))
        return out

    torch.optim.AdamW.step = step
    try:
        with pytest.raises(TrainingDivergedError, match="NaN/inf"):
            train_unlearning(model, tokenizer, {"forget": FORGET}, cfg, tmp_path / "run")
    finally:
        torch.optim.AdamW.step = orig_step
    assert not (tmp_path / "run" / "model").exists()


# ------------------------------------------------------------------------------ item 7: checkpoints
def _trainer_save_fails_at(step_to_fail: int):
    """Patch Trainer so that writing the checkpoint of ``step_to_fail`` is killed half-way."""
    from transformers import Trainer

    orig = Trainer._save_rng_state

    def fail(self, output_dir):
        if self.state.global_step == step_to_fail:
            raise KeyboardInterrupt("killed while writing a checkpoint")
        return orig(self, output_dir)

    return Trainer, orig, fail


def test_checkpoints_are_atomic_and_resume_skips_incomplete_ones(tokenizer, tmp_path, caplog):
    from conftest import build_tiny_llama

    from obliviate.train import latest_checkpoint, checkpoint_is_complete, resolve_train_config, train_unlearning
    from test_train import FORGET

    cfg = resolve_train_config("ulmr", {"max_steps": 3, "save_steps": 1, "save_total_limit": 5, "batch_size": 2,
                                        "progress": False, "max_length": 64, "lr_scheduler": "constant"})
    out = tmp_path / "run"
    Trainer, orig, fail = _trainer_save_fails_at(2)
    Trainer._save_rng_state = fail
    try:
        with pytest.raises(KeyboardInterrupt):
            train_unlearning(build_tiny_llama(tokenizer), tokenizer, {"forget": FORGET}, cfg, out)
    finally:
        Trainer._save_rng_state = orig
    ck = out / "checkpoints"
    assert (ck / "checkpoint-1").is_dir() and checkpoint_is_complete(ck / "checkpoint-1")
    assert not (ck / "checkpoint-2").exists()  # the half-written one never got its final name
    # a half-written checkpoint left by an older writer is skipped with a warning
    bad = ck / "checkpoint-7"
    bad.mkdir()
    (bad / "model.safetensors").write_bytes(b"\0" * 100)
    with caplog.at_level(logging.WARNING, logger="obliviate.train"):
        assert latest_checkpoint(ck) == str(ck / "checkpoint-1")
    assert "checkpoint-7" in caplog.text and "incomplete" in caplog.text
    shutil.rmtree(bad)
    final = train_unlearning(build_tiny_llama(tokenizer), tokenizer, {"forget": FORGET}, cfg, out,
                             resume_from_checkpoint=True)
    assert (final / "model.safetensors").is_file()
    man = json.loads((out / "manifest.json").read_text())
    assert man["resumed_from"].endswith("checkpoint-1") and man["global_step"] == 3
    assert not list(ck.glob(".staging-*"))


def test_cli_resume_skips_a_half_written_checkpoint(tiny_model_dir, forget_file, tmp_path):
    out = tmp_path / "run"
    common = ["train", "--method", "ulmr", "--model", tiny_model_dir, "--forget", forget_file, "--out", out,
              "--set", "save_steps=1", "--set", "batch_size=2", "--set", "progress=false", "--set", "max_length=64"]
    from obliviate.data.readers import read_records
    from obliviate.train import resolve_train_config, train_unlearning

    sets = [a for a in common[common.index("--set"):] if a != "--set"]
    train_unlearning(str(tiny_model_dir), None, {"forget": read_records(forget_file)},
                     resolve_train_config("ulmr", None, sets + ["max_steps=1"]), out)  # the run to resume
    half = out / "checkpoints" / "checkpoint-9"
    half.mkdir(parents=True)
    (half / "model.safetensors").write_bytes(b"\0" * 64)  # killed mid-write: no trainer_state.json
    r = cli(*common, "--set", "max_steps=2", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "skipping" in r.stderr and "checkpoint-9" in r.stderr
    assert json.loads((out / "manifest.json").read_text())["resumed_from"].endswith("checkpoint-1")


def test_interrupt_message_is_true_for_each_command(monkeypatch, tmp_path, capsys, forget_file, tiny_model_dir):
    import obliviate.train as train_mod

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "train_unlearning", interrupted)
    out = tmp_path / "run"
    args = ["train", "--method", "ga", "--model", str(tiny_model_dir), "--forget", str(forget_file),
            "--out", str(out)]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "no checkpoint was written" in err and "save_steps" in err and "rerun the same command" not in err
    ck = out / "checkpoints" / "checkpoint-4"
    ck.mkdir(parents=True)
    (ck / "trainer_state.json").write_text('{"global_step": 4}')
    (ck / "model.safetensors").write_bytes(b"x")
    assert main(args) == 130
    assert f"rerun the same command with --resume to continue from {ck}" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 130
    assert f"rerun the same command to continue from {ck}" in capsys.readouterr().err
    from obliviate.cli import interrupt_hint
    from argparse import Namespace

    assert "without --fresh" in interrupt_hint(Namespace(command="demo", out="d", fresh=True))
    assert "rerun the command to start again" in interrupt_hint(Namespace(command="merge", out="m"))


# ------------------------------------------------------------------------------ item 8: one resolver
def test_train_out_inside_the_embedded_model_cache_is_refused(forget_file, tmp_path):
    cache = tmp_path / "cache"
    inside = cache / "models" / "smollm2-135m-instruct" / "run"
    r = cli("train", "--method", "ga", "--model", "smollm2-135m-instruct", "--forget", forget_file,
            "--out", inside, *FAST, env={"OBLIVIATE_CACHE": str(cache)})
    one_line_error(r, "inside the input model's folder")
    assert not inside.exists()


def test_out_containing_the_input_model_is_refused(tiny_model_dir, forget_file, tmp_path):
    from obliviate.config import ConfigError
    from obliviate.models import check_output_outside_models, local_model_folder

    model = tmp_path / "runs" / "model"
    shutil.copytree(tiny_model_dir, model)
    with pytest.raises(ConfigError, match="contains the input model's folder"):
        check_output_outside_models(tmp_path / "runs", {"--model": str(model)})
    assert local_model_folder("smollm2-135m-instruct").name == "smollm2-135m-instruct"
    assert local_model_folder("org/some-hub-model") is None


# ------------------------------------------------------------------------------ tracebacks -> one line
@pytest.fixture()
def broken_models(tiny_model_dir, tmp_path):
    """Folders that fail to load: truncated safetensors, bad adapter config, a code-running pickle,
    custom code, and a truncated GGUF file."""
    from obliviate.models import embedded_gguf_path

    d = {}
    t = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, t)
    data = (t / "model.safetensors").read_bytes()
    (t / "model.safetensors").write_bytes(data[: len(data) // 2])
    d["truncated"] = t
    a = tmp_path / "adapter"
    a.mkdir()
    (a / "adapter_config.json").write_text("{not json")
    d["adapter"] = a
    p = tmp_path / "pickle"
    p.mkdir()
    shutil.copy(tiny_model_dir / "config.json", p)
    (p / "pytorch_model.bin").write_bytes(b"\x80\x04cos\nsystem\n(S'echo PWNED'\ntR.")  # os.system pickle
    d["pickle"] = p
    rc = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, rc)
    cfg = json.loads((rc / "config.json").read_text())
    cfg.update(model_type="mything", auto_map={"AutoConfig": "c.C", "AutoModelForCausalLM": "m.M"})
    (rc / "config.json").write_text(json.dumps(cfg))
    d["remote"] = rc
    g = tmp_path / "cut.gguf"
    with open(embedded_gguf_path(), "rb") as f:
        g.write_bytes(f.read(6000))
    d["gguf"] = g
    return d


@pytest.mark.parametrize("kind,needles", [
    ("truncated", ["model.safetensors", "truncated or corrupt"]),
    ("adapter", ["adapter_config.json", "not a valid adapter config"]),
    ("pickle", ["pytorch_model.bin", "refusing to unpickle"]),
    ("remote", ["--trust-remote-code"]),
    ("gguf", ["cut.gguf", "GGUF"]),
])
def test_unloadable_models_give_one_line(broken_models, forget_file, tmp_path, kind, needles, capfd):
    args = ["eval", "refusal", "--model", broken_models[kind], "--forget", forget_file, "--out", tmp_path / "ev"]
    if kind in ("truncated", "gguf"):  # through a subprocess
        r = cli(*args)
    else:  # the same entry point in this process (quicker)
        rc = main([str(a) for a in args])
        out, err = capfd.readouterr()
        r = subprocess.CompletedProcess(args, rc, out, err)
    one_line_error(r, *needles)
    assert "PWNED" not in r.stdout + r.stderr


def test_merge_of_a_truncated_model_and_an_empty_alpha_item(tiny_model_dir, broken_models, tmp_path):
    r = cli("merge", "--base", tiny_model_dir, "--tuned", broken_models["truncated"], "--alpha", "0.5",
            "--out", tmp_path / "m")
    one_line_error(r, "model.safetensors", "truncated or corrupt")
    r = cli("merge", "--base", tiny_model_dir, "--tuned", broken_models["truncated"], "--alpha", "0.2,,0.4",
            "--out", tmp_path / "m")
    one_line_error(r, "empty item")


def test_bad_set_values_and_verbose_traceback(tiny_model_dir, forget_file, tmp_path):
    base = ["train", "--method", "ga", "--model", tiny_model_dir, "--forget", forget_file, "--out", tmp_path / "r"]
    r = cli(*base, "--set", "lora.r=abc")
    one_line_error(r, "lora.r", "integer")
    r = cli(*base, "--set", "lora.r=abc", "-v")  # -v after the subcommand works too
    assert r.returncode == 2 and "Traceback" in r.stderr and "lora.r" in r.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("override,needle", [
    ("lora.r=abc", "lora.r"), ("lora=5", "lora"), ("lora.dropout=x", "lora.dropout"),
    ("lora.target_modules=5", "lora.target_modules"), ("term_weights.forget_ga=abc", "term_weights.forget_ga"),
    ("epochs=.nan", "epochs"), ("term_args.forget_ga.weight=.inf", "term_args.forget_ga.weight"),
])
def test_bad_set_values_are_config_errors(override, needle):
    from obliviate.config import ConfigError
    from obliviate.train import resolve_train_config

    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        resolve_train_config("ga", None, [override])


def test_output_paths_that_are_files(tiny_model_dir, forget_file, tmp_path):
    f = tmp_path / "a-file"
    f.write_text("x")
    r = cli("train", "--method", "ga", "--model", tiny_model_dir, "--forget", forget_file, "--out", f, *FAST)
    one_line_error(r, "not a folder")
    r = cli("eval", "refusal", "--model", tiny_model_dir, "--forget", forget_file, "--out", f / "sub")
    one_line_error(r, str(f))


def test_os_errors_read_as_one_line_with_what_to_do():
    assert format_error(PermissionError(13, "Permission denied", "/data/x.jsonl")) == \
        "Permission denied: /data/x.jsonl; check that you may read / write it (owner, mode, read-only mount)"
    assert "free some space" in format_error(OSError(28, "No space left on device", "/out/model"))
    assert format_error(ValueError("a\n  b")) == "a b"


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "400"

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body, status = {"400": (b'{"error": {"message": "model m does not exist"}}', 400),
                        "500": (b'{"error": {"message": "boom"}}', 500),
                        "garbage": (b"<html>hello</html>", 200)}[self.mode]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture()
def server():
    """A local OpenAI-look-alike on 127.0.0.1 (a free port), answering as ``_Handler.mode`` says."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Handler,), {}))
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("mode,needle", [("400", "HTTP 400"), ("garbage", "not a chat completion"),
                                         ("500", "500"), ("refused", "refused")])
def test_generation_endpoint_failures_give_one_line(server, mode, needle, forget_file, tmp_path):
    """A 4xx, a reply that is not a chat completion, 5xx after retries, a closed port: one line, exit 2."""
    server.RequestHandlerClass.mode = mode
    port = server.server_address[1]
    if mode == "refused":  # a port nobody listens on
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
    url = f"http://127.0.0.1:{port}/v1"
    r = cli("augment", "ulmr", "--forget", forget_file, "--generator", f"openai:{url}#m", "--out", tmp_path / "a",
            "--no-progress", "--request-retries", "1", "--request-backoff", "0.05", "--request-timeout", "10",
            timeout=120)
    last = one_line_error(r, str(port))
    assert needle.lower() in r.stderr.lower() and last


# ------------------------------------------------------------------------------ silently accepted
def test_max_length_cuts_warn_and_a_fully_cut_response_is_refused(tiny_model_dir, tmp_path, tokenizer, caplog):
    from obliviate.data.records import DataError, QARecord
    from obliviate.train import encode_streams, resolve_train_config

    cfg = resolve_train_config("ulmr", {"max_length": 48})
    long = [QARecord(question="Who?", answer="word " * 500, id="big"),
            QARecord(question="Who?", answer="short", id="ok")]
    with caplog.at_level(logging.WARNING, logger="obliviate.train"):
        enc = encode_streams(tokenizer, {"forget": long}, cfg, ["forget"])
    assert len(enc["forget"][0]["input_ids"]) == 48
    assert "cuts 1 of 2 records (big)" in caplog.text and "max_length" in caplog.text
    f = tmp_path / "long_q.jsonl"
    f.write_text(json.dumps({"id": "huge", "question": "why " * 400, "answer": "Because of the weather."}) + "\n")
    r = cli("train", "--method", "ulmr", "--model", tiny_model_dir, "--forget", f, "--out", tmp_path / "r",
            "--set", "max_length=32", "--set", "max_steps=1", "--set", "progress=false")
    one_line_error(r, "huge", "whole response", "max_length")
    with pytest.raises(DataError, match="whole response"):
        encode_streams(tokenizer, {"forget": [QARecord(question="why " * 400, answer="Because.")]}, cfg, ["forget"])


def test_snap_augment_with_only_empty_outputs_is_an_error(monkeypatch, tmp_path, capsys):
    import obliviate.generate.factory as factory
    from obliviate.generate.base import Generator

    class Silent(Generator):
        name = "silent"
        model_id = "silent"

        def _generate(self, prompts, params):
            return [""] * len(prompts)

    monkeypatch.setattr(factory, "make_generator", lambda *a, **k: Silent())
    rc = main(["augment", "snap", "--target", "Nora Oslo", "--out", str(tmp_path / "s"), "--related", "Ada",
               "--categories", "General", "--retain-categories", "General", "--calls-per-category", "1",
               "--no-cache"])
    err = capsys.readouterr().err
    assert rc == 2, err[-2000:]
    assert "every output file" in err and "empty" in err


def test_duplicate_ids_are_named(tmp_path, caplog):
    from obliviate.data.readers import read_records

    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"id": i, "question": f"q{n}", "answer": "a"}) + "\n"
                         for n, i in enumerate(["a", "b", "a", "c", "b", "a"])))
    with caplog.at_level(logging.WARNING):
        recs = read_records(f)
    assert len(recs) == 6
    assert str(f) in caplog.text and "'a' ×3" in caplog.text and "'b' ×2" in caplog.text


def test_report_avg_over_one_metric_and_non_numeric_cells(tmp_path, caplog):
    from obliviate.report import build_report, build_table, read_run

    def run(name, metrics):
        d = tmp_path / name
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"benchmark": "refusal", "metrics": metrics}))
        return d

    only_ua = run("only_ua", {"UA": 0.5, "UA_multihop": None, "RA": None, "TA": None, "Avg": 0.5})
    texty = run("texty", {"UA": "0.9", "RA": 0.8, "TA": 0.7, "Avg": 0.75})
    with caplog.at_level(logging.WARNING, logger="obliviate.report"):
        t = build_table("snap", [read_run(only_ua), read_run(texty)])
    assert t["rows"][0][1:] == ["50.00", "–", "–", "–", "–"]  # no "Avg" of one number
    assert t["rows"][1][-1] == "75.00"
    assert "mean of 1 metric(s) (UA)" in caplog.text
    assert "UA is '0.9'" in caplog.text and "not a number" in caplog.text
    build_report([only_ua, texty], tmp_path / "rep", plots=False)
    assert "not a number" in (tmp_path / "rep" / "report.md").read_text()
