# Sourced by tests/run.sh and examples/demo.sh: create .venv with the project and its
# test extras, pin torch to the CPU wheel, add Ray (the sweep tests run a local Ray
# instance; about 20 s to install), and install Graphviz's `dot` where missing.
VENV="${FRONTIER_DAG_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
source "$VENV/bin/activate"
if ! python -c "import frontier_dag, pytest, pytest_timeout, hypothesis, torch, ray, numba, ruff" 2>/dev/null; then
  python -m pip install -q --upgrade pip
  python -m pip install -q -e ".[test,profile,ray]"
fi
python -c "import aiconfigurator" 2>/dev/null || python -m pip install -q -e ".[baseline]"  # validate --baseline's peer
# An editable install compiles none of the project's modules, and where PYTHONDONTWRITEBYTECODE
# is set nothing ever writes them: every command would compile ~90 modules (~0.2 CPU-s).
python -m compileall -q frontier_dag >/dev/null || true
if ! command -v dot >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q graphviz >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q graphviz >/dev/null 2>&1; }) \
      || echo "warning: could not install graphviz; render will write .dot files only" >&2
  else
    echo "warning: graphviz 'dot' not found; render will write .dot files only" >&2
  fi
fi
