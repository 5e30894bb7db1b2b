"""The `llm-gateway` command (`main.py`): serve (with the supervisor that keeps the local model
server running), review, batch, cost-report, guard-report, check-config, and where local stores
live (`store_location.py`)."""
