#!/usr/bin/env bash
# Commands run by benchmarks/tofu_comparison.py, in order, with their wall seconds
# (steps whose output existed were skipped; their time is the earlier run's).
# made by: python benchmarks/tofu_comparison.py --work runs/tofu_comparison --out benchmarks/results/tofu_comparison --tofu-source ../shared/data/tofu (first run, α 0.4), then the same with --alpha 0,0.2,0.4
set -euo pipefail
# teach (Base): 294.6 s (an earlier run)
obliviate train --method retrain --model smollm2-135m-instruct --retain runs/tofu_comparison/data/teach.jsonl --set lr=0.0003 --set epochs=4 --set batch_size=4 --set max_length=192 --out runs/tofu_comparison/base
# Retraining: 299.7 s (an earlier run)
obliviate train --method retrain --model smollm2-135m-instruct --retain runs/tofu_comparison/data/retain.jsonl --set lr=0.0003 --set epochs=4 --set batch_size=4 --set max_length=192 --out runs/tofu_comparison/retrain
# GA: 170.0 s (an earlier run)
obliviate train --method ga --model runs/tofu_comparison/base/model --forget tofu:forget01 --retain runs/tofu_comparison/data/retain.jsonl --tofu-source ../shared/data/tofu --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --out runs/tofu_comparison/ga
# KL: 271.3 s (an earlier run)
obliviate train --method kl --model runs/tofu_comparison/base/model --forget tofu:forget01 --retain runs/tofu_comparison/data/retain.jsonl --tofu-source ../shared/data/tofu --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --out runs/tofu_comparison/kl
# DPO: 209.2 s (an earlier run)
obliviate train --method dpo --model runs/tofu_comparison/base/model --forget tofu:forget01 --retain runs/tofu_comparison/data/retain.jsonl --tofu-source ../shared/data/tofu --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --out runs/tofu_comparison/dpo
# NPO: 130.0 s (an earlier run)
obliviate train --method npo --model runs/tofu_comparison/base/model --forget tofu:forget01 --retain runs/tofu_comparison/data/retain.jsonl --tofu-source ../shared/data/tofu --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --out runs/tofu_comparison/npo
# ULMR augment: 156.1 s (an earlier run)
obliviate augment ulmr --forget tofu:forget01 --tofu-source ../shared/data/tofu --model runs/tofu_comparison/base/model --allow-statement-rewrites --max-retries 2 --out runs/tofu_comparison/ulmr/augment
# ULMR train: 138.4 s (an earlier run)
obliviate train --method ulmr --model runs/tofu_comparison/base/model --forget runs/tofu_comparison/ulmr/augment/forget_augmented.jsonl --set lr=0.0001 --set batch_size=8 --set grad_accum=2 --out runs/tofu_comparison/ulmr/train
# ULMR merge α=0: 3.4 s (this run)
obliviate merge --base runs/tofu_comparison/base/model --tuned runs/tofu_comparison/ulmr/train/model --alpha 0 --out runs/tofu_comparison/ulmr/merged_alpha_0
# ULMR merge α=0.2: 2.9 s (this run)
obliviate merge --base runs/tofu_comparison/base/model --tuned runs/tofu_comparison/ulmr/train/model --alpha 0.2 --out runs/tofu_comparison/ulmr/merged_alpha_0.2
# ULMR merge α=0.4: 2.7 s (an earlier run)
obliviate merge --base runs/tofu_comparison/base/model --tuned runs/tofu_comparison/ulmr/train/model --alpha 0.4 --out runs/tofu_comparison/ulmr/merged_alpha_0.4
# eval Retraining: 186.7 s (an earlier run)
obliviate eval tofu --model runs/tofu_comparison/retrain/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 60 --no-progress --out runs/tofu_comparison/eval/retraining
# eval Base: 187.5 s (an earlier run)
obliviate eval tofu --model runs/tofu_comparison/base/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 60 --no-progress --retain-result runs/tofu_comparison/eval/retraining --out runs/tofu_comparison/eval/base
# eval GA: 191.4 s (an earlier run)
obliviate eval tofu --model runs/tofu_comparison/ga/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 60 --no-progress --retain-result runs/tofu_comparison/eval/retraining --out runs/tofu_comparison/eval/ga
# eval KL: 179.9 s (an earlier run)
obliviate eval tofu --model runs/tofu_comparison/kl/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 60 --no-progress --retain-result runs/tofu_comparison/eval/retraining --out runs/tofu_comparison/eval/kl
# eval DPO: 189.3 s (an earlier run)
obliviate eval tofu --model runs/tofu_comparison/dpo/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 60 --no-progress --retain-result runs/tofu_comparison/eval/retraining --out runs/tofu_comparison/eval/dpo
# eval NPO: 207.2 s (an earlier run)
obliviate eval tofu --model runs/tofu_comparison/npo/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 60 --no-progress --retain-result runs/tofu_comparison/eval/retraining --out runs/tofu_comparison/eval/npo
# eval ULMR (α=0): 184.2 s (this run)
obliviate eval tofu --model runs/tofu_comparison/ulmr/merged_alpha_0 --data-source ../shared/data/tofu --forget-split forget01 --max-samples 60 --no-progress --retain-result runs/tofu_comparison/eval/retraining --out runs/tofu_comparison/eval/ulmr_a0
# eval ULMR (α=0.2): 189.0 s (this run)
obliviate eval tofu --model runs/tofu_comparison/ulmr/merged_alpha_0.2 --data-source ../shared/data/tofu --forget-split forget01 --max-samples 60 --no-progress --retain-result runs/tofu_comparison/eval/retraining --out runs/tofu_comparison/eval/ulmr_a0.2
# eval ULMR (α=0.4): 193.4 s (this run)
obliviate eval tofu --model runs/tofu_comparison/ulmr/merged_alpha_0.4 --data-source ../shared/data/tofu --forget-split forget01 --max-samples 60 --no-progress --retain-result runs/tofu_comparison/eval/retraining --out runs/tofu_comparison/eval/ulmr_a0.4
# report: 2.8 s (this run)
obliviate report runs/tofu_comparison/eval/base runs/tofu_comparison/eval/retraining runs/tofu_comparison/eval/ga runs/tofu_comparison/eval/kl runs/tofu_comparison/eval/dpo runs/tofu_comparison/eval/npo runs/tofu_comparison/eval/ulmr_a0 runs/tofu_comparison/eval/ulmr_a0.2 runs/tofu_comparison/eval/ulmr_a0.4 --layout tofu --names 'Base,Retraining,GA,KL,DPO,NPO,ULMR (α=0),ULMR (α=0.2),ULMR (α=0.4)' --out benchmarks/results/tofu_comparison
