"""The recommender harness: readers, the leave-one-out split, metrics, evaluation inside the Trainer, baselines."""
