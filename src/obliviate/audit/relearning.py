"""Relearning attack: a few LoRA fine-tuning steps bring back what unlearning hid.

Sources: Lynch et al. 2024, "Eight methods to evaluate robust unlearning in LLMs" (fine-tuning
on a small part of the forget data recovers held-out forget knowledge); Hu et al. 2024,
"Jogging the memory of unlearned LLMs through targeted relearning attacks" (a few steps on a
small, even loosely related set revive the rest).

The forget set is split once with the audit's seed (:func:`~.common.build_audit_data`):
``relearn_fraction`` (20 %) is trained on, the other 80 % is only scored. Two arms:

* **forget** — LoRA fine-tuning on the 20 % forget QA pairs (the response-only NLL of
  :func:`obliviate.data.formatting.encode_example`, as in training);
* **retain** — the same budget on as many retain / neighbour QA pairs (related but different text).

After 0, k, 2k, … steps (``relearn_eval_every``) the held-out 80 % are scored: ROUGE-L recall of
greedy answers and the answers' probability. The same attack on the reference (Retraining) model,
which never saw the forget set, tells what the 20 % teach by themselves; whatever the unlearned
model regains beyond that was hidden, not removed.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from ..data.formatting import encode_example, pad_batch
from ..data.records import QARecord
from .common import AuditConfig, score_items, summarize

__all__ = ["relearn_curve", "relearning_attack"]


def relearn_curve(model, tokenizer, train: Sequence[QARecord], evaluate: Sequence[QARecord], cfg: AuditConfig, *,
                  progress: bool = True, desc: str = "relearn") -> dict[str, Any]:
    """LoRA-fine-tune ``model`` on ``train`` for ``cfg.relearn_steps`` AdamW steps and score
    ``evaluate`` before training and every ``cfg.relearn_eval_every`` steps (and at the last).

    Each step is one batch of ``relearn_batch_size`` examples cycling through a seeded shuffle of
    ``train``; the loss is the mean response-token NLL ``−1/|y| Σ_t log p(y_t | x, y_<t)``. The
    model is modified (wrapped in a LoRA adapter of rank ``relearn_rank``). Returns
    ``{"steps": [...], "rouge": [...], "prob": [...], "loss": [...], "final_rows": [...]}``.
    """
    from ..models import apply_lora

    if not train or not evaluate:
        raise ValueError(f"relearning needs records to train on and to score ({len(train)} / {len(evaluate)})")
    torch.manual_seed(cfg.seed)
    peft_model = apply_lora(model, {"r": cfg.relearn_rank, "alpha": cfg.relearn_alpha, "dropout": 0.0})
    inner = peft_model.get_base_model()  # the transformers model with the LoRA layers injected
    examples = [encode_example(tokenizer, r.question, r.answer, max_length=512) for r in train]
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.relearn_lr, weight_decay=0.0)
    device = next(peft_model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rng = random.Random(cfg.seed)
    queue: list[int] = []
    curve: dict[str, Any] = {"steps": [], "rouge": [], "prob": [], "loss": []}
    questions, answers = [r.question for r in evaluate], [r.answer for r in evaluate]

    def score(step: int, loss: float | None):
        rows = score_items(inner, tokenizer, questions, answers, batch_size=cfg.batch_size,
                           max_new_tokens=cfg.max_new_tokens)
        s = summarize(rows)
        curve["steps"].append(step)
        curve["rouge"].append(s["rouge"])
        curve["prob"].append(s["prob"])
        curve["loss"].append(loss)
        curve["final_rows"] = rows

    score(0, None)
    bar = tqdm(range(1, cfg.relearn_steps + 1), desc=desc, disable=not progress, leave=False)
    for step in bar:
        peft_model.train()
        idx = []
        while len(idx) < min(cfg.relearn_batch_size, len(examples)):
            if not queue:
                queue = list(range(len(examples)))
                rng.shuffle(queue)
            idx.append(queue.pop())
        batch = pad_batch([examples[i] for i in idx], pad)
        out = peft_model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                         labels=batch["labels"].to(device), use_cache=False)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss = float(out.loss.detach())
        bar.set_postfix(loss=f"{loss:.3f}")
        if step % cfg.relearn_eval_every == 0 or step == cfg.relearn_steps:
            score(step, loss)
    peft_model.eval()
    return curve


def relearning_attack(load: Callable[[], tuple[Any, Any]], data, cfg: AuditConfig, *, progress: bool = True,
                      label: str = "model") -> dict[str, Any]:
    """Run both relearning arms on fresh copies of one model (``load()`` returns ``(model, tok)``).

    Returns ``{"arms": {arm: curve}, "train_n": {arm: n}, "eval_n": n}`` where ``curve`` is
    :func:`relearn_curve`'s result (per-question rows of the last evaluation kept under
    ``final_rows``). The retain arm is skipped (with a note) when there is no retain sample.
    """
    arms: dict[str, Any] = {}
    notes = []
    sets = {"forget": data.relearn_train, "retain": data.retain_sample}
    for arm in cfg.relearn_arms:
        if not sets[arm]:
            notes.append(f"{arm} arm skipped: no {arm} records (give --retain)")
            continue
        model, tok = load()
        arms[arm] = relearn_curve(model, tok, sets[arm], data.relearn_eval, cfg, progress=progress,
                                  desc=f"relearn {label} on {arm}")
        del model
    return {"arms": arms, "train_n": {a: len(sets[a]) for a in arms}, "eval_n": len(data.relearn_eval),
            "notes": notes}
