"""Batched scoring equals one-at-a-time and HF's loss; TOFU / RWKU evaluation and their CLIs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import RWKU_DIR, TOFU_DIR

from obliviate.data.formatting import encode_example, prompt_text
from obliviate.evals import scoring as S
from obliviate.evals.rwku import TABLE4_COLUMNS, evaluate_rwku, probe_prompt
from obliviate.evals.tofu import TABLE3_COLUMNS, UTILITY_KEYS, evaluate_tofu, load_retain_truth_ratios

PAIRS = [
    ("What is the capital of France?", "Paris."),
    ("What is the capital of France?", "It is Paris, the city of light."),
    ("What is the capital of France?", "London."),
    ("Who wrote Hamlet? Please tell me in detail.", "William Shakespeare wrote Hamlet around 1600."),
    ("Who wrote Hamlet? Please tell me in detail.", "Marlowe"),
    ("2+2?", "4"),
]


def _hf_loss(model, ids, labels):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss.item()


def test_sequence_logprobs_batched_equals_single_and_hf_loss(tiny_model, tokenizer):
    batched = S.sequence_logprobs(tiny_model, tokenizer, PAIRS, batch_size=4)
    single = [S.sequence_logprobs(tiny_model, tokenizer, [p], batch_size=1)[0] for p in PAIRS]
    for (sb, nb), (ss, ns), pair in zip(batched, single, PAIRS):
        assert nb == ns
        assert sb == pytest.approx(ss, abs=1e-3)
        enc = encode_example(tokenizer, *pair)
        assert nb == sum(1 for x in enc["labels"] if x != -100)
        # HF's loss is the mean NLL over the response labels
        assert -sb / nb == pytest.approx(_hf_loss(tiny_model, enc["input_ids"], enc["labels"]), abs=1e-4)


def test_shared_prefix_path_equals_flat_path(tiny_model, tokenizer):
    items = []
    for p in PAIRS:
        enc = encode_example(tokenizer, *p)
        n = sum(1 for x in enc["labels"] if x == -100)
        items.append((enc["input_ids"][:n], enc["input_ids"][n:]))
    shared = S.score_token_ids(tiny_model, items, batch_size=3, pad_token_id=0, share_prefix=True)
    flat = S.score_token_ids(tiny_model, items, batch_size=3, pad_token_id=0, share_prefix=False)
    for (a, na), (b, nb) in zip(shared, flat):
        assert na == nb and a == pytest.approx(b, abs=1e-3)
    with pytest.raises(ValueError, match="prefix is empty"):
        S.score_token_ids(tiny_model, [([], [1, 2])])
    with pytest.raises(ValueError, match="batch_size"):
        S.score_token_ids(tiny_model, items, batch_size=0)
    with pytest.raises(TypeError, match="pairs"):
        S.sequence_logprobs(tiny_model, tokenizer, [("only a prompt",)])


def test_mean_loss_next_token_and_continuations(tiny_model, tokenizer):
    texts = ["The quick brown fox jumps over the lazy dog.", "Hello there, general Kenobi!", "A short one"]
    losses = S.mean_loss(tiny_model, tokenizer, texts, batch_size=2)
    for t, loss in zip(texts, losses):
        ids = tokenizer(t)["input_ids"]
        assert loss == pytest.approx(_hf_loss(tiny_model, ids, ids), abs=1e-4)
    prompts = ["Question: 2+2?\nA. 3\nB. 4\nAnswer:", "Pick one.\nAnswer:"]
    cand = [tokenizer.encode(" A", add_special_tokens=False)[-1], tokenizer.encode(" B", add_special_tokens=False)[-1]]
    got = S.next_token_logprobs(tiny_model, tokenizer, prompts, cand, batch_size=2)
    for p, lp in zip(prompts, got):
        ids = tokenizer(p, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            ref = torch.log_softmax(tiny_model(torch.tensor([ids])).logits[0, -1], -1)[cand].tolist()
        assert lp == pytest.approx(ref, abs=1e-4)
    sc = S.score_continuations(tiny_model, tokenizer, ["Q: sky colour?\nA:", "Q: sky colour?\nA:"], [" blue", " red"])
    for (s, n), cont in zip(sc, [" blue", " red"]):
        pre = tokenizer("Q: sky colour?\nA:", add_special_tokens=False)["input_ids"]
        c = tokenizer(cont, add_special_tokens=False)["input_ids"]
        assert n == len(c)
        assert -s / n == pytest.approx(_hf_loss(tiny_model, pre + c, [-100] * len(pre) + c), abs=1e-4)


def test_generation_batched_equals_single(tiny_model, tokenizer):
    qs = ["What is the capital of France?", "Who wrote Hamlet? Please answer in detail."]
    batched = S.generate_answers(tiny_model, tokenizer, qs, max_new_tokens=4, batch_size=2)
    single = [S.generate_answers(tiny_model, tokenizer, [q], max_new_tokens=4, batch_size=1)[0] for q in qs]
    assert batched == single
    prompts = [prompt_text(tokenizer, q) + "Answer:" for q in qs]
    bt = S.generate_from_text(tiny_model, tokenizer, prompts, max_new_tokens=4, batch_size=2, stop_strings=["\n"])
    st = [S.generate_from_text(tiny_model, tokenizer, [p], max_new_tokens=4, batch_size=1, stop_strings=["\n"])[0]
          for p in prompts]
    assert bt == st and all("\n" not in a for a in bt)


def test_evaluate_tofu_all_keys_and_forget_quality(tiny_model, tokenizer):
    metrics, rows = evaluate_tofu(tiny_model, tokenizer, source=TOFU_DIR, max_samples=2, batch_size=8,
                                  max_new_tokens=3, retain_result=[0.5, 0.9, 1.1], progress=False)
    for _, cols in TABLE3_COLUMNS:
        for _, key in cols:
            assert 0.0 <= metrics[key] <= 1.0, key
    assert 0.0 <= metrics["forget_quality"] <= 1.0
    assert metrics["model_utility"] is not None and metrics["model_utility"] >= 0
    assert len(metrics["forget_truth_ratios"]) == 2
    assert {r["set"] for r in rows} == {"forget", "retain", "real_authors", "world_facts"}
    row = rows[0]
    for key in ("question", "reference", "generation", "rouge_l_recall", "prob", "truth_ratio", "perturbed_norm_probs"):
        assert key in row
    # per-sample truth ratio is recomputable from the stored probabilities (geometric mean / base)
    gm = math.exp(sum(math.log(p) for p in row["perturbed_norm_probs"]) / len(row["perturbed_norm_probs"]))
    assert row["truth_ratio"] == pytest.approx(gm / row["base_norm_prob"])
    assert set(UTILITY_KEYS) <= set(metrics)


def test_load_retain_truth_ratios_forms(tmp_path):
    assert load_retain_truth_ratios([1, 2]) == [1.0, 2.0]
    (tmp_path / "metrics.json").write_text(json.dumps({"forget_truth_ratios": [0.5, 0.7]}))
    assert load_retain_truth_ratios(tmp_path) == [0.5, 0.7]
    (tmp_path / "s.jsonl").write_text('{"set": "forget", "truth_ratio": 0.3}\n{"set": "retain", "truth_ratio": 9}\n')
    assert load_retain_truth_ratios(tmp_path / "s.jsonl") == [0.3]
    (tmp_path / "eval_log_forget.json").write_text(json.dumps(
        {"avg_paraphrased_loss": {"0": 1.0}, "average_perturb_loss": {"0": [2.0, 4.0]}}))
    assert load_retain_truth_ratios(tmp_path / "eval_log_forget.json") == [pytest.approx(math.exp(1.0 - 3.0))]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="forget_truth_ratios"):
        load_retain_truth_ratios(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError):
        load_retain_truth_ratios(tmp_path / "missing.json")


def test_evaluate_rwku_all_keys(tiny_model, tokenizer):
    metrics, rows = evaluate_rwku(tiny_model, tokenizer, "1_Stephen_King", source=RWKU_DIR, max_samples=2, utility_max_samples=1,
                                  batch_size=8, max_new_tokens=3, bbh_max_new_tokens=3, fluency_max_new_tokens=4,
                                  progress=False)
    for _, cols in TABLE4_COLUMNS:
        for _, key in cols:
            assert metrics[key] is not None and not math.isnan(metrics[key]), key
    assert metrics["mia_fm"] > 0 and metrics["mia_rm"] > 0
    assert 0 <= metrics["utility_gen"] <= 1 and metrics["utility_gen_n"] == 1
    sets = {r["set"] for r in rows}
    assert {"forget_level1", "forget_level2", "forget_level3", "neighbor_level1", "neighbor_level2", "forget_mia",
            "retain_mia", "retain_mmlu", "retain_bbh", "truthful", "triviaqa", "fluency"} <= sets
    with pytest.raises(ValueError, match="utility"):
        evaluate_rwku(tiny_model, tokenizer, "1_Stephen_King", source=RWKU_DIR, utility=["gsm8k"])


def test_probe_prompts_follow_rwku(tokenizer):
    fb = probe_prompt(tokenizer, "Stephen King is an American ___", 1)
    assert "Please complete the blank in the following question.\nQuestion: Stephen King" in fb
    assert fb.endswith("Answer:")
    assert probe_prompt(tokenizer, "Who wrote It?", 3, "affirmative suffix").endswith(
        prompt_text(tokenizer, "Please briefly answer the following question.\nQuestion: Who wrote It?"))


def _cli(argv):
    from obliviate.cli import main

    return main(argv)


def test_cli_eval_tofu_and_rwku_write_all_files(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "tofu"
    rc = _cli(["eval", "tofu", "--model", str(tiny_model_dir), "--out", str(out), "--data-source", str(TOFU_DIR),
               "--max-samples", "2", "--max-new-tokens", "2", "--batch-size", "8", "--no-progress",
               "--retain-result", json_list(tmp_path, [0.4, 0.8])])
    assert rc == 0
    for name in ("metrics.json", "samples.jsonl", "report.md", "manifest.json"):
        assert (out / name).is_file(), name
    data = json.loads((out / "metrics.json").read_text())
    assert data["benchmark"] == "tofu" and "model_utility" in data["metrics"] and data["forget_truth_ratios"]
    assert "Forget Set R" in (out / "report.md").read_text()
    assert len((out / "samples.jsonl").read_text().splitlines()) == 8
    # a finished run is a valid retain reference for the next one
    assert len(load_retain_truth_ratios(out)) == 2

    out2 = tmp_path / "rwku"
    rc = _cli(["eval", "rwku", "--model", str(tiny_model_dir), "--target", "Stephen King", "--out", str(out2),
               "--data-source", str(RWKU_DIR), "--max-samples", "1", "--max-new-tokens", "2", "--utility", "mmlu",
               "--no-progress"])
    assert rc == 0
    data = json.loads((out2 / "metrics.json").read_text())
    assert data["target"] == "Stephen King" and "utility_gen" in data["metrics"]
    assert json.loads((out2 / "manifest.json").read_text())["command"] == "eval rwku"


def json_list(tmp_path, values):
    p = tmp_path / "retain_trs.json"
    p.write_text(json.dumps(values))
    return str(p)


@pytest.mark.parametrize("argv, message", [
    (["eval", "tofu", "--model", "MODEL", "--out", "OUT", "--data-source", "/nonexistent/tofu"], "--data-source"),
    (["eval", "tofu", "--model", "MODEL", "--out", "OUT", "--sets", "forget,bogus"], "--sets"),
    (["eval", "tofu", "--model", "MODEL", "--out", "OUT", "--retain-result", "/nonexistent.json"], "retain-result"),
    (["eval", "rwku", "--model", "MODEL", "--out", "OUT", "--target", "Nobody Atall", "--data-source", "RWKU"],
     "unknown RWKU target"),
    (["eval", "rwku", "--model", "MODEL", "--out", "OUT", "--target", "Stephen King", "--utility", "gsm8k"],
     "--utility"),
])
def test_cli_validates_before_loading(argv, message, tiny_model_dir, tmp_path, capsys):
    subst = {"MODEL": str(tiny_model_dir), "OUT": str(tmp_path / "o"), "RWKU": str(RWKU_DIR)}
    rc = _cli([subst.get(a, a) for a in argv])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_cli_rejects_bad_batch_size(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _cli(["eval", "tofu", "--model", str(tiny_model_dir), "--out", str(tmp_path), "--batch-size", "0"])
    assert "positive integer" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_eval_tofu_embedded_default(tmp_path):
    out = tmp_path / "run"
    rc = _cli(["eval", "tofu", "--model", "smollm2-135m-instruct", "--out", str(out), "--data-source", str(TOFU_DIR),
               "--max-samples", "2", "--max-new-tokens", "16", "--no-progress"])
    assert rc == 0
    data = json.loads((out / "metrics.json").read_text())
    m = data["metrics"]
    assert data["forget_split"] == "forget01" and m["forget_n"] == 2
    # a real instruct model answers on topic: its greedy answers overlap the references
    assert m["forget_rouge"] > 0.1 and m["world_facts_rouge"] > 0.0
    assert 0 < m["forget_prob"] < 1 and 0 <= m["model_utility"] <= 1
    rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert all(r["generation"] for r in rows)
    assert "forget01" in (out / "report.md").read_text()


def test_eval_data_source_defaults_like_data_specs(tiny_model_dir, monkeypatch):
    """Without --data-source, eval tofu / rwku read where tofu:/rwku: specs read ($OBLIVIATE_*, ../shared/data)."""
    from obliviate.cli import build_parser
    from obliviate.data.sources import default_rwku_source, default_tofu_source
    from obliviate.commands import eval_rwku as rwku_cli, eval_tofu as tofu_cli

    monkeypatch.delenv("OBLIVIATE_TOFU", raising=False)
    monkeypatch.delenv("OBLIVIATE_RWKU", raising=False)
    p = build_parser()
    a = p.parse_args(["eval", "tofu", "--model", str(tiny_model_dir), "--out", "/tmp/x"])
    assert a.data_source is None
    tofu_cli._validate(a)
    assert a.data_source == default_tofu_source()
    if TOFU_DIR.is_dir():
        assert Path(a.data_source).resolve() == TOFU_DIR.resolve()
    b = p.parse_args(["eval", "rwku", "--model", str(tiny_model_dir), "--target", "Stephen King", "--out", "/tmp/y"])
    rwku_cli._validate(b)
    assert b.data_source == default_rwku_source()
    monkeypatch.setenv("OBLIVIATE_TOFU", str(TOFU_DIR))
    c = p.parse_args(["eval", "tofu", "--model", str(tiny_model_dir), "--out", "/tmp/z"])
    tofu_cli._validate(c)
    assert c.data_source == str(TOFU_DIR)


def test_common_prefix_groups():
    shots = list(range(100, 160))  # a 60-token few-shot prefix
    enc = [shots + [1, 2, 3], [7, 8, 9, 10], shots + [4, 5], shots[:50] + [6], shots + [1, 2, 3, 9]]
    groups = S.common_prefix_groups(enc, min_prefix=16)
    by_member = {i: pre for pre, members in groups.items() for i in members}
    assert sorted(by_member) == [0, 1, 2, 3, 4]
    # the prompts built on the shots share one group; the one that shares only 50 of them (still at least half
    # of its own length) joins it, and the group's prefix is what all of them share
    assert by_member[0] == by_member[2] == by_member[3] == by_member[4] == tuple(shots[:50])
    # the short unrelated prompt is alone, keyed by all but its last token
    assert by_member[1] == (7, 8, 9)
    assert sorted(S.common_prefix_groups(enc[:3], min_prefix=16)[tuple(shots)]) == [0, 2]
    for pre, members in groups.items():
        for m in members:
            assert tuple(enc[m][:len(pre)]) == pre and len(enc[m]) > len(pre)


def test_next_token_logprobs_shared_prefix_equals_flat(tiny_model, tokenizer):
    """Few-shot prompts of one task: the shared-prefix path gives the flat path's numbers."""
    shots = "".join(f"Question: what is {i} plus {i}?\nA. {2 * i}\nB. {i}\nAnswer: A\n\n" for i in range(1, 6))
    prompts = [shots + f"Question: what is {q}?\nA. yes\nB. no\nAnswer:" for q in ("7 times 3", "the sky", "a cat")]
    prompts += ["Another task entirely.\nAnswer:", shots.replace("plus", "minus") + "Question: 9?\nAnswer:"]
    cand = [tokenizer.encode(" A", add_special_tokens=False)[-1], tokenizer.encode(" B", add_special_tokens=False)[-1]]
    flat = S.next_token_logprobs(tiny_model, tokenizer, prompts, cand, batch_size=3, share_prefix=False)
    shared = S.next_token_logprobs(tiny_model, tokenizer, prompts, cand, batch_size=3, share_prefix=True)
    auto = S.next_token_logprobs(tiny_model, tokenizer, prompts, cand, batch_size=3)
    for a, b, c in zip(flat, shared, auto):
        assert a == pytest.approx(b, abs=1e-4) and a == pytest.approx(c, abs=1e-4)


