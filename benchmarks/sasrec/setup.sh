#!/usr/bin/env bash
# RecBole 1.2.1 needs numpy<2, pandas<3 and setuptools<81 (ray imports pkg_resources): its own venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m venv .venv-recbole
. .venv-recbole/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0 "numpy<2" "pandas<3" "setuptools<81" recbole==1.2.1 pyyaml
python -c "import recbole, torch, numpy; print('recbole', recbole.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
