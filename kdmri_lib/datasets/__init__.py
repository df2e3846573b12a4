"""Data: fastMRI-format files and slice datasets, the distillation protocol's split, the embedded demo data and the real data sets.

Modules: ``protocol``, ``data_files``, ``data``, ``head_model``, ``demo_natural``, ``demo_data``, ``real_data``.
"""
