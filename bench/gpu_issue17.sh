#!/usr/bin/env bash
# Every GPU measurement issue 17 asks for, in one run (about 12 minutes on one H100/H200):
# training-step profiles of stage 1 and 2 at the paper preset and batch, before and after each
# candidate speed-up, 200-step loss curves without and with all of them, then `abmseg predict`
# of a paper-sized patient in fp32.
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
# Loss curves of 200 steps from the same seed: baseline against all candidates together.
all="--augment-on-device --channels-last --fused-adam"
for stage in 1 2; do
    python train_step_profile.py --stage "$stage" --loss-curve 200 \
        --curve-out "$out/curve${stage}_base.csv" >> "$out/curves.txt" 2>&1
    # shellcheck disable=SC2086 # the flags are words
    python train_step_profile.py --stage "$stage" --loss-curve 200 $all \
        --curve-out "$out/curve${stage}_all.csv" >> "$out/curves.txt" 2>&1
    python - "$out/curve${stage}_base.csv" "$out/curve${stage}_all.csv" <<'PY' >> "$out/curves.txt"
import sys
import numpy as np
base, cand = (np.genfromtxt(f, delimiter=",", names=True) for f in sys.argv[1:3])
smooth = lambda x: np.convolve(x, np.ones(20) / 20, mode="valid")  # noqa: E731
gap = np.abs(smooth(base["total"]) - smooth(cand["total"])) / np.abs(smooth(base["total"]))
print(f"{sys.argv[2]}: 20-step mean of the total loss differs by at most {gap.max():.2%}")
PY
done
python predict_ct.py --steps 1 50 --batch 16 --threads 8 --device cuda \
    > "$out/predict_ct.txt" 2>&1 || echo "failed: predict_ct" >> "$out/failures.txt"
