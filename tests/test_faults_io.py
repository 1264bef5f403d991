"""Faults of generation endpoints, run folders, output paths and secrets (issue 12, items 3-6).

A local OpenAI-look-alike on 127.0.0.1 (a free port; every handler bounded, the server stops with
the test) hangs, sends garbage, answers 500 or echoes; the deadline, the error class, Ctrl-C, the
``--request-*`` options and the run config's ``generator:`` mapping are checked against it, in
process and through the real command line.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from obliviate.cli import main
from obliviate.config import ConfigError
from obliviate.generate import APIError, GenerationError, OpenAIChatGenerator, make_generator
from obliviate.generate.factory import GeneratorConfig, generator_identity
from obliviate.io import (Manifest, OutputReplacesInputError, check_outputs_do_not_replace_inputs, is_secret_name,
                          redact, redact_text, redact_url)
from obliviate.pipeline import StageMismatchError, load_run_config, stage_differences, stage_record

ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
SECRET = "sk-live-0123456789-SECRET"


class FaultServer:
    """``mode``: ``hang`` (read the request, never answer; released at teardown or after 10 s),
    ``garbage`` (200 with HTML), ``500`` (always), ``503-then-ok`` (one 503, then answers), ``ok``."""

    def __init__(self):
        self.mode = "ok"
        self.requests: list[dict] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.failed_once = False
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status: int, body: bytes):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with owner.lock:
                    owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    n = len(owner.requests)
                    mode = owner.mode
                    if mode == "503-then-ok" and not owner.failed_once:
                        owner.failed_once = True
                        mode = "503"
                if mode == "hang":
                    owner.release.wait(10)  # bounded: the test ends long before
                    return
                if mode == "garbage":
                    return self._send(200, b"<html><body>It works!</body></html>")
                if mode in ("500", "503"):
                    return self._send(int(mode), b'{"error": {"message": "internal trouble"}}')
                text = f"Could you tell me more about topic number {n}?"
                self._send(200, json.dumps({"object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}}]}).encode())

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    s = FaultServer()
    yield s
    s.close()


@pytest.fixture()
def forget_file(tmp_path):
    p = tmp_path / "forget.jsonl"
    p.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Where was the author Nora {i} born?",
                                     "answer": f"Nora {i} was born in Oslo in 19{60 + i}."}) + "\n" for i in range(2)))
    return p


def cli(*args, timeout=120, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "obliviate", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **ENV}, **kw)


def last_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("obliviate ") and ": error: " in line, line
    return line


# ================================================================== item 3: timeouts, retries, deadline
def test_hanging_server_honours_the_deadline(server):
    server.mode = "hang"
    gen = OpenAIChatGenerator(server.url, "m", timeout=0.3, max_retries=10, backoff=0.05, deadline=1.0, concurrency=2)
    t = time.monotonic()
    with pytest.raises(GenerationError, match=r"no chat completion within the 1 s deadline") as ei:
        gen.generate(["a", "b", "c"])
    took = time.monotonic() - t
    assert took < 2.5, took  # not 10 retries x 0.3 s, and not 3 prompts one after another
    msg = str(ei.value)
    assert isinstance(ei.value, APIError) and f"127.0.0.1:{server.port}" in msg
    assert "--request-timeout" in msg and "\n" not in msg  # says what to do, on one line


@pytest.mark.parametrize("mode,needle", [("garbage", "not a chat completion"), ("500", "HTTP 500")])
def test_garbage_and_500_are_generation_errors(server, mode, needle):
    server.mode = mode
    gen = OpenAIChatGenerator(server.url, "m", timeout=2, max_retries=2, backoff=0.01, concurrency=1)
    with pytest.raises(GenerationError, match=needle) as ei:
        gen.generate(["x"])
    assert server.url in str(ei.value)
    assert server.count == (1 if mode == "garbage" else 3)  # garbage is not retried; 500 is, max_retries times


def test_connection_refused_is_a_generation_error_saying_what_to_do():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    gen = OpenAIChatGenerator(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, backoff=0.01, timeout=1)
    with pytest.raises(GenerationError, match=r"connection refused.*server is running"):
        gen.generate(["x"])


def test_a_retry_after_past_the_deadline_gives_up_at_once(server, monkeypatch):
    server.mode = "500"
    gen = OpenAIChatGenerator(server.url, "m", timeout=1, max_retries=5, backoff=30, deadline=2, concurrency=1)
    t = time.monotonic()
    with pytest.raises(GenerationError, match="deadline"):
        gen.generate(["x"])
    assert time.monotonic() - t < 1.5 and server.count == 1  # never sleeps 30 s past a 2 s deadline


@pytest.fixture
def interactive_sigint():
    """Python's own Ctrl-C handler for SIGINT during the test, as in a terminal: a test run launched as a
    background job inherits SIGINT ignored, and then no KeyboardInterrupt could ever be raised."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)



