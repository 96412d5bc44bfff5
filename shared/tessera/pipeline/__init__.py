"""The pipeline's steps as plain functions (split, vectorize, batch predictions), what each
step's outcome is, where bad objects go, and the SQS handler every step runs behind."""
