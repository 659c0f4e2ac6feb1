#!/usr/bin/env bash
# Every GPU measurement issue 17 asks for, in one run (about 10 minutes on one H100/H200):
# training-step profiles of stage 1 and 2 at the paper preset and batch, before and after each
# candidate speed-up, then `abmseg predict` of a paper-sized patient in fp32.
# Usage (repository root, venv with a CUDA torch active): bash bench/gpu_issue17.sh OUT_DIR
set -euo pipefail
out=${1:?output folder}
mkdir -p "$out"
cd bench
for stage in 1 2; do
    for flags in "" "--augment-on-device" "--augment-on-device --channels-last" \
        "--augment-on-device --channels-last --fused-adam"; do
        name="stage${stage}${flags// /}"
        # shellcheck disable=SC2086 # the flags are words
        python train_step_profile.py --stage "$stage" --batch 8 --steps 20 $flags \
            > "$out/$name.txt" 2>&1 || echo "failed: $name" >> "$out/failures.txt"
    done
done
python predict_ct.py --steps 1 50 --batch 16 --threads 8 --device cuda \
    > "$out/predict_ct.txt" 2>&1 || echo "failed: predict_ct" >> "$out/failures.txt"
