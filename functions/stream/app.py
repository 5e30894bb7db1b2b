from llm_gateway.aws.streaming_app import streaming_app

app = streaming_app()