def test_ctrl_c_stops_a_batch_at_once(server, interactive_sigint):
    """SIGINT while requests hang on a long timeout and others wait in backoff: KeyboardInterrupt within ~0.5 s."""
    server.mode = "hang"
    gen = OpenAIChatGenerator(server.url, "m", timeout=30, max_retries=5, deadline=None, concurrency=3)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    t = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            gen.generate([f"q{i}" for i in range(6)])
    finally:
        timer.cancel()  # a failure before the signal must not leave it to hit a later test
    assert time.monotonic() - t < 1.5
    time.sleep(0.3)
    assert server.count == 3  # no worker started another request after the interrupt


def test_generator_config_request_fields_and_validation(server):
    cfg = GeneratorConfig(backend="openai", base_url=server.url, model="m", timeout=2, max_retries=1, backoff=0.5,
                          deadline=7)
    gen = make_generator(cfg)
    assert (gen.timeout, gen.max_retries, gen.backoff, gen.deadline) == (2, 1, 0.5, 7)
    for bad in ({"deadline": 0}, {"timeout": float("nan")}, {"backoff": -1}):
        with pytest.raises(ConfigError, match=f"generator.{next(iter(bad))}"):
            make_generator({"backend": "openai", "base_url": server.url, "model": "m", **bad})
    # the fields that change outputs, never the request settings or credentials
    ident = generator_identity({"backend": "openai", "base_url": "https://u:pw@h.example/v1?key=abc", "model": "m",
                                "timeout": 5})
    assert ident == {"backend": "openai", "base_url": "https://u:<redacted>@h.example/v1?key=<redacted>", "model": "m"}


def test_augment_cli_against_a_hanging_server_exits_2_with_one_line(server, forget_file, tmp_path):
    server.mode = "hang"
    t = time.monotonic()
    r = cli("augment", "ulmr", "--forget", forget_file, "--out", tmp_path / "a", "--no-progress",
            "--generator", f"openai:{server.url}#m", "--request-timeout", "0.3", "--request-retries", "1",
            "--request-deadline", "1")
    assert r.returncode == 2, r.stderr[-3000:]
    line = last_error_line(r.stderr)
    assert f"127.0.0.1:{server.port}" in line and ("deadline" in line or "no answer" in line), line
    assert server.count <= 4  # 2 prompts in flight x 2 attempts at most
    assert not (tmp_path / "a" / "forget_augmented.jsonl").exists()
    assert time.monotonic() - t < 60


def test_request_options_need_an_openai_generator(forget_file, tmp_path, capsys):
    assert main(["augment", "ulmr", "--forget", str(forget_file), "--out", str(tmp_path / "a"),
                 "--request-timeout", "3"]) == 2
    assert "--request-timeout: only for an openai" in capsys.readouterr().err
    assert main(["augment", "ulmr", "--forget", str(forget_file), "--out", str(tmp_path / "a"),
                 "--generator", "openai:http://127.0.0.1:9/v1#m", "--request-retries", "-1"]) == 2
    assert "--request-retries: must be >= 0" in capsys.readouterr().err


