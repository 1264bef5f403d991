#!/usr/bin/env bash
# made by: python benchmarks/reproduce.py --quick
# every command benchmarks/reproduce.py ran, in order, with its wall seconds (from any run)
set -euo pipefail
# forget01 teach (Base): 198.9 s
obliviate train --method retrain --model smollm2-135m-instruct --retain runs/reproduce-quick/tofu/forget01/data/teach.jsonl --set lr=0.0003 --set epochs=4 --set batch_size=4 --set max_length=192 --set epochs=1 --set seed=0 --out runs/reproduce-quick/tofu/forget01/base
# forget01 Retraining: 80.6 s
obliviate train --method retrain --model smollm2-135m-instruct --retain runs/reproduce-quick/tofu/forget01/data/retain.jsonl --set lr=0.0003 --set epochs=4 --set batch_size=4 --set max_length=192 --set epochs=1 --set seed=0 --out runs/reproduce-quick/tofu/forget01/retrain
# forget01 eval Retraining: 51.7 s
obliviate eval tofu --model runs/reproduce-quick/tofu/forget01/retrain/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 8 --no-progress --out runs/reproduce-quick/tofu/forget01/eval/retraining
# forget01 eval Base: 115.9 s
obliviate eval tofu --model runs/reproduce-quick/tofu/forget01/base/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 8 --no-progress --retain-result runs/reproduce-quick/tofu/forget01/eval/retraining --out runs/reproduce-quick/tofu/forget01/eval/base
# forget01 GA seed 0: 56.3 s
obliviate train --method ga --model runs/reproduce-quick/tofu/forget01/base/model --forget tofu:forget01 --retain runs/reproduce-quick/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set seed=0 --set epochs=1 --out runs/reproduce-quick/tofu/forget01/ga_s0
# forget01 eval GA seed 0: 111.3 s
obliviate eval tofu --model runs/reproduce-quick/tofu/forget01/ga_s0/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 8 --no-progress --retain-result runs/reproduce-quick/tofu/forget01/eval/retraining --out runs/reproduce-quick/tofu/forget01/eval/ga_s0
# forget01 ULMR[templates_none] train seed 0: 59.1 s
obliviate train --method ulmr --model runs/reproduce-quick/tofu/forget01/base/model --forget benchmarks/data/ulmr_tofu_forget01_templates_none/forget_augmented.jsonl --set lr=0.0001 --set batch_size=8 --set grad_accum=2 --set seed=0 --set epochs=1 --out runs/reproduce-quick/tofu/forget01/ulmr_templates_none_s0/train
# forget01 eval ULMR [templates] (α=0) seed 0: 180.3 s
obliviate eval tofu --model runs/reproduce-quick/tofu/forget01/ulmr_templates_none_s0/train/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 8 --no-progress --retain-result runs/reproduce-quick/tofu/forget01/eval/retraining --out runs/reproduce-quick/tofu/forget01/eval/ulmr_templates_none_a0_s0
# forget01 ULMR[templates_none] merge α=0.4 seed 0: 14.0 s
obliviate merge --base runs/reproduce-quick/tofu/forget01/base/model --tuned runs/reproduce-quick/tofu/forget01/ulmr_templates_none_s0/train/model --alpha 0.4 --out runs/reproduce-quick/tofu/forget01/ulmr_templates_none_s0/merged_alpha_0.4
# forget01 eval ULMR [templates] (α=0.4) seed 0: 582.9 s
obliviate eval tofu --model runs/reproduce-quick/tofu/forget01/ulmr_templates_none_s0/merged_alpha_0.4 --data-source ../shared/data/tofu --forget-split forget01 --max-samples 8 --no-progress --retain-result runs/reproduce-quick/tofu/forget01/eval/retraining --out runs/reproduce-quick/tofu/forget01/eval/ulmr_templates_none_a0.4_s0
# forget01 audit Base: 108.2 s
obliviate audit --model runs/reproduce-quick/tofu/forget01/base/model --base runs/reproduce-quick/tofu/forget01/base/model --reference runs/reproduce-quick/tofu/forget01/retrain/model --forget tofu:forget01 --retain runs/reproduce-quick/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --shared-dir runs/reproduce-quick/audit/forget01/shared --label Base --seed 0 --max-samples 5 --attacks quantization,membership --no-progress --out runs/reproduce-quick/audit/forget01/base
# forget01 audit Retraining: 34.6 s
obliviate audit --model runs/reproduce-quick/tofu/forget01/retrain/model --base runs/reproduce-quick/tofu/forget01/base/model --reference runs/reproduce-quick/tofu/forget01/retrain/model --forget tofu:forget01 --retain runs/reproduce-quick/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --shared-dir runs/reproduce-quick/audit/forget01/shared --label Retraining --seed 0 --max-samples 5 --attacks quantization,membership --no-progress --out runs/reproduce-quick/audit/forget01/retraining
# forget01 audit GA: 42.3 s
obliviate audit --model runs/reproduce-quick/tofu/forget01/ga_s0/model --base runs/reproduce-quick/tofu/forget01/base/model --reference runs/reproduce-quick/tofu/forget01/retrain/model --forget tofu:forget01 --retain runs/reproduce-quick/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --shared-dir runs/reproduce-quick/audit/forget01/shared --label GA --seed 0 --max-samples 5 --attacks quantization,membership --no-progress --out runs/reproduce-quick/audit/forget01/ga
# forget01 audit ULMR [templates] (α=0.4): 43.8 s
obliviate audit --model runs/reproduce-quick/tofu/forget01/ulmr_templates_none_s0/merged_alpha_0.4 --base runs/reproduce-quick/tofu/forget01/base/model --reference runs/reproduce-quick/tofu/forget01/retrain/model --forget tofu:forget01 --retain runs/reproduce-quick/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --shared-dir runs/reproduce-quick/audit/forget01/shared --label 'ULMR [templates] (α=0.4)' --seed 0 --max-samples 5 --attacks quantization,membership --no-progress --out runs/reproduce-quick/audit/forget01/ulmr_templates_a0.4
# forget01 audit report: 4.8 s
obliviate report runs/reproduce-quick/audit/forget01/base runs/reproduce-quick/audit/forget01/retraining runs/reproduce-quick/audit/forget01/ga runs/reproduce-quick/audit/forget01/ulmr_templates_a0.4 --layout audit --names 'Base,Retraining,GA,ULMR [templates] (α=0.4)' --out benchmarks/results/reproduce-quick/audit/forget01