def test_generate_from_text_stop_regex_keeps_first_match(tiny_model, tokenizer):
    """Stopping at the first regex match gives a prefix of the full generation with the same first match."""
    import re

    prompts = ["Q: name a colour.\nA:", "Q: count to three.\nA:", "Tell me something."]
    full = S.generate_from_text(tiny_model, tokenizer, prompts, max_new_tokens=24, batch_size=3)
    # a pattern that matches early in at least one row's full text
    pat = next(p for p in (r"[a-z]{2}", r"\w\w", r"\S") if any(re.search(p, t[:-3] or "x") for t in full))
    cut = S.generate_from_text(tiny_model, tokenizer, prompts, max_new_tokens=24, batch_size=3, stop_regex=pat)
    shorter = 0
    for f, c in zip(full, cut):
        assert f.startswith(c)
        mf, mc = re.search(pat, f), re.search(pat, c)
        assert (mf is None) == (mc is None) and (mf is None or mf.group(0) == mc.group(0))
        shorter += len(c) < len(f)
    assert shorter >= 1


def test_generate_from_text_shared_prefix_equals_flat(tiny_model, tokenizer):
    """Few-shot prompts sharing their shots: prefix-cached generation gives the plain path's texts."""
    shots = "".join(f"Q: what comes after {i}?\nA: Let's think. So the answer is {i + 1}.\n\n" for i in range(1, 7))
    prompts = [shots + f"Q: what comes after {q}?\nA:" for q in ("10", "twenty", "a hundred and one")]
    prompts += ["An unrelated prompt.\nA:", shots + "Q: and after 7?\nA:"]
    flat = S.generate_from_text(tiny_model, tokenizer, prompts, max_new_tokens=12, batch_size=3, share_prefix=False)
    shared = S.generate_from_text(tiny_model, tokenizer, prompts, max_new_tokens=12, batch_size=3, share_prefix=True)
    assert shared == flat
    groups = S.common_prefix_groups([tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts])
    assert max(len(m) for m in groups.values()) == 4  # the shared path was really taken for the shot prompts


