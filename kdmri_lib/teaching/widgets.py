"""Interactive widgets for the notebooks (ipywidgets), with a static fallback: one name space for
the explorers (``kd.widgets.MaskExplorer``, ``kd.widgets.LossExplorer``) and the plain functions
behind them (:func:`acquisition_view`, :func:`loss_view`), which are tested without any widget.

The plumbing (a VBox with a PNG / text fallback, one torch thread while a view is computed) is in
:mod:`kdmri_lib.teaching.explorer_base`; the explorers in :mod:`kdmri_lib.teaching.mask_explorer`
and :mod:`kdmri_lib.teaching.loss_explorer`.
"""

from __future__ import annotations

from kdmri_lib.teaching.explorer_base import _Explorer, _FallbackVBox, _widgets, single_thread  # noqa: F401
from kdmri_lib.teaching.loss_explorer import LossExplorer, loss_figure, loss_view  # noqa: F401
from kdmri_lib.teaching.mask_explorer import (  # noqa: F401
    MaskExplorer,
    _acquisition_view,
    acquisition_figure,
    acquisition_view,
)
