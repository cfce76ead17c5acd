#!/usr/bin/env bash
# The 1D orders of the registered architectures against mlp, glu and gqu (docs/architectures.md):
# paper_1d, 10k training and test points, 4 seeds, newton-cascade (100 steps) without knot
# moves (--knot-moves 0: the schedule its documented numbers were measured with), float64.
# Shallow sums of units at widths 4..64; the dense two-layer models (each width its own
# program, the exact Hessian of every parameter) at widths 2..12.  Resumable: rerun after
# an interruption.  Writes runs/architectures_1d/{shallow,dense}/ and the two figures.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/architectures_1d}
common=(--problem paper_1d --n-data 10000 --n-test 10000 --seeds 0:4 --knot-moves 0 --quiet)
glu-scaling sweep --arch mlp,glu,gqu,relu2,swiglu,bilinear --widths 4:65:4 "${common[@]}" --out "$out/shallow"
glu-scaling sweep --arch mlp2,glu2 --widths 2:13:2 "${common[@]}" --out "$out/dense"
cp "$out/shallow/convergence.png" figures/architectures_1d_shallow.png
cp "$out/dense/convergence.png" figures/architectures_1d_dense.png
