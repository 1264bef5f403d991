"""``obliviate audit``: can the forgotten knowledge be brought back? Relearning, quantization, prompt
and membership-inference attacks on an unlearned model, against the base and a reference."""

from __future__ import annotations

import argparse

#: command-line flag -> AuditConfig field (None values are left to the config / defaults)
_FLAGS = {
    "attacks": "attacks", "seed": "seed", "max_samples": "max_samples", "batch_size": "batch_size",
    "max_new_tokens": "max_new_tokens", "relearn_steps": "relearn_steps", "relearn_eval_every": "relearn_eval_every",
    "relearn_lr": "relearn_lr", "relearn_rank": "relearn_rank", "relearn_fraction": "relearn_fraction",
    "quant_bits": "quant_bits", "quant_backend": "quant_backend", "prompt_variants": "prompt_variants",
    "translator": "translator", "samples": "samples", "temperature": "temperature",
    "rouge_tolerance": "rouge_tolerance", "prob_tolerance": "prob_tolerance", "auc_tolerance": "auc_tolerance",
}


def _csv(kind=str):
    def parse(text: str):
        try:
            return [kind(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
    return parse


def register(sub) -> None:
    from ._args import positive_int

    p = sub.add_parser(
        "audit", help="attack an unlearned model: relearning, quantization, prompts, membership inference",
        description="Try to bring the forgotten knowledge back: LoRA relearning on 20%% of the forget set (and on "
                    "retain text), 8/4-bit weight quantization, paraphrased / other-language / in-context / "
                    "jailbreak / sampled prompts (and RWKU's adversarial set), and LOSS / zlib / Min-K%% / "
                    "Min-K%%++ membership inference. Each attack's recovered forget score is compared with the base, "
                    "the unlearned model before the attack and the reference, with a verdict against a stated "
                    "tolerance. Resumable: finished attacks are reused when rerun with the same settings.")
    p.add_argument("--model", required=True, metavar="UNLEARNED", help="the unlearned model (any model obliviate "
                   "loads: the embedded default, an HF folder, a LoRA adapter folder, a .gguf file, a hub id)")
    p.add_argument("--base", required=True, metavar="ORIGINAL", help="the model before unlearning")
    p.add_argument("--reference", default=None, metavar="RETRAINED",
                   help="a model that never saw the forget set (Retraining): the level an attack may reach")
    p.add_argument("--forget", required=True, metavar="F", help="forget set: tofu:forget01, rwku:<target>, a file")
    p.add_argument("--retain", default=None, metavar="R", help="retain / neighbour set (the relearning control arm)")
    p.add_argument("--holdout", default=None, metavar="H", help="non-member QA set for membership inference "
                   "(default: TOFU's holdoutXX for tofu:forgetXX; RWKU: retain_mia vs forget_mia)")
    p.add_argument("--out", required=True, metavar="DIR", help="audit folder (audit.json, report.md, relearning.png, "
                   "attacks/, manifest.json)")
    p.add_argument("--shared-dir", default=None, metavar="DIR",
                   help="folder shared by the audits of several methods: base / reference attacks are stored there "
                        "by fingerprint and reused by the next audit against the same base and reference")
    p.add_argument("--label", default=None, help="the method's name in audit.json (row name in `obliviate report`)")
    p.add_argument("--config", default=None, metavar="YAML", help="audit settings (AuditConfig fields)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override an AuditConfig field, e.g. --set languages=[Spanish] --set mia_k=0.1")
    g = p.add_argument_group("attack settings (defaults sized for 2 CPU cores)")
    g.add_argument("--attacks", type=_csv(), default=None, metavar="A,B",
                   help="subset of relearning,quantization,prompts,membership (default: all)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--max-samples", type=positive_int, default=None, help="use the first N forget (and holdout) items")
    g.add_argument("--batch-size", type=positive_int, default=None)
    g.add_argument("--max-new-tokens", type=positive_int, default=None)
    g.add_argument("--relearn-steps", type=positive_int, default=None, help="LoRA steps (default 12)")
    g.add_argument("--relearn-eval-every", type=positive_int, default=None, help="score every k steps (default 4)")
    g.add_argument("--relearn-lr", type=float, default=None, help="LoRA learning rate (default 1e-3)")
    g.add_argument("--relearn-rank", type=positive_int, default=None, help="LoRA rank (default 8)")
    g.add_argument("--relearn-fraction", type=float, default=None, help="share of the forget set trained on (0.2)")
    g.add_argument("--quant-bits", type=_csv(int), default=None, metavar="8,4")
    g.add_argument("--quant-backend", default=None, choices=["auto", "quanto", "rtn"],
                   help="auto: optimum-quanto when installed, else the built-in round-to-nearest")
    g.add_argument("--prompt-variants", type=_csv(), default=None, metavar="V,W",
                   help="subset of paraphrase,language,in_context,jailbreak,sampling,adversarial")
    g.add_argument("--translator", default=None, metavar="GENERATOR",
                   help="generator spec that translates questions (else an 'Answer in <language>' template)")
    g.add_argument("--samples", type=positive_int, default=None, help="sampled answers per question (default 5)")
    g.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 1.0)")
    g.add_argument("--rouge-tolerance", type=float, default=None, help="verdict tolerance, ROUGE-L fraction (0.05)")
    g.add_argument("--prob-tolerance", type=float, default=None, help="verdict tolerance, probability (0.05)")
    g.add_argument("--auc-tolerance", type=float, default=None, help="verdict tolerance, MIA AUC (0.05)")
    p.add_argument("--tofu-source", default=None, help="TOFU hub id or folder (default ../shared/data/tofu or hub)")
    p.add_argument("--rwku-source", default=None, help="RWKU hub id or folder")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=run)


def audit_config_from_args(args: argparse.Namespace):
    """The :class:`~obliviate.audit.common.AuditConfig`: ``--config``, then ``--set``, then the flags."""
    from ..audit.common import AuditConfig
    from ..config import apply_overrides, from_dict, read_yaml

    data = read_yaml(args.config) if args.config else {}
    data = apply_overrides(data, args.overrides)
    for flag, fieldname in _FLAGS.items():
        v = getattr(args, flag, None)
        if v is not None:
            data[fieldname] = v
    return from_dict(AuditConfig, data)


def run(args: argparse.Namespace) -> int:
    from ..audit.runner import run_audit
    from ..evals.common import check_out_dir

    cfg = audit_config_from_args(args)  # validated before any model is loaded
    out = check_out_dir(args.out)
    audit = run_audit(args.model, args.base, args.forget, out, retain=args.retain, reference=args.reference,
                      holdout=args.holdout, config=cfg, tofu_source=args.tofu_source, rwku_source=args.rwku_source,
                      dtype=args.dtype, device=args.device, trust_remote_code=args.trust_remote_code,
                      progress=not args.no_progress, label=args.label, plots=not args.no_plots,
                      shared_dir=args.shared_dir)
    for attack, verdict in audit["verdicts"].items():
        print(f"{verdict:5s} {attack}")
    m = audit["metrics"]
    print(f"{m.get('attacks_passed', 0)} of {m.get('attacks_judged', 0)} attacks passed; "
          f"wrote audit.json, report.md, manifest.json to {out} ({audit['wall_time_s']:.1f}s)")
    return 0
