"""``mnistcnn sweep``: hyperparameter search on Optuna, where every trial is an ordinary run.

space.py reads the sweep file; study.py holds Optuna (storage, sampler, pruner, retries);
worker.py trains trials in a process of its own; launch.py starts the workers of one machine
and watches the study; report.py writes what the sweep leaves in its folder, and folder.py
names the files there.
"""