def test_generation_and_choice_scoring_run_without_autograd(tiny_model, tokenizer):
    """Every forward of the eval helpers (shared-prefix prefill included) runs with grad disabled."""
    seen = []
    h = tiny_model.register_forward_hook(lambda *a: seen.append(torch.is_grad_enabled()))
    try:
        shots = "".join(f"Q: {i}?\nA: {i}.\n\n" for i in range(12))
        prompts = [shots + "Q: x?\nA:", shots + "Q: y?\nA:"]
        S.generate_from_text(tiny_model, tokenizer, prompts, max_new_tokens=3, share_prefix=True)
        S.next_token_logprobs(tiny_model, tokenizer, prompts, [1, 2], share_prefix=True)
    finally:
        h.remove()
    assert seen and not any(seen)


# ---------------------------------------------------------------- conventions that shift numbers (issue #15.9)

def test_generation_budgets_follow_the_references():
    """TOFU: 200 new tokens (open-unlearning's generation config); RWKU: BBH / fluency 256 (RWKU's eval code)."""
    import argparse
    import inspect

    from obliviate.commands import eval_rwku as rwku_cli, eval_tofu as tofu_cli
    from obliviate.evals.rwku import evaluate_rwku as er
    from obliviate.evals.tofu import DEFAULT_MAX_NEW_TOKENS

    assert DEFAULT_MAX_NEW_TOKENS == 200
    assert inspect.signature(evaluate_tofu).parameters["max_new_tokens"].default == 200
    p = argparse.ArgumentParser()
    tofu_cli.add_arguments(p)
    assert p.parse_args(["--model", "m", "--out", "o"]).max_new_tokens == 200
    sig = inspect.signature(er).parameters
    assert sig["bbh_max_new_tokens"].default == 256 and sig["fluency_max_new_tokens"].default == 256
    assert sig["max_new_tokens"].default == 30
    p = argparse.ArgumentParser()
    rwku_cli.add_arguments(p)
    a = p.parse_args(["--model", "m", "--target", "t", "--out", "o"])
    assert (a.bbh_max_new_tokens, a.fluency_max_new_tokens, a.max_new_tokens) == (256, 256, 30)


