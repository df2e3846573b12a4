"""What the notebooks use: figures, interactive explorers, lessons and self-checks, the released code's demonstrations, the in-kernel setup and the papermill runner.

Modules: ``viz``, ``widgets``, ``lessons``, ``check``, ``released``, ``notebook``, ``notebook_runner``.
"""
