"""Shared plumbing of the notebooks' explorers (ipywidgets), with a static fallback.

Each explorer is an ``ipywidgets.VBox`` of controls, a metrics line (``HTML``) and a figure
rendered to PNG (``Image``): a control change recomputes the view and swaps the PNG, which stays
fast on a 2-core CPU and renders the same in JupyterLab, classic Notebook and Colab (no
``ipympl`` needed). The explorer runs its callback once on creation, and its rich display also
carries a plain ``image/png`` and ``text/plain`` copy of the current view, so headless runs
(papermill, nbval, GitHub's notebook viewer) show the figure and the numbers too.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Optional

import torch


@contextlib.contextmanager
def single_thread():
    """Run torch on one thread inside the block (the previous setting restored after).

    The widgets' computations work on one slice, a few FFTs of a 200-600 pixel image: on a
    2-core machine that also runs the browser and the Jupyter server, two intra-op threads spend
    their time waiting for a core (measured: one 192x192 :func:`acquisition_view` 3 ms on one
    thread, about 190 ms on two while the machine was busy).
    """
    n = torch.get_num_threads()
    if n != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n != 1:
            torch.set_num_threads(n)


def _widgets():
    try:
        import ipywidgets as w
    except ImportError as e:  # pragma: no cover - ipywidgets is a dependency
        raise ImportError("the interactive explorers need ipywidgets: pip install ipywidgets") from e
    return w


class _Explorer:
    """Shared plumbing: a VBox with a static PNG/text fallback in its rich display.

    The box carries stable CSS classes, for styling and for browser tests: ``kdmri-explorer``
    plus ``css_class`` of the subclass (e.g. ``kdmri-mask-explorer``) on the box,
    ``kdmri-metrics`` on the metrics line, ``kdmri-figure`` on the image.
    """

    css_class = "kdmri-explorer"

    def _build_box(self, controls: list, note: str = "", rows: Optional[list] = None):
        """The explorer's VBox: rows of controls (``rows``, a list of lists of widgets; default: the
        first four controls, then the rest), the metrics line, the figure and a note.

        The figure is shown at its natural size (render it at about 96 dpi for sharp text),
        shrunk to the output's width on narrow screens. Descriptions are never cut (a control
        without a ``description_width`` gets ``"initial"``), and ToggleButtons keep their
        description on the buttons' line (ipywidgets 8 puts it on a line of its own)."""
        w = _widgets()
        for c in controls:
            if isinstance(c, w.ToggleButtons):
                c.add_class("widget-inline-hbox")
            style = getattr(c, "style", None)
            if getattr(c, "description", "") and hasattr(style, "description_width") and not style.description_width:
                style.description_width = "initial"
        self.metrics_html = w.HTML(layout=w.Layout(min_height="1.6em"))
        self.metrics_html.add_class("kdmri-metrics")
        # align_self: a VBox stretches its children to its width, which would upscale the PNG
        self.image = w.Image(format="png", layout=w.Layout(width="auto", max_width="100%", height="auto",
                                                           align_self="flex-start"))
        self.image.add_class("kdmri-figure")
        self.note = w.HTML(note)
        rows = rows if rows is not None else [controls[:4], controls[4:]]
        self.box = _FallbackVBox([w.HBox(r, layout=w.Layout(flex_flow="row wrap")) for r in rows if r]
                                 + [self.metrics_html, self.image, self.note])
        self.box.add_class("kdmri-explorer")
        if self.css_class != "kdmri-explorer":
            self.box.add_class(self.css_class)
        self.box._explorer = self
        return self.box

    def _ipython_display_(self):  # display(explorer) shows its box
        from IPython.display import display

        display(self.box)

    def static_text(self) -> str:
        return self.metrics_html.value if hasattr(self, "metrics_html") else ""


def _strip_tags(html: str) -> str:
    import re

    return re.sub(r"<[^>]+>", "", html)


def _make_fallback_vbox():
    w = _widgets()

    class FallbackVBox(w.VBox):
        """A VBox whose display also carries a static PNG and text of its explorer's view."""

        def _repr_mimebundle_(self, **kwargs):
            data = super()._repr_mimebundle_(**kwargs) or {}
            exp = getattr(self, "_explorer", None)
            if exp is not None and getattr(exp, "png", None):
                data = dict(data)
                data["image/png"] = base64.b64encode(exp.png).decode()
                data["text/plain"] = _strip_tags(exp.static_text())
            return data

    return FallbackVBox


class _LazyFallback:
    _cls = None

    def __call__(self, *a, **k):
        if _LazyFallback._cls is None:
            _LazyFallback._cls = _make_fallback_vbox()
        return _LazyFallback._cls(*a, **k)


_FallbackVBox = _LazyFallback()