def test_rwku_report_prints_mia_loss_times_100():
    from obliviate.evals.rwku import rwku_report

    md = rwku_report({"forget_fb": 0.8573, "mia_fm": 2.2262, "mia_rm": 2.1934, "utility_flu": 5.1}, model="m")
    row = [ln for ln in md.splitlines() if ln.startswith("| m |")][0]
    assert row == "| m | 85.73 | 222.62 | 219.34 | 5.10 |"  # ULMR Table 4: Base Model FM 222.62, RM 219.34


def _tofu_copy(tmp_path, n=2):
    """A local TOFU folder with the first ``n`` rows; real authors / world facts rows get a paraphrase."""
    d = tmp_path / "tofu"
    d.mkdir()
    for f in TOFU_DIR.glob("*.jsonl"):
        rows = [json.loads(x) for x in f.read_text().splitlines()[:n]]
        if f.stem in ("real_authors_perturbed", "world_facts_perturbed"):
            for r in rows:
                r["paraphrased_answer"] = "Something quite different, said at length: " + r["answer"]
        (d / f.name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_truth_ratio_base_is_the_answer_for_real_authors_and_world_facts(tiny_model, tokenizer, tmp_path):
    """open-unlearning's ra/wf_Truth_Ratio divide by P(answer) even when a row has a paraphrase;
    forget / retain divide by P(paraphrased_answer)."""
    from obliviate.data.records import QARecord
    from obliviate.evals.tofu import truth_ratio_base

    r = QARecord(question="q", answer="a", paraphrased_answer="p")
    assert truth_ratio_base(r, "forget") == "p" and truth_ratio_base(r, "retain") == "p"
    assert truth_ratio_base(r, "real_authors") == "a" and truth_ratio_base(r, "world_facts") == "a"
    assert truth_ratio_base(QARecord(question="q", answer="a"), "forget") == "a"
    src = _tofu_copy(tmp_path)
    _, rows = evaluate_tofu(tiny_model, tokenizer, source=src, batch_size=8, max_new_tokens=2,
                            sets=["forget", "real_authors", "world_facts"], progress=False)
    for row in rows:
        if row["set"] == "forget":
            assert row["base_norm_prob"] != pytest.approx(row["answer_norm_prob"])  # the paraphrase
        else:
            assert row["base_norm_prob"] == pytest.approx(row["answer_norm_prob"])


# a chat template with no system role (Mistral-Instruct's style: raises on anything but alternating turns)
NO_SYSTEM_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}")
# and one that silently drops a system message
DROPPING_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}<u>{{ m['content'] }}</u>"
                     "{% elif m['role'] == 'assistant' %}<a>{{ m['content'] }}</a>{% endif %}{% endfor %}"
                     "{% if add_generation_prompt %}<a>{% endif %}")


