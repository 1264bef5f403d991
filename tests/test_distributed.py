"""Multi-process training: 2-process CPU DDP (gloo, torchrun) gives the weights of 1 process; under
FSDP2 (rows sharded over 2 CPU ranks) the SWD regularizer and the reference cache match the unsharded model.

The tiny Llama (real SmolLM2 tokenizer) is trained for 2 steps with ``obliviate.train.train_unlearning``
under ``torchrun --nproc_per_node 2`` with per-device batch 2, and in this process with batch 4 (the
same global batch). Data order is the trainer's seeded shuffle (length grouping off, so the order
does not depend on the batch size); every example of a stream has the same number of response
tokens, so the mean of the two ranks' token-mean losses equals the global token-mean loss and the
DDP-averaged gradient equals the single-process one. Plain SGD makes the update proportional to
the gradient; the test compares both the weights and the updates.

Covered in one launch: ``graddiff`` (GA + retain NLL), ``npo`` (reference log-probs cached once
per sample before training, looked up by sample id on each rank), ``kl`` (live frozen reference
copy on each rank) and ``snap`` (retain NLL + λ·sliced-Wasserstein regularizer, computed on the
unwrapped module of each rank).

``accelerate launch`` cannot start two CPU processes on one machine without MPI (its multi-CPU
launcher is ``mpirun``), so the test uses torchrun, which the HF Trainer understands the same way.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from conftest import TOFU_DIR, build_tiny_llama

REPO = Path(__file__).resolve().parents[1]
METHODS = ["graddiff", "npo", "kl", "snap"]
PER_DEVICE, NPROC, STEPS = 2, 2, 2

#: Run by each torchrun process: train every method with the per-device batch given.
WORKER = r'''
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from obliviate.data.records import QARecord
from obliviate.train import train_unlearning
sys.path.insert(0, sys.argv[4])
from test_distributed import make_config

model_dir, out_root, data_json = sys.argv[1:4]
methods, batch = sys.argv[5].split(","), int(sys.argv[6])
data = json.loads(Path(data_json).read_text())
streams = {s: [QARecord.from_dict(r) for r in rows] for s, rows in data.items()}
for m in methods:
    train_unlearning(model_dir, None, streams, make_config(m, batch), Path(out_root) / m)
print("WORKER_DONE", flush=True)
'''


def make_config(method: str, batch: int):
    """The method's preset with SGD, constant lr, no grouping/warm-up/decay, 2 steps (identical in both runs)."""
    from obliviate.train import resolve_train_config

    overrides = {"batch_size": batch, "max_steps": STEPS, "optim": "sgd", "lr": 0.05, "lr_scheduler": "constant",
                 "warmup_ratio": 0.0, "weight_decay": 0.0, "group_by_length": False, "progress": False,
                 "gradient_checkpointing": False, "bf16": False, "max_length": 128, "seed": 7}
    if method == "snap":
        overrides["regularizer_args"] = {"n_projections": 8}
    return resolve_train_config(method, overrides)


def _equal_length_records(tokenizer, split: str, n: int) -> list[dict]:
    """``n`` TOFU rows of ``split`` whose encoded responses all have the same number of tokens."""
    from obliviate.data.formatting import encode_example
    from obliviate.data.tofu import load_tofu

    groups = defaultdict(list)
    for r in load_tofu(split, TOFU_DIR)[:600]:
        labels = encode_example(tokenizer, r.question, r.answer, max_length=128)["labels"]
        groups[sum(1 for x in labels if x != -100)].append(r)
        best = max(groups.values(), key=len)
        if len(best) >= n:
            return [x.to_dict() for x in best[:n]]
    raise AssertionError(f"not enough equal-length responses in {split}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.skipif(not TOFU_DIR.is_dir(), reason="needs ../shared/data/tofu")
def test_two_process_ddp_matches_single_process(tokenizer, tmp_path):
    from obliviate.data.records import QARecord
    from obliviate.train import train_unlearning

    model_dir = tmp_path / "tiny"
    build_tiny_llama(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = {"forget": _equal_length_records(tokenizer, "forget10", 8),
            "retain": _equal_length_records(tokenizer, "retain90", 8)}
    data_json = tmp_path / "data.json"
    data_json.write_text(json.dumps(data))
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)

    # ACCELERATE_USE_CPU: without it the HF Trainer does not treat a CPU torchrun launch as DDP (each
    # process would silently train alone, world size 1)
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore",
               ACCELERATE_USE_CPU="true")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "tests"), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(NPROC), "--master_addr",
           "127.0.0.1", "--master_port", str(_free_port()), str(worker), str(model_dir), str(tmp_path / "ddp"),
           str(data_json), str(REPO / "tests"), ",".join(METHODS), str(PER_DEVICE)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    # the single-process runs (global batch = per-device batch × processes) while the workers run
    streams = {s: [QARecord.from_dict(r) for r in rows] for s, rows in data.items()}
    for m in METHODS:
        train_unlearning(str(model_dir), None, streams, make_config(m, PER_DEVICE * NPROC), tmp_path / "single" / m)
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"torchrun timed out:\n{out[-4000:]}")
    assert proc.returncode == 0 and "WORKER_DONE" in out, out[-4000:]

    init = _weights(model_dir)
    for m in METHODS:
        logs = [json.loads(x) for x in (tmp_path / "ddp" / m / "train_log.jsonl").read_text().splitlines()]
        assert max(r["step"] for r in logs) == STEPS, m
        single, ddp = _weights(tmp_path / "single" / m / "model"), _weights(tmp_path / "ddp" / m / "model")
        assert single.keys() == ddp.keys()
        num = den = 0.0
        for k, w0 in init.items():
            if k not in single:  # tied lm_head is saved once
                continue
            torch.testing.assert_close(ddp[k], single[k], rtol=1e-4, atol=1e-6, msg=f"{m}: {k}")
            num += float((ddp[k] - single[k]).double().square().sum())
            den += float((single[k] - w0).double().square().sum())
        assert den > 0, f"{m}: training did not move the weights"
        rel = (num / den) ** 0.5
        assert rel < 1e-4, f"{m}: DDP update differs from the single-process update by {rel:.2e} (relative)"