def test_ctrl_c_of_the_cli_acts_at_once(server, forget_file, tmp_path, interactive_sigint):
    server.mode = "hang"
    p = subprocess.Popen([sys.executable, "-m", "obliviate", "augment", "ulmr", "--forget", str(forget_file),
                          "--out", str(tmp_path / "a"), "--no-progress", "--generator", f"openai:{server.url}#m",
                          "--request-timeout", "60"], stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})
    # the fixture's Python-level handler is reset to the default at exec (an ignored SIGINT would be
    # inherited): the child gets Ctrl-C as from a terminal, even when the test run ignores SIGINT
    try:
        deadline = time.monotonic() + 60
        while server.count < 2 and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert server.count >= 2, "the command never reached the server"
        t = time.monotonic()
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=20)
        assert time.monotonic() - t < 3, "Ctrl-C waited for the hanging requests"
        assert rc == 130
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_run_config_accepts_the_generator_mapping_form(server, forget_file, tmp_path, capsys):
    """README "Choosing a generator in a config": the mapping is accepted, its request settings used."""
    server.mode = "hang"
    cfg = {"method": "ulmr", "out": str(tmp_path / "run"), "data": {"forget": str(forget_file)},
           "generator": {"backend": "openai", "base_url": server.url, "model": "m", "timeout": 0.3,
                         "max_retries": 1, "backoff": 0.05, "deadline": 1},
           "eval": {"suite": "none"}}
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert load_run_config(p).generator["deadline"] == 1
    with pytest.raises(ConfigError, match=r"generator\.timeoutt"):
        load_run_config(p, ["generator.timeoutt=3"])
    t = time.monotonic()
    assert main(["run", str(p), "--no-progress"]) == 2
    assert time.monotonic() - t < 10
    err = capsys.readouterr().err
    assert "deadline" in err and f"127.0.0.1:{server.port}" in err


