"""llm-gateway: the domain library shared by the local runtime and the Lambda functions."""

import os

# The gateway's numpy work is many tiny matrix products (the semantic cache's verifier, the
# classifiers) on CPUs that request threads already keep busy: BLAS threads add only wake-ups and
# spinning (a verifier call measured p90 16 ms with two OpenBLAS threads against 0.4 ms with one on
# a loaded 2-core machine). Set before numpy loads; an operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
