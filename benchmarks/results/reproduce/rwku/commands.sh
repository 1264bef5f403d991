#!/usr/bin/env bash
# the RWKU part of benchmarks/reproduce.py: every command, in order, with its wall seconds (from any run)
set -euo pipefail
# RWKU Stephen King eval Before: 268.0 s
obliviate eval rwku --model smollm2-135m-instruct --target 'Stephen King' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/stephen_king/eval/before
# RWKU Stephen King GA train seed 0: 735.4 s
obliviate train --method ga --model smollm2-135m-instruct --forget 'rwku:Stephen King:passage' --rwku-source ../shared/data/rwku --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set seed=0 --out runs/reproduce/rwku/stephen_king/ga_s0
# RWKU Stephen King eval GA seed 0: 251.2 s
obliviate eval rwku --model runs/reproduce/rwku/stephen_king/ga_s0/model --target 'Stephen King' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/stephen_king/eval/ga_s0
# RWKU Stephen King KL train seed 0: 1400.1 s
obliviate train --method kl --model smollm2-135m-instruct --forget 'rwku:Stephen King:passage' --rwku-source ../shared/data/rwku --retain benchmarks/data/snap_rwku_1_stephen_king_templates/retain_train.jsonl --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set seed=0 --out runs/reproduce/rwku/stephen_king/kl_s0
# RWKU Stephen King eval KL seed 0: 248.9 s
obliviate eval rwku --model runs/reproduce/rwku/stephen_king/kl_s0/model --target 'Stephen King' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/stephen_king/eval/kl_s0
# RWKU Stephen King ULMR train seed 0: 482.6 s
obliviate train --method ulmr --model smollm2-135m-instruct --forget benchmarks/data/ulmr_rwku_1_stephen_king_templates_none/forget_augmented.jsonl --set lr=0.0001 --set batch_size=8 --set grad_accum=2 --set seed=0 --out runs/reproduce/rwku/stephen_king/ulmr_templates_none_s0/train
# RWKU Stephen King eval ULMR (α=0) seed 0: 259.7 s
obliviate eval rwku --model runs/reproduce/rwku/stephen_king/ulmr_templates_none_s0/train/model --target 'Stephen King' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/stephen_king/eval/ulmr_templates_none_a0_s0
# RWKU Stephen King ULMR merge α=0.2 seed 0: 4.7 s
obliviate merge --base smollm2-135m-instruct --tuned runs/reproduce/rwku/stephen_king/ulmr_templates_none_s0/train/model --alpha 0.2 --out runs/reproduce/rwku/stephen_king/ulmr_templates_none_s0/merged_alpha_0.2
# RWKU Stephen King eval ULMR (α=0.2) seed 0: 244.9 s
obliviate eval rwku --model runs/reproduce/rwku/stephen_king/ulmr_templates_none_s0/merged_alpha_0.2 --target 'Stephen King' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/stephen_king/eval/ulmr_templates_none_a0.2_s0
# RWKU Stephen King ULMR merge α=0.4 seed 0: 5.5 s
obliviate merge --base smollm2-135m-instruct --tuned runs/reproduce/rwku/stephen_king/ulmr_templates_none_s0/train/model --alpha 0.4 --out runs/reproduce/rwku/stephen_king/ulmr_templates_none_s0/merged_alpha_0.4
# RWKU Stephen King eval ULMR (α=0.4) seed 0: 222.1 s
obliviate eval rwku --model runs/reproduce/rwku/stephen_king/ulmr_templates_none_s0/merged_alpha_0.4 --target 'Stephen King' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/stephen_king/eval/ulmr_templates_none_a0.4_s0
# RWKU Stephen King ULMR merge α=0.6 seed 0: 3.5 s
obliviate merge --base smollm2-135m-instruct --tuned runs/reproduce/rwku/stephen_king/ulmr_templates_none_s0/train/model --alpha 0.6 --out runs/reproduce/rwku/stephen_king/ulmr_templates_none_s0/merged_alpha_0.6
# RWKU Stephen King eval ULMR (α=0.6) seed 0: 204.0 s
obliviate eval rwku --model runs/reproduce/rwku/stephen_king/ulmr_templates_none_s0/merged_alpha_0.6 --target 'Stephen King' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/stephen_king/eval/ulmr_templates_none_a0.6_s0
