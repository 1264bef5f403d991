#!/usr/bin/env bash
# made by: python benchmarks/reproduce.py --parts snap --snap-rows '- HardRDA' --snap-targets Confucius --snap-modes ''
# every command of the snap part of benchmarks/reproduce.py, in order, with its wall seconds (from any run)
set -euo pipefail
# SNAP - HardRDA Confucius: 298.1 s
obliviate run benchmarks/results/reproduce/snap/configs/hardrda_confucius.yaml --no-progress
# SNAP SNAP Stephen King: 1284.0 s
obliviate run benchmarks/results/reproduce/snap/configs/snap_stephen_king.yaml --no-progress
# SNAP SNAP Confucius: 2700.4 s
obliviate run benchmarks/results/reproduce/snap/configs/snap_confucius.yaml --no-progress
# SNAP SNAP Bruce Lee: 1117.7 s
obliviate run benchmarks/results/reproduce/snap/configs/snap_bruce_lee.yaml --no-progress
# SNAP Prompting Stephen King: 295.0 s
obliviate run benchmarks/results/reproduce/snap/configs/prompting_stephen_king.yaml --no-progress
# SNAP Prompting Confucius: 135.1 s
obliviate run benchmarks/results/reproduce/snap/configs/prompting_confucius.yaml --no-progress
# SNAP Prompting Bruce Lee: 246.6 s
obliviate run benchmarks/results/reproduce/snap/configs/prompting_bruce_lee.yaml --no-progress
# SNAP Euclidean Stephen King: 820.1 s
obliviate run benchmarks/results/reproduce/snap/configs/euclidean_stephen_king.yaml --no-progress
# SNAP Euclidean Confucius: 560.3 s
obliviate run benchmarks/results/reproduce/snap/configs/euclidean_confucius.yaml --no-progress
# SNAP Euclidean Bruce Lee: 506.5 s
obliviate run benchmarks/results/reproduce/snap/configs/euclidean_bruce_lee.yaml --no-progress
# SNAP Fisher Stephen King: 910.9 s
obliviate run benchmarks/results/reproduce/snap/configs/fisher_stephen_king.yaml --no-progress
# SNAP Fisher Confucius: 613.1 s
obliviate run benchmarks/results/reproduce/snap/configs/fisher_confucius.yaml --no-progress
# SNAP Fisher Bruce Lee: 563.0 s
obliviate run benchmarks/results/reproduce/snap/configs/fisher_bruce_lee.yaml --no-progress
# SNAP - Wasserstein Reg. Stephen King: 978.1 s
obliviate run benchmarks/results/reproduce/snap/configs/wasserstein_reg_stephen_king.yaml --no-progress
# SNAP - HardRDA Stephen King: 522.1 s
obliviate run benchmarks/results/reproduce/snap/configs/hardrda_stephen_king.yaml --no-progress
# SNAP SNAP + D_g Stephen King: 1351.4 s
obliviate run benchmarks/results/reproduce/snap/configs/snap__d_g_stephen_king.yaml --no-progress
# SNAP sequential 3 targets: 3584.9 s
obliviate run benchmarks/results/reproduce/snap/configs/snap_sequential.yaml --no-progress
# SNAP batch 3 targets: 2245.1 s
obliviate run benchmarks/results/reproduce/snap/configs/snap_batch.yaml --no-progress
