"""Developer tooling, never bundled into a Lambda function or the training image: the local
runtime (`local`), the `tessera` command line, benchmarks (`bench`), evaluations
(`evaluation`), generated sheets (`synthetic`) and sample data (`samples`)."""
