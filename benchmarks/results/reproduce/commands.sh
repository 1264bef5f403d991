#!/usr/bin/env bash
# made by: python benchmarks/reproduce.py --parts tofu,audit --splits forget01 --seeds 0,1,2 --data templates_none --alpha 0,0.2,0.4 --snap-methods snap --eval-max-samples 40 --audit-max-samples 20
# every command benchmarks/reproduce.py ran, in order, with its wall seconds (from any run)
set -euo pipefail
# forget01 eval Retraining: 298.4 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/retrain/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --out runs/reproduce/tofu/forget01/eval/retraining
# forget01 eval Base: 151.1 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/base/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/base
# forget01 eval GA seed 0: 201.6 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ga_s0/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ga_s0
# forget01 eval KL seed 0: 181.8 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/kl_s0/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/kl_s0
# forget01 eval DPO seed 0: 148.7 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/dpo_s0/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/dpo_s0
# forget01 eval NPO seed 0: 280.6 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/npo_s0/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/npo_s0
# forget01 eval ULMR [templates] (α=0) seed 0: 120.0 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ulmr_templates_none_s0/train/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ulmr_templates_none_a0_s0
# forget01 eval ULMR [templates] (α=0.2) seed 0: 137.7 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ulmr_templates_none_s0/merged_alpha_0.2 --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ulmr_templates_none_a0.2_s0
# forget01 eval ULMR [templates] (α=0.4) seed 0: 150.4 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ulmr_templates_none_s0/merged_alpha_0.4 --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ulmr_templates_none_a0.4_s0
# forget01 eval SNAP [templates] seed 0: 601.9 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/snap_templates_none_s0/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/snap_templates_none_s0
# forget01 eval GA seed 1: 485.9 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ga_s1/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ga_s1
# forget01 eval KL seed 1: 179.4 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/kl_s1/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/kl_s1
# forget01 eval DPO seed 1: 199.6 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/dpo_s1/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/dpo_s1
# forget01 eval NPO seed 1: 178.3 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/npo_s1/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/npo_s1
# forget01 eval ULMR [templates] (α=0) seed 1: 315.2 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ulmr_templates_none_s1/train/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ulmr_templates_none_a0_s1
# forget01 eval ULMR [templates] (α=0.2) seed 1: 293.6 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ulmr_templates_none_s1/merged_alpha_0.2 --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ulmr_templates_none_a0.2_s1
# forget01 eval ULMR [templates] (α=0.4) seed 1: 453.1 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ulmr_templates_none_s1/merged_alpha_0.4 --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ulmr_templates_none_a0.4_s1
# forget01 teach (Base): 301.8 s
obliviate train --method retrain --model smollm2-135m-instruct --retain runs/reproduce/tofu/forget01/data/teach.jsonl --set lr=0.0003 --set epochs=4 --set batch_size=4 --set max_length=192 --set seed=0 --out runs/reproduce/tofu/forget01/base
# forget01 SNAP [templates] seed 1: 642.4 s
obliviate train --method snap --model runs/reproduce/tofu/forget01/base/model --forget benchmarks/data/ulmr_tofu_forget01_templates_none/forget_augmented.jsonl --retain runs/reproduce/tofu/forget01/data/retain.jsonl --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set gradient_checkpointing=false --set seed=1 --out runs/reproduce/tofu/forget01/snap_templates_none_s1
# forget01 eval SNAP [templates] seed 1: 179.7 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/snap_templates_none_s1/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/snap_templates_none_s1
# forget01 eval GA seed 2: 648.2 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ga_s2/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ga_s2
# forget01 eval KL seed 2: ? s
obliviate eval tofu --model runs/reproduce/tofu/forget01/kl_s2/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/kl_s2
# forget01 DPO seed 2: 231.6 s
obliviate train --method dpo --model runs/reproduce/tofu/forget01/base/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set seed=2 --out runs/reproduce/tofu/forget01/dpo_s2
# forget01 eval DPO seed 2: 163.7 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/dpo_s2/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/dpo_s2
# forget01 NPO seed 2: 140.4 s
obliviate train --method npo --model runs/reproduce/tofu/forget01/base/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set seed=2 --out runs/reproduce/tofu/forget01/npo_s2
# forget01 eval NPO seed 2: 188.1 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/npo_s2/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/npo_s2
# forget01 ULMR[templates_none] train seed 2: 182.3 s
obliviate train --method ulmr --model runs/reproduce/tofu/forget01/base/model --forget benchmarks/data/ulmr_tofu_forget01_templates_none/forget_augmented.jsonl --set lr=0.0001 --set batch_size=8 --set grad_accum=2 --set seed=2 --out runs/reproduce/tofu/forget01/ulmr_templates_none_s2/train
# forget01 eval ULMR [templates] (α=0) seed 2: 151.3 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ulmr_templates_none_s2/train/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ulmr_templates_none_a0_s2
# forget01 ULMR[templates_none] merge α=0.2 seed 2: 4.7 s
obliviate merge --base runs/reproduce/tofu/forget01/base/model --tuned runs/reproduce/tofu/forget01/ulmr_templates_none_s2/train/model --alpha 0.2 --out runs/reproduce/tofu/forget01/ulmr_templates_none_s2/merged_alpha_0.2
# forget01 eval ULMR [templates] (α=0.2) seed 2: 173.3 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ulmr_templates_none_s2/merged_alpha_0.2 --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ulmr_templates_none_a0.2_s2
# forget01 ULMR[templates_none] merge α=0.4 seed 2: 5.4 s
obliviate merge --base runs/reproduce/tofu/forget01/base/model --tuned runs/reproduce/tofu/forget01/ulmr_templates_none_s2/train/model --alpha 0.4 --out runs/reproduce/tofu/forget01/ulmr_templates_none_s2/merged_alpha_0.4
# forget01 eval ULMR [templates] (α=0.4) seed 2: 163.5 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/ulmr_templates_none_s2/merged_alpha_0.4 --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/ulmr_templates_none_a0.4_s2
# forget01 SNAP [templates] seed 2: 574.2 s
obliviate train --method snap --model runs/reproduce/tofu/forget01/base/model --forget benchmarks/data/ulmr_tofu_forget01_templates_none/forget_augmented.jsonl --retain runs/reproduce/tofu/forget01/data/retain.jsonl --set lr=0.0001 --set batch_size=8 --set grad_accum=4 --set gradient_checkpointing=false --set seed=2 --out runs/reproduce/tofu/forget01/snap_templates_none_s2
# forget01 eval SNAP [templates] seed 2: 170.6 s
obliviate eval tofu --model runs/reproduce/tofu/forget01/snap_templates_none_s2/model --data-source ../shared/data/tofu --forget-split forget01 --max-samples 40 --no-progress --retain-result runs/reproduce/tofu/forget01/eval/retraining --out runs/reproduce/tofu/forget01/eval/snap_templates_none_s2
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
# forget01 audit SNAP [templates]: 1371.6 s
obliviate audit --model runs/reproduce/tofu/forget01/snap_templates_none_s0/model --base runs/reproduce/tofu/forget01/base/model --reference runs/reproduce/tofu/forget01/retrain/model --forget tofu:forget01 --retain runs/reproduce/tofu/forget01/data/retain.jsonl --tofu-source ../shared/data/tofu --shared-dir runs/reproduce/audit/forget01/shared --label 'SNAP [templates]' --seed 0 --max-samples 20 --no-progress --out runs/reproduce/audit/forget01/snap_templates
# forget01 audit report: 6.1 s
obliviate report runs/reproduce/audit/forget01/base runs/reproduce/audit/forget01/retraining runs/reproduce/audit/forget01/ga runs/reproduce/audit/forget01/kl runs/reproduce/audit/forget01/dpo runs/reproduce/audit/forget01/npo runs/reproduce/audit/forget01/ulmr_templates_a0 runs/reproduce/audit/forget01/ulmr_templates_a0.4 runs/reproduce/audit/forget01/snap_templates --layout audit --names 'Base,Retraining,GA,KL,DPO,NPO,ULMR [templates] (α=0),ULMR [templates] (α=0.4),SNAP [templates]' --out benchmarks/results/reproduce/audit/forget01
