"""One training run and its evaluation: the run configuration, the trainer over an explicit state, schedules and logs, fit and its command line, reconstruction and fastMRI's evaluation.

Modules: ``run_config``, ``schedule``, ``run_log``, ``train_state``, ``trainer``, ``train``, ``reconstruct``.
"""
