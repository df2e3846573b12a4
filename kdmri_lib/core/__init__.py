"""Foundations every layer uses: errors with clear messages, atomic writes, devices, resource checks.

Modules: ``errors``, ``atomic``, ``device``, ``resources``.
"""
