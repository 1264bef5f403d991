#!/usr/bin/env bash
# made by: python benchmarks/reproduce.py --parts tofu,audit --splits forget01 --seeds 0 --data templates_none --alpha 0,0.2,0.4 --eval-max-samples 40 --audit-max-samples 20
# every command benchmarks/reproduce.py ran, in order, with its wall seconds (from any run)
set -euo pipefail
# forget01 teach (Base): 304.5 s
obliviate train --method retrain --model smollm2-135m-instruct --retain runs/reproduce/tofu/forget01/data/teach.jsonl --set lr=0.0003 --set epochs=4 --set batch_size=4 --set max_length=192 --set seed=0 --out runs/reproduce/tofu/forget01/base
# forget01 Retraining: 163.7 s
obliviate train --method retrain --model smollm2-135m-instruct --retain runs/reproduce/tofu/forget01/data/retain.jsonl --set lr=0.0003 --set epochs=4 --set batch_size=4 --set max_length=192 --set seed=0 --out runs/reproduce/tofu/forget01/retrain
# forget01 eval Retraining: 189.6 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/retrain/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --out runs/reproduce/tofu/forget01/eval/retraining
# forget01 eval Base: 151.1 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/base/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/base
# forget01 GA seed 0: 132.3 s
obliviate train --method ga --model runs/reproduce/tofu/forget01/base/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set seed=0 --out runs/reproduce/tofu/forget01/ga_s0
# forget01 eval GA seed 0: 201.6 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ga_s0/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ga_s0
# forget01 KL seed 0: 283.3 s
obliviate train --method kl --model runs/reproduce/tofu/forget01/base/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set seed=0 --out runs/reproduce/tofu/forget01/kl_s0
# forget01 eval KL seed 0: 181.8 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/kl_s0/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/kl_s0
# forget01 DPO seed 0: 240.8 s
obliviate train --method dpo --model runs/reproduce/tofu/forget01/base/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set seed=0 --out runs/reproduce/tofu/forget01/dpo_s0
# forget01 eval DPO seed 0: 148.7 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/dpo_s0/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/dpo_s0
# forget01 NPO seed 0: 149.3 s
obliviate train --method npo --model runs/reproduce/tofu/forget01/base/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set seed=0 --out runs/reproduce/tofu/forget01/npo_s0
# forget01 eval NPO seed 0: 280.6 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/npo_s0/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/npo_s0
# forget01 ULMR[templates_none] train seed 0: 202.6 s
obliviate train --method ulmr --model runs/reproduce/tofu/forget01/base/model --forget benchmarks/data/ulmr_tofu_forget01_templates_none/forget_augmented.jsonl --set lr=0.0001 --set batch_size=8 --set grad_accum=2 --set seed=0 --out runs/reproduce/tofu/forget01/ulmr_templates_none_s0/train
# forget01 eval ULMR [templates] (α=0) seed 0: 120.0 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ulmr_templates_none_s0/train/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ulmr_templates_none_a0_s0
# forget01 ULMR[templates_none] merge α=0.2 seed 0: 3.9 s
obliviate merge --base runs/reproduce/tofu/forget01/base/model --tuned runs/reproduce/tofu/forget01/ulmr_templates_none_s0/train/model --alpha 0.2 --out runs/reproduce/tofu/forget01/ulmr_templates_none_s0/merged_alpha_0.2
# forget01 eval ULMR [templates] (α=0.2) seed 0: 137.7 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ulmr_templates_none_s0/merged_alpha_0.2 --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ulmr_templates_none_a0.2_s0
# forget01 ULMR[templates_none] merge α=0.4 seed 0: 3.6 s
obliviate merge --base runs/reproduce/tofu/forget01/base/model --tuned runs/reproduce/tofu/forget01/ulmr_templates_none_s0/train/model --alpha 0.4 --out runs/reproduce/tofu/forget01/ulmr_templates_none_s0/merged_alpha_0.4
# forget01 eval ULMR [templates] (α=0.4) seed 0: 150.4 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ulmr_templates_none_s0/merged_alpha_0.4 --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ulmr_templates_none_a0.4_s0
# forget01 audit Base: 905.4 s
obliviate audit --model runs/reproduce/tofu/forget01/base/model --base runs/reproduce/tofu/forget01/base/model --reference runs/reproduce/tofu/forget01/retrain/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --shared-dir runs/reproduce/audit/forget01/shared --label Base --seed 0 --max-samples 20 --no-progress --out runs/reproduce/audit/forget01/base
# forget01 audit Retraining: 378.6 s
obliviate audit --model runs/reproduce/tofu/forget01/retrain/model --base runs/reproduce/tofu/forget01/base/model --reference runs/reproduce/tofu/forget01/retrain/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --shared-dir runs/reproduce/audit/forget01/shared --label Retraining --seed 0 --max-samples 20 --no-progress --out runs/reproduce/audit/forget01/retraining
# forget01 audit GA: 406.8 s
obliviate audit --model runs/reproduce/tofu/forget01/ga_s0/model --base runs/reproduce/tofu/forget01/base/model --reference runs/reproduce/tofu/forget01/retrain/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --shared-dir runs/reproduce/audit/forget01/shared --label GA --seed 0 --max-samples 20 --no-progress --out runs/reproduce/audit/forget01/ga
# forget01 audit KL: 430.9 s
obliviate audit --model runs/reproduce/tofu/forget01/kl_s0/model --base runs/reproduce/tofu/forget01/base/model --reference runs/reproduce/tofu/forget01/retrain/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --shared-dir runs/reproduce/audit/forget01/shared --label KL --seed 0 --max-samples 20 --no-progress --out runs/reproduce/audit/forget01/kl
# forget01 audit DPO: 383.1 s
obliviate audit --model runs/reproduce/tofu/forget01/dpo_s0/model --base runs/reproduce/tofu/forget01/base/model --reference runs/reproduce/tofu/forget01/retrain/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --shared-dir runs/reproduce/audit/forget01/shared --label DPO --seed 0 --max-samples 20 --no-progress --out runs/reproduce/audit/forget01/dpo
# forget01 audit NPO: 425.6 s
obliviate audit --model runs/reproduce/tofu/forget01/npo_s0/model --base runs/reproduce/tofu/forget01/base/model --reference runs/reproduce/tofu/forget01/retrain/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --shared-dir runs/reproduce/audit/forget01/shared --label NPO --seed 0 --max-samples 20 --no-progress --out runs/reproduce/audit/forget01/npo
# forget01 audit ULMR [templates] (α=0): 332.0 s
obliviate audit --model runs/reproduce/tofu/forget01/ulmr_templates_none_s0/train/model --base runs/reproduce/tofu/forget01/base/model --reference runs/reproduce/tofu/forget01/retrain/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --shared-dir runs/reproduce/audit/forget01/shared --label 'ULMR [templates] (α=0)' --seed 0 --max-samples 20 --no-progress --out runs/reproduce/audit/forget01/ulmr_templates_a0
# forget01 audit ULMR [templates] (α=0.4): 499.3 s
obliviate audit --model runs/reproduce/tofu/forget01/ulmr_templates_none_s0/merged_alpha_0.4 --base runs/reproduce/tofu/forget01/base/model --reference runs/reproduce/tofu/forget01/retrain/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --shared-dir runs/reproduce/audit/forget01/shared --label 'ULMR [templates] (α=0.4)' --seed 0 --max-samples 20 --no-progress --out runs/reproduce/audit/forget01/ulmr_templates_a0.4
# forget01 audit report: 5.3 s
obliviate report runs/reproduce/audit/forget01/base runs/reproduce/audit/forget01/retraining runs/reproduce/audit/forget01/ga runs/reproduce/audit/forget01/kl runs/reproduce/audit/forget01/dpo runs/reproduce/audit/forget01/npo runs/reproduce/audit/forget01/ulmr_templates_a0 runs/reproduce/audit/forget01/ulmr_templates_a0.4 --layout audit --names 'Base,Retraining,GA,KL,DPO,NPO,ULMR [templates] (α=0),ULMR [templates] (α=0.4)' --out benchmarks/results/reproduce/audit/forget01
