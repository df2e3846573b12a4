"""MRI physics: centred FFTs and the sr / cs operators, masks, fastMRI's metrics, the fastMRI file format, a simulated single-coil acquisition.

Modules: ``physics``, ``masks``, ``metrics``, ``fastmri_format``, ``kspace_sim``.
"""
