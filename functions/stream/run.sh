#!/bin/sh
# Lambda Web Adapter (handler = run.sh) starts this server and streams each invocation's response.
export PYTHONPATH="/opt/python:${LAMBDA_TASK_ROOT}${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m uvicorn --host 127.0.0.1 --port "${PORT:-8080}" --no-access-log --lifespan off app:app