# ================================================================== item 4: run folders and --force
@pytest.fixture()
def tiny_run(tmp_path, tiny_model_dir, server, forget_file):
    """A ULMR run config on the tiny model, augmenting through the local echo server (no eval)."""
    cfg = {"method": "ulmr", "model": str(tiny_model_dir), "out": str(tmp_path / "run"), "seed": 0,
           "generator": f"openai:{server.url}#m", "data": {"forget": str(forget_file)},
           "augment": {"max_retries": 0, "require_instruction": False},
           "train": {"max_steps": 1, "batch_size": 2, "progress": False, "max_length": 64},
           "merge": {"alpha": [0.5]}, "eval": {"suite": "none"}}
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_changed_config_is_refused_listing_fields_then_force_reruns(tiny_run, tmp_path, capsys, forget_file):
    out = tmp_path / "run"
    assert main(["run", str(tiny_run), "--no-progress"]) == 0
    assert (out / "train" / "stage.json").is_file() and (out / "augment" / "stage.json").is_file()
    weights = out / "train" / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    config_before = (out / "config.yaml").read_text()
    capsys.readouterr()
    # a changed training setting and α: refused, naming both, before anything is written
    assert main(["run", str(tiny_run), "--no-progress", "--set", "train.lr=0.003", "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.0001 → 0.003" in err and "train.epochs: " in err and "--force" in err, err
    assert "'augment'" not in err  # the augment stage matches
    assert (out / "config.yaml").read_text() == config_before  # the new config was not written as if it ran
    assert weights.stat().st_mtime_ns == before
    # --force redoes train (and merge after it), reuses augment, and then records the new config
    assert main(["run", str(tiny_run), "--no-progress", "--force", "--set", "train.lr=0.003"]) == 0
    assert weights.stat().st_mtime_ns != before
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["lr"] == 0.003
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["augment"] == "skipped (exists)" and manifest["stages"]["train"] == "done"
    # the same config again: everything reused
    assert main(["run", str(tiny_run), "--no-progress", "--set", "train.lr=0.003"]) == 0
    assert json.loads((out / "manifest.json").read_text())["stages"]["train"] == "skipped (exists)"
    # changed forget data (same path): the augment stage's input differs -> refused
    forget_file.write_text(forget_file.read_text().replace("Oslo", "Bergen"))
    manifest_before = (out / "manifest.json").read_text()
    assert main(["run", str(tiny_run), "--no-progress", "--set", "train.lr=0.003"]) == 2
    assert "input forget: changed" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == manifest_before  # refused before anything was written


def test_stage_record_differences():
    a = stage_record("train", {"model": "m", "train": {"lr": 1e-4, "lora": None}}, {"forget": "aa"})
    b = stage_record("train", {"model": "m", "train": {"lr": 2e-4, "lora": {"r": 8}}}, {"forget": "bb"})
    assert a["fingerprint"] != b["fingerprint"]
    assert stage_record("train", {"model": "m", "train": {"lora": None, "lr": 1e-4}}, {"forget": "aa"}) == a
    d = stage_differences(a, b)
    assert "train.lr: 0.0001 → 0.0002" in d and any(x.startswith("train.lora") for x in d)
    assert any(x.startswith("input forget: changed") for x in d)
    assert not any(x.startswith("input") for x in stage_differences(a, b, inputs=False))
    assert issubclass(StageMismatchError, ConfigError)


# ================================================================== item 5: outputs never replace inputs
def test_helper_refuses_same_file_symlink_hardlink_and_containing_folder(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text("{}\n")
    (tmp_path / "link.jsonl").symlink_to(f)
    os.link(f, tmp_path / "hard.jsonl")
    for out in (f, tmp_path / "link.jsonl", tmp_path / "hard.jsonl", tmp_path / "x" / ".." / "in.jsonl", tmp_path):
        with pytest.raises(OutputReplacesInputError):
            check_outputs_do_not_replace_inputs([f], [out])
    with pytest.raises(OutputReplacesInputError):  # an input given through a symlink
        check_outputs_do_not_replace_inputs([tmp_path / "link.jsonl"], [f])
    check_outputs_do_not_replace_inputs([f, "tofu:forget01", None], [tmp_path / "out.jsonl", tmp_path / "sub"])


def test_augment_refuses_to_overwrite_its_own_input(forget_file, tmp_path, capsys):
    out = tmp_path / "a"
    out.mkdir()
    own = out / "forget_augmented.jsonl"
    own.write_text(forget_file.read_text())
    (tmp_path / "alias.jsonl").symlink_to(own)
    for given in (own, tmp_path / "alias.jsonl"):
        assert main(["augment", "ulmr", "--forget", str(given), "--out", str(out), "--no-progress",
                     "--generator", "openai:http://127.0.0.1:9/v1#m"]) == 2
        assert "would overwrite the input" in capsys.readouterr().err
    assert own.read_text() == forget_file.read_text()


def test_report_refuses_to_overwrite_the_runs_own_report(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"benchmark": "tofu", "metrics": {"forget_rouge": 0.5}}))
    (run / "report.md").write_text("the evaluation's own report\n")
    assert main(["report", str(run), "--out", str(run), "--no-plots"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert (run / "report.md").read_text() == "the evaluation's own report\n"
    assert main(["report", str(run), "--out", str(run / "tables"), "--no-plots"]) == 0  # a sub-folder is fine
    assert (run / "tables" / "report.md").is_file() and (run / "report.md").read_text().startswith("the evaluation")


def test_eval_refuses_responses_inside_its_own_outputs(tmp_path, capsys):
    out = tmp_path / "ev"
    out.mkdir()
    rows = out / "samples.jsonl"
    rows.write_text(json.dumps({"set": "forget", "response": "I cannot help with that."}) + "\n")
    assert main(["eval", "refusal", "--responses", str(rows), "--out", str(out)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert "I cannot help" in rows.read_text()


# ================================================================== item 6: secrets
@pytest.mark.parametrize("name", ["api_key", "apikey", "API-KEY", "token", "hf_token", "access_token", "password",
                                  "db_password", "secret", "client_secret", "authorization", "x-api-key",
                                  "openai_api_key", "key", "bearer", "cookie"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["max_new_tokens", "rewrite_max_new_tokens", "question_max_new_tokens",
                                  "max_tokens", "num_tokens", "api_key_env", "pad_token", "eos_token",
                                  "pad_token_id", "answer_key", "question_key", "tokenizer", "keyword", "monkey",
                                  "max_length", "batch_size", "token_budget_tokens"])
def test_harmless_names(name):
    assert not is_secret_name(name)


def test_redaction_of_urls_and_budgets():
    assert redact_url("https://user:hunter2@api.example.com/v1?api_key=abc&x=1&token=t#frag") == \
        "https://user:<redacted>@api.example.com/v1?api_key=<redacted>&x=1&token=<redacted>#frag"
    assert redact_url("http://sk-bare@h/v1") == "http://<redacted>@h/v1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_text(f"openai:https://api.x.io/v1?key={SECRET}#gpt") == "openai:https://api.x.io/v1?key=<redacted>#gpt"
    assert redact_text(f"generator.api_key={SECRET}") == "generator.api_key=<redacted>"
    cfg = {"max_new_tokens": 96, "question_max_new_tokens": 1024, "api_key_env": "OPENAI_API_KEY",
           "generator": {"base_url": f"http://u:{SECRET}@h/v1", "api_key": SECRET}, "argv": ["--generator",
                                                                                            f"openai:http://h/v1?token={SECRET}#m"]}
    r = redact(cfg)
    assert SECRET not in json.dumps(r)
    assert r["max_new_tokens"] == 96 and r["question_max_new_tokens"] == 1024 and r["api_key_env"] == "OPENAI_API_KEY"


def test_url_credentials_never_reach_manifest_or_logs(server, forget_file, tmp_path, caplog):
    server.mode = "503-then-ok"
    url = f"http://user:{SECRET}@127.0.0.1:{server.port}/v1?api_key={SECRET}2"
    out = tmp_path / "a"
    with caplog.at_level("WARNING"):
        rc = main(["augment", "ulmr", "--forget", str(forget_file), "--out", str(out), "--no-progress",
                   "--generator", f"openai:{url}#m", "--allow-statement-rewrites", "--request-backoff", "0.01",
                   "--max-retries", "0"])
    assert rc == 0
    assert any("retry 1/5" in r.getMessage() for r in caplog.records)  # the 503 was logged...
    assert SECRET not in caplog.text and "<redacted>" in caplog.text  # ...with the URL redacted
    for f in out.iterdir():
        if f.is_file():
            assert SECRET not in f.read_text(errors="replace"), f
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["max_new_tokens"] == 96  # budgets are no longer hidden
    # the credentials still work: Basic auth from user info, the query string kept on the request
    req = server.requests[-1]
    assert req["path"] == f"/v1/chat/completions?api_key={SECRET}2"
    assert req["headers"]["Authorization"] == "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()
    assert SECRET not in repr(make_generator(f"openai:{url}#m"))


def test_manifest_redacts_argv_and_inputs(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["obliviate", "augment", "--generator", f"openai:https://h/v1?key={SECRET}#m"])
    m = Manifest(tmp_path, "x", config={"max_new_tokens": 8})
    m.add_input("generator", f"openai:https://h/v1?key={SECRET}#m")
    text = m.write().read_text()
    assert SECRET not in text and '"max_new_tokens": 8' in text