#: Run by each torchrun process: FSDP2 (fully_shard, rows of every weight sharded over 2 ranks) on CPU.
FSDP_WORKER = r'''
import json, sys
import torch, torch.distributed as dist
torch.set_num_threads(1)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM, AutoTokenizer
from obliviate.data.formatting import encode_example, pad_batch
from obliviate.objectives.base import StepContext
from obliviate.objectives.reference import ensure_sequence_logprobs
from obliviate.objectives.regularizers import SlicedWasserstein
from obliviate.train import stream_loader

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
model_dir, out_json = sys.argv[1:3]
tok = AutoTokenizer.from_pretrained(model_dir)
mesh = init_device_mesh("cpu", (world,))


def load(shard):
    m = AutoModelForCausalLM.from_pretrained(model_dir)
    if shard:  # FSDP2 cannot be deep-copied: every sharded model is loaded and wrapped afresh
        for layer in m.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(m, mesh=mesh)
    return m


full, sharded = load(False), load(True)
qa = [("Who wrote Blue Sky?", "Ana Torres wrote it."), ("Where was she born?", "In Lima, Peru."),
      ("What is two plus two?", "Four."), ("Name a colour.", "Blue.")]
enc = [dict(encode_example(tok, q, a, max_length=64), sample_id=i) for i, (q, a) in enumerate(qa)]
res = {}

# 1. SWD: value and gradients (together with a data loss, as in a training step) on the sharded model
for mode in ("fixed", "fresh"):
    regs = {}
    for name, m in (("full", full), ("sharded", sharded)):
        regs[name] = SlicedWasserstein(0.1, n_projections=8, mode=mode, seed=3)
        regs[name].setup(m)
    g = torch.Generator().manual_seed(11)
    noise = {n: 0.02 * torch.randn(p.shape, generator=g) for n, p in full.named_parameters()}
    fm, sm = full, sharded
    with torch.no_grad():
        for n, p in fm.named_parameters():
            p.add_(noise[n])
        for n, p in sm.named_parameters():
            p.to_local().add_(noise[n].chunk(world, dim=0)[rank])
    batch = pad_batch(enc, tok.pad_token_id)
    out = {}
    for name, m in (("full", fm), ("sharded", sm)):
        # the trainer's order: the terms' forward first, then the regularizer on the (unwrapped) model
        loss = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        sw = regs[name](m)
        (loss + 0.1 * sw).backward()
        out[name] = float(sw)
    worst = 0.0
    shards = 0
    for (n, pf), (_, ps) in zip(fm.named_parameters(), sm.named_parameters()):
        if pf.grad is None:
            continue
        local = ps.grad.to_local() if hasattr(ps.grad, "to_local") else ps.grad
        want = pf.grad.chunk(world, dim=0)[rank]
        worst = max(worst, float((local - want).abs().max() / (want.abs().max() + 1e-12)))
        shards += 1
    res[mode] = {"sw_full": out["full"], "sw_sharded": out["sharded"], "grad_rel_diff": worst, "tensors": shards,
                 "regularized": len(regs["sharded"].tensor_names)}
    full, sharded = load(False), load(True)
# 2. the reference model, sharded: its cached per-sample log-probs equal the unsharded model's
loader = lambda: {"forget": stream_loader(enc, tok.pad_token_id, 2)}
lp_full = ensure_sequence_logprobs(StepContext(reference=full), "forget", loader())
lp_sh = ensure_sequence_logprobs(StepContext(reference=sharded), "forget", loader())
res["ref_max_diff"] = float((lp_full - lp_sh).abs().max())

if rank == 0:
    open(out_json, "w").write(json.dumps(res))
dist.destroy_process_group()
print("FSDP_DONE", flush=True)
'''


def test_fsdp2_sharded_reference_and_swd_match_unsharded(tokenizer, tmp_path):
    """FSDP2 (rows of every weight sharded over 2 CPU ranks, gloo): the cached reference log-probs,
    the sliced-Wasserstein value and each rank's gradient shard (SW + data loss, as in a step)
    equal the unsharded model's."""
    pytest.importorskip("torch.distributed.fsdp")
    from torch.distributed import fsdp

    if not hasattr(fsdp, "fully_shard"):
        pytest.skip("torch without FSDP2 (fully_shard)")
    model_dir = tmp_path / "tiny"
    build_tiny_llama(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    worker = tmp_path / "fsdp_worker.py"
    worker.write_text(FSDP_WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
    res_json = tmp_path / "fsdp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(worker), str(model_dir), str(res_json)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
    assert proc.returncode == 0 and "FSDP_DONE" in proc.stdout, proc.stdout[-4000:]
    res = json.loads(res_json.read_text())
    assert res["ref_max_diff"] < 1e-4
    for mode in ("fixed", "fresh"):
        r = res[mode]
        assert r["sw_full"] > 0 and r["regularized"] > 0 and r["tensors"] > 0
        assert r["sw_sharded"] == pytest.approx(r["sw_full"], rel=1e-5), mode
        assert r["grad_rel_diff"] < 1e-4, (mode, r)
