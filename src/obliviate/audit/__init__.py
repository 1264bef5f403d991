"""Attacks on an unlearned model: can the forgotten knowledge be brought back cheaply?

One module per attack, each citing its source:

* :mod:`.relearning` — a few LoRA steps on 20 % of the forget set (or on retain text), scored on
  the other 80 % (Lynch et al. 2024; Hu et al. 2024);
* :mod:`.quantization` — 8-bit and 4-bit round-to-nearest weight quantization (Zhang et al. 2024);
* :mod:`.prompts` — paraphrases, language instructions, in-context facts, jailbreak prefixes,
  sampling, RWKU's adversarial set (Jin et al. 2024; Shi et al. 2024);
* :mod:`.membership` — LOSS, zlib, Min-K % and Min-K %++ membership inference with ROC AUC
  (Yeom et al. 2018; Carlini et al. 2021; Shi et al. 2024; Zhang et al. 2024).

:mod:`.common` holds the shared data split and forget-set scoring, :mod:`.runner` the resumable
``obliviate audit`` driver (:func:`~.runner.run_audit`) and the pipeline hook
(:func:`~.runner.stage_audit`).
"""

from .common import AuditConfig, AuditData  # noqa: F401
