"""CDK stacks: compositions of the constructs in `cdk.constructs`."""
