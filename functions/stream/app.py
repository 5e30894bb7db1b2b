from llm_gateway.aws.runtime import deps
from llm_gateway.local.app import create_app
from llm_gateway.runner import LocalRunner

app = create_app(LocalRunner(deps()))
