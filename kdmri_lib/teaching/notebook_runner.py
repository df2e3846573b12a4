"""Running the notebooks headless (``make demo``, ``kdmri notebooks``): papermill execution with
parameters, the stored-output maintenance of ``--store-outputs`` and its checks. A tool around the
notebooks; what runs *inside* a notebook's kernel is :mod:`kdmri_lib.teaching.notebook`.

    python -m kdmri_lib.notebook_runner --out runs/demo            # the five notebooks, default parameters
    python -m kdmri_lib.notebook_runner --only 04_distill -p epochs 3
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

from kdmri_lib.core.atomic import atomic_write
from kdmri_lib.core.errors import ConfigError
from kdmri_lib.teaching.notebook import _validate

__all__ = ["NOTEBOOKS", "notebooks_dir", "execute", "run_notebooks", "output_problems", "store_outputs", "main"]


NOTEBOOKS = ("01_kspace_basics", "02_vit_teacher", "03_cnn_student", "04_distill", "05_evaluation")


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` folder (next to the installed package, editable install)."""
    here = Path(__file__).resolve().parents[2] / "notebooks"   # kdmri_lib/teaching/ -> the repository
    if not here.is_dir():
        raise ConfigError(f"{here}: notebooks folder not found; run from a clone of the repository")
    return here


def execute(src: str | os.PathLike, dst: str | os.PathLike, parameters: Optional[Mapping[str, Any]] = None,
            cwd: Optional[str | os.PathLike] = None, timeout: Optional[int] = None) -> None:
    """Execute one notebook with papermill (no progress bar; the kernel's own log quiet).

    The kernel runs with ``IPKernelApp.log_level=CRITICAL``: ipykernel otherwise prints an
    informational warning about unencrypted local TCP transport on every start, and now and then
    "KeyboardInterrupt caught in kernel" when the client interrupts the idle kernel while shutting
    it down. Errors in the notebook itself are unaffected: papermill raises them with the cell.
    """
    import papermill as pm

    pm.execute_notebook(str(src), str(dst), parameters=dict(parameters or {}), cwd=str(cwd or Path(src).parent),
                        progress_bar=False, kernel_name="python3", log_output=False, execution_timeout=timeout,
                        extra_arguments=["--IPKernelApp.log_level=CRITICAL"])


def run_notebooks(out: str | os.PathLike = "runs/demo", names=NOTEBOOKS, parameters: Optional[Mapping[str, Any]] = None,
                  data_dir: Optional[str | os.PathLike] = None, log=print) -> list[dict]:
    """Execute notebooks headless with papermill, one after the other, into ``out``.

    Each notebook runs in ``notebooks/`` (so its relative defaults work) with ``run_dir = out``;
    the executed copy is written to ``out/<name>.ipynb``. One progress line per notebook.

    Returns:
        one dict per notebook: ``name``, ``seconds``, ``output``, ``ok``, ``error``.
    """
    import time

    import papermill as pm

    nb_dir = notebooks_dir()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    params = dict(parameters or {})
    params["run_dir"] = os.path.relpath(out, nb_dir)
    if data_dir is not None:
        params["data_dir"] = os.path.relpath(Path(data_dir).resolve(), nb_dir)
    results = []
    for i, name in enumerate(names, 1):
        src = nb_dir / f"{name}.ipynb"
        if not src.exists():
            raise ConfigError(f"{src}: notebook not found; expected one of {', '.join(NOTEBOOKS)}")
        dst = out / f"{name}.ipynb"
        log(f"[{i}/{len(names)}] {name} ...", end="", flush=True) if log is print else log(f"[{i}/{len(names)}] {name} ...")
        t0 = time.perf_counter()
        err = None
        try:
            execute(src, dst, params, cwd=nb_dir)
        except pm.PapermillExecutionError as e:
            err = f"{e.ename}: {e.evalue} (cell {e.exec_count}; see {dst})"
        dt = time.perf_counter() - t0
        results.append({"name": name, "seconds": round(dt, 1), "output": str(dst), "ok": err is None, "error": err})
        log(f" {'done' if err is None else 'FAILED'} in {dt:.0f} s" + (f": {err}" if err else ""))
        if err:
            break
    return results


#: an absolute path of two or more folders (``/a/b/...``) not part of a URL, in an output
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.-]+/){2,}")


def output_problems(nb: Mapping[str, Any]) -> list[str]:
    """What makes an executed notebook unfit to commit: error outputs, warnings on stderr,
    absolute paths in outputs. Returns one line per problem (empty: fine)."""
    problems = []
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []) or []:
            if out.get("output_type") == "error":
                problems.append(f"cell {i}: error output {out.get('ename')}: {out.get('evalue')}")
                continue
            text = out.get("text", "")
            if isinstance(text, list):
                text = "".join(text)
            data = out.get("data", {})
            for mime in ("text/plain", "text/html", "text/markdown"):
                v = data.get(mime, "")
                text += "".join(v) if isinstance(v, list) else v
            if out.get("name") == "stderr" and "Warning" in text:
                problems.append(f"cell {i}: a warning on stderr: {text.strip().splitlines()[0][:120]}")
            if "Traceback (most recent call last)" in text:
                problems.append(f"cell {i}: a traceback in an output")
            m = _ABSOLUTE_PATH.search(text)
            if m:
                problems.append(f"cell {i}: an absolute path in an output ({m.group(0)}...)")
    return problems


