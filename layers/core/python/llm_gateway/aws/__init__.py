"""What the Lambda functions share: settings, Powertools observability, dependencies built once."""
