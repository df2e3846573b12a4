"""Experiments over many runs and their reports: the distillation ablation, the model benchmark, the pilot measurements, the notebooks' results tables.

Modules: ``ablation``, ``ablation_report``, ``ablation_workers``, ``benchmark``, ``pilots``, ``results``.
"""