@pytest.mark.parametrize("template", [NO_SYSTEM_TEMPLATE, DROPPING_TEMPLATE])
def test_system_prompt_merges_into_first_user_turn_without_system_role(tokenizer, template):
    import copy

    from obliviate.data.formatting import fit_system_role, render_chat, supports_system_role

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    assert not supports_system_role(tok)
    sys_ = "If the question asks about Stephen King, say that you do not know."
    text = prompt_text(tok, "Who wrote It?", system=sys_)
    assert sys_ + "\n\nWho wrote It?" in text  # merged into the first user turn, not dropped, no error
    msgs = fit_system_role(tok, [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
                                 {"role": "assistant", "content": "A"}, {"role": "user", "content": "U2"}])
    assert [m["content"] for m in msgs] == ["S\n\nU1", "A", "U2"]
    # the scoring / generation paths of the Prompting baseline use it too
    enc = encode_example(tok, "Who wrote It?", "I don't know.", system=sys_)
    assert tok.decode(enc["input_ids"]).count("Stephen King") == 1
    assert "Stephen King" in render_chat(tok, [{"role": "system", "content": sys_}, {"role": "user", "content": "x"}])
    # a template with a system role keeps it as a system message
    assert supports_system_role(tokenizer)
    assert fit_system_role(tokenizer, [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])[0] == \
        {"role": "system", "content": "S"}


def test_generator_with_system_prompt_on_template_without_system_role(tiny_model, tokenizer):
    import copy

    from obliviate.evals.scoring import generate_answers

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = NO_SYSTEM_TEMPLATE
    out = generate_answers(tiny_model, tok, ["Who wrote It?"], max_new_tokens=2, system="Refuse questions.")
    assert len(out) == 1 and isinstance(out[0], str)
