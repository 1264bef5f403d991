#!/usr/bin/env bash
# made by: python benchmarks/reproduce.py --parts rwku
# every command of the rwku part of benchmarks/reproduce.py, in order, with its wall seconds (from any run)
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
# RWKU Confucius eval Before: 190.7 s
obliviate eval rwku --model smollm2-135m-instruct --target Confucius --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/confucius/eval/before
# RWKU Confucius GA train seed 0: 584.0 s
obliviate train --method ga --model smollm2-135m-instruct --forget rwku:Confucius:passage --rwku-source ../shared/data/rwku --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set seed=0 --out runs/reproduce/rwku/confucius/ga_s0
# RWKU Confucius eval GA seed 0: 175.2 s
obliviate eval rwku --model runs/reproduce/rwku/confucius/ga_s0/model --target Confucius --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/confucius/eval/ga_s0
# RWKU Confucius KL train seed 0: 564.7 s
obliviate train --method kl --model smollm2-135m-instruct --forget rwku:Confucius:passage --rwku-source ../shared/data/rwku --retain benchmarks/data/snap_rwku_2_confucius_templates/retain_train.jsonl --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set seed=0 --out runs/reproduce/rwku/confucius/kl_s0
# RWKU Confucius eval KL seed 0: 170.6 s
obliviate eval rwku --model runs/reproduce/rwku/confucius/kl_s0/model --target Confucius --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/confucius/eval/kl_s0
# RWKU Confucius ULMR train seed 0: 319.8 s
obliviate train --method ulmr --model smollm2-135m-instruct --forget benchmarks/data/ulmr_rwku_2_confucius_templates_none/forget_augmented.jsonl --set lr=0.0001 --set batch_size=8 --set grad_accum=2 --set seed=0 --out runs/reproduce/rwku/confucius/ulmr_templates_none_s0/train
# RWKU Confucius eval ULMR (α=0) seed 0: 177.0 s
obliviate eval rwku --model runs/reproduce/rwku/confucius/ulmr_templates_none_s0/train/model --target Confucius --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/confucius/eval/ulmr_templates_none_a0_s0
# RWKU Confucius ULMR merge α=0.2 seed 0: 4.2 s
obliviate merge --base smollm2-135m-instruct --tuned runs/reproduce/rwku/confucius/ulmr_templates_none_s0/train/model --alpha 0.2 --out runs/reproduce/rwku/confucius/ulmr_templates_none_s0/merged_alpha_0.2
# RWKU Confucius eval ULMR (α=0.2) seed 0: 177.7 s
obliviate eval rwku --model runs/reproduce/rwku/confucius/ulmr_templates_none_s0/merged_alpha_0.2 --target Confucius --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/confucius/eval/ulmr_templates_none_a0.2_s0
# RWKU Confucius ULMR merge α=0.4 seed 0: 3.2 s
obliviate merge --base smollm2-135m-instruct --tuned runs/reproduce/rwku/confucius/ulmr_templates_none_s0/train/model --alpha 0.4 --out runs/reproduce/rwku/confucius/ulmr_templates_none_s0/merged_alpha_0.4
# RWKU Confucius eval ULMR (α=0.4) seed 0: 181.4 s
obliviate eval rwku --model runs/reproduce/rwku/confucius/ulmr_templates_none_s0/merged_alpha_0.4 --target Confucius --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/confucius/eval/ulmr_templates_none_a0.4_s0
# RWKU Confucius ULMR merge α=0.6 seed 0: 2.9 s
obliviate merge --base smollm2-135m-instruct --tuned runs/reproduce/rwku/confucius/ulmr_templates_none_s0/train/model --alpha 0.6 --out runs/reproduce/rwku/confucius/ulmr_templates_none_s0/merged_alpha_0.6
# RWKU Confucius eval ULMR (α=0.6) seed 0: 173.6 s
obliviate eval rwku --model runs/reproduce/rwku/confucius/ulmr_templates_none_s0/merged_alpha_0.6 --target Confucius --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/confucius/eval/ulmr_templates_none_a0.6_s0
# RWKU Bruce Lee eval Before: 173.1 s
obliviate eval rwku --model smollm2-135m-instruct --target 'Bruce Lee' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/bruce_lee/eval/before
# RWKU Bruce Lee GA train seed 0: 475.9 s
obliviate train --method ga --model smollm2-135m-instruct --forget 'rwku:Bruce Lee:passage' --rwku-source ../shared/data/rwku --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set seed=0 --out runs/reproduce/rwku/bruce_lee/ga_s0
# RWKU Bruce Lee eval GA seed 0: 153.9 s
obliviate eval rwku --model runs/reproduce/rwku/bruce_lee/ga_s0/model --target 'Bruce Lee' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/bruce_lee/eval/ga_s0
# RWKU Bruce Lee KL train seed 0: 1033.7 s
obliviate train --method kl --model smollm2-135m-instruct --forget 'rwku:Bruce Lee:passage' --rwku-source ../shared/data/rwku --retain benchmarks/data/snap_rwku_3_bruce_lee_templates/retain_train.jsonl --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set seed=0 --out runs/reproduce/rwku/bruce_lee/kl_s0
# RWKU Bruce Lee eval KL seed 0: 162.0 s
obliviate eval rwku --model runs/reproduce/rwku/bruce_lee/kl_s0/model --target 'Bruce Lee' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/bruce_lee/eval/kl_s0
# RWKU Bruce Lee ULMR train seed 0: 264.8 s
obliviate train --method ulmr --model smollm2-135m-instruct --forget benchmarks/data/ulmr_rwku_3_bruce_lee_templates_none/forget_augmented.jsonl --set lr=0.0001 --set batch_size=8 --set grad_accum=2 --set seed=0 --out runs/reproduce/rwku/bruce_lee/ulmr_templates_none_s0/train
# RWKU Bruce Lee eval ULMR (α=0) seed 0: 166.1 s
obliviate eval rwku --model runs/reproduce/rwku/bruce_lee/ulmr_templates_none_s0/train/model --target 'Bruce Lee' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/bruce_lee/eval/ulmr_templates_none_a0_s0
# RWKU Bruce Lee ULMR merge α=0.2 seed 0: 2.9 s
obliviate merge --base smollm2-135m-instruct --tuned runs/reproduce/rwku/bruce_lee/ulmr_templates_none_s0/train/model --alpha 0.2 --out runs/reproduce/rwku/bruce_lee/ulmr_templates_none_s0/merged_alpha_0.2
# RWKU Bruce Lee eval ULMR (α=0.2) seed 0: 175.7 s
obliviate eval rwku --model runs/reproduce/rwku/bruce_lee/ulmr_templates_none_s0/merged_alpha_0.2 --target 'Bruce Lee' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/bruce_lee/eval/ulmr_templates_none_a0.2_s0
# RWKU Bruce Lee ULMR merge α=0.4 seed 0: 2.6 s
obliviate merge --base smollm2-135m-instruct --tuned runs/reproduce/rwku/bruce_lee/ulmr_templates_none_s0/train/model --alpha 0.4 --out runs/reproduce/rwku/bruce_lee/ulmr_templates_none_s0/merged_alpha_0.4
# RWKU Bruce Lee eval ULMR (α=0.4) seed 0: 162.8 s
obliviate eval rwku --model runs/reproduce/rwku/bruce_lee/ulmr_templates_none_s0/merged_alpha_0.4 --target 'Bruce Lee' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/bruce_lee/eval/ulmr_templates_none_a0.4_s0
# RWKU Bruce Lee ULMR merge α=0.6 seed 0: 2.7 s
obliviate merge --base smollm2-135m-instruct --tuned runs/reproduce/rwku/bruce_lee/ulmr_templates_none_s0/train/model --alpha 0.6 --out runs/reproduce/rwku/bruce_lee/ulmr_templates_none_s0/merged_alpha_0.6
# RWKU Bruce Lee eval ULMR (α=0.6) seed 0: 164.9 s
obliviate eval rwku --model runs/reproduce/rwku/bruce_lee/ulmr_templates_none_s0/merged_alpha_0.6 --target 'Bruce Lee' --data-source ../shared/data/rwku --utility mmlu --utility-max-samples 100 --no-progress --out runs/reproduce/rwku/bruce_lee/eval/ulmr_templates_none_a0.6_s0