def store_outputs(run_dir: str | os.PathLike, names=NOTEBOOKS) -> list[Path]:
    """Copy the executed notebooks of a default run (``make demo``) back over ``notebooks/``, so
    the committed notebooks carry the outputs of a default run.

    The papermill ``injected-parameters`` cell and papermill's per-cell metadata are dropped (the
    run's parameters must equal the defaults of the parameters cell: only ``run_dir`` /
    ``data_dir`` may have been injected, with their default values).

    Raises:
        ConfigError: a notebook is missing in ``run_dir``, was run with other parameters, or has
            outputs unfit to commit (:func:`output_problems`); nothing is written then.
    """
    import nbformat

    run_dir = Path(run_dir)
    nb_dir = notebooks_dir()
    staged = []
    for name in names:
        src = run_dir / f"{name}.ipynb"
        if not src.is_file():
            raise ConfigError(f"{src}: executed notebook not found; run `make demo` first")
        nb = nbformat.read(src, as_version=4)
        cells = []
        for cell in nb.cells:
            tags = cell.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags:
                injected = {}
                for line in cell.source.splitlines():
                    if "=" in line and not line.lstrip().startswith("#"):
                        k, v = (t.strip() for t in line.split("=", 1))
                        injected[k] = v
                allowed = {"run_dir": '"../runs/demo"', "data_dir": '"../data/demo"'}
                other = {k: v for k, v in injected.items() if allowed.get(k) != v}
                if other:
                    raise ConfigError(f"{src}: was run with non-default parameters {other}; store the outputs of a "
                                      f"default run (make demo)")
                continue
            cell.get("metadata", {}).pop("papermill", None)
            cell.get("metadata", {}).pop("execution", None)
            cells.append(cell)
        nb.cells = cells
        nb.metadata.pop("papermill", None)
        problems = output_problems(nb)
        if problems:
            raise ConfigError(f"{src}: outputs unfit to commit:\n  " + "\n  ".join(problems))
        staged.append((nb_dir / f"{name}.ipynb", nb))
    written = []
    for dst, nb in staged:
        with atomic_write(dst) as tmp:
            nbformat.write(nb, str(tmp))
        written.append(dst)
    return written


def main(argv=None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="kdmri notebooks",
                                description="Run the kdmri notebooks headless with papermill (make demo).")
    p.add_argument("--out", default="runs/demo", help="run folder (executed notebooks, checkpoints, results)")
    p.add_argument("--data", default=None, help="data folder (default: each notebook's data_dir, ../data/demo)")
    p.add_argument("--only", nargs="*", default=None, help=f"notebooks to run (default: all of {', '.join(NOTEBOOKS)})")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="notebook parameter (value parsed as JSON when possible), e.g. -p epochs 3")
    p.add_argument("--store-outputs", action="store_true",
                   help="maintainers: after a default run into runs/demo, copy the executed notebooks (outputs "
                        "included) back over notebooks/")
    args = p.parse_args(argv)
    params = {}
    for k, v in args.param:
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    names = tuple(args.only) if args.only else NOTEBOOKS
    import time

    from kdmri_lib.core.atomic import ensure_dir, write_json
    from kdmri_lib.core.errors import KdmriError

    try:
        unknown = [n for n in names if n not in NOTEBOOKS]
        if unknown:
            raise ConfigError(f"--only: unknown notebook(s) {', '.join(map(repr, unknown))}; expected some of "
                              f"{', '.join(NOTEBOOKS)}")
        _validate(params)
        if args.data is not None and not Path(args.data).is_dir():
            raise ConfigError(f"--data {args.data}: "
                              f"{'is a file' if Path(args.data).exists() else 'folder not found'}; expected a data "
                              f"folder with singlecoil_train/ and singlecoil_val/ (`make data` builds data/demo)")
        ensure_dir(args.out, "run folder (--out)")
        t0 = time.perf_counter()
        res = run_notebooks(args.out, names, params, data_dir=args.data)
    except KdmriError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = time.perf_counter() - t0
    out = Path(args.out)
    write_json(out / "notebook_times.json", {"notebooks": res, "total_seconds": round(total, 1)})
    failed = [r for r in res if not r["ok"]]
    if failed:
        print(f"error: notebook {failed[0]['name']} failed: {failed[0]['error']}", file=sys.stderr)
        user_error = any(f"{n}:" in (failed[0]["error"] or "") for n in ("ConfigError", "DataError", "CheckpointError",
                                                                          "ResourceError"))
        return 2 if user_error else 1
    print(f"all {len(res)} notebooks ran in {total:.0f} s; executed notebooks in {out}/")
    for f in ("results.md", "results.json"):
        if (out / f).exists():
            print(f"  {out / f}")
    figs = sorted(out.rglob("*.png"))
    if figs:
        print(f"  {len(figs)} figures under {out}/ (e.g. {figs[0]})")
    if (out / "results.md").exists():
        print()
        print((out / "results.md").read_text())
    if args.store_outputs:
        try:
            if params:
                raise ConfigError("--store-outputs: only the outputs of a default run are stored (drop the -p options)")
            for dst in store_outputs(out, names):
                print(f"stored the outputs in {dst}")
        except KdmriError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
