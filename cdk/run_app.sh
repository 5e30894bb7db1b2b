#!/bin/sh
# cdk.json's "app": run the CDK app with the project's Python (aws-cdk-lib lives in its venv).
# The first that exists wins: $CDK_PYTHON, the activated virtualenv, the README's .venv, python3.
set -eu
cd "$(dirname "$0")/.."
if [ -n "${CDK_PYTHON:-}" ]; then
    python="$CDK_PYTHON"
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    python="$VIRTUAL_ENV/bin/python"
elif [ -x .venv/bin/python ]; then
    python=.venv/bin/python
else
    python=python3
fi
if ! "$python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("aws_cdk") is None)' 2>/dev/null; then
    echo "cdk/run_app.sh: $python has no aws-cdk-lib; install the project: python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' (or set CDK_PYTHON)" >&2
    exit 1
fi
# jsii warns on every run when Node is older than it likes; the CLI still works.
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION="${JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION:-1}"
exec "$python" -m cdk.app
