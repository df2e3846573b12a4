r"""The training loop over an explicit state: :class:`Trainer` and :class:`TrainState`.

:func:`kdmri_lib.engine.train.fit` builds a :class:`Trainer` from a :class:`~kdmri_lib.engine.run_config.TrainConfig`
and calls :meth:`Trainer.run`. The loop is small methods over the trainer's fields::

    run()          for each epoch: run_epoch(), validate(), save()
    run_epoch()    seeds the epoch, skips what an interrupted epoch already did, train_step() per batch
    train_step()   one optimiser step of the student (and, correcting, of the teacher); returns a log row
    validate()     fastMRI's metrics on the validation slices -> one history row
    save()         last.pt / best.pt / teacher_last.pt / logs, atomically

:class:`TrainState` (epoch, step, global step, history, best) is what a checkpoint stores besides the
weights, optimisers and RNG states. Step hooks (:func:`add_step_hook`, or ``fit(cfg, on_step=...)``)
run after every step with the trainer and the step's log row: a notebook can plot live, and the
interrupt / kill tests stop a real run at an exact step with them.

Determinism and exact resume, interrupts, divergence and DDP are described in :mod:`kdmri_lib.engine.train`.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from kdmri_lib.core import device as D
from kdmri_lib.core.atomic import atomic_write, ensure_dir, remove_stale_temporaries, write_json, write_text
from kdmri_lib.core.errors import ConfigError
from kdmri_lib.distill import Adapters, DistillState, distill_losses, teacher_cache
from kdmri_lib.distill.losses import reconstruction_loss
from kdmri_lib.engine.run_config import TrainConfig, check_resume
from kdmri_lib.engine.run_log import STEP_COLUMNS, EpochSums, csv_text, read_steps
from kdmri_lib.engine.schedule import EpochSampler, StopFlag, epoch_seed, lr_lambda
from kdmri_lib.engine.train_state import TrainingDiverged, TrainingInterrupted, TrainResult, TrainState
from kdmri_lib.models.checkpoint import (
    load_checkpoint,
    load_model,
    model_checkpoint,
    plain_rng_state,
    restore_rng_state,
    save_checkpoint,
)

__all__ = ["Trainer", "TrainState", "TrainResult", "TrainingDiverged", "TrainingInterrupted", "add_step_hook",
           "training_dataset"]


#: hooks ``f(trainer, row)`` run after every training step of every run in this process
_STEP_HOOKS: list[Callable[["Trainer", dict], None]] = []


def add_step_hook(hook: Callable[["Trainer", dict], None]) -> Callable[[], None]:
    """Run ``hook(trainer, row)`` after every training step (``row``: the step's log, with
    ``global_step``, ``epoch``, ``step``, ``loss``, ...). Returns a function that removes it."""
    _STEP_HOOKS.append(hook)
    return lambda: _STEP_HOOKS.remove(hook) if hook in _STEP_HOOKS else None


def training_dataset(cfg: TrainConfig):
    """The training set of a run: whole slices of ``data_dir/singlecoil_train`` (random ``cs``
    masks), mixed 1:1 with ``data_dir/natural/train`` when ``cfg.natural`` and that folder exists;
    ``cfg.augment`` warps each slice at random before it is measured."""
    from kdmri_lib.datasets.data import build_dataset

    natural_dir = Path(cfg.data_dir) / "natural" / "train"
    return build_dataset(cfg.data_dir, "train", cfg.task, cfg.factor,
                         natural_dir=natural_dir if (cfg.natural and natural_dir.is_dir()) else None,
                         include=cfg.train_files, references=cfg.references, unlabelled=cfg.unlabelled,
                         pool_split=cfg.pool_split, augment=cfg.augment)


def _any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is True on any rank (a no-op without a process group)."""
    if not D.is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device if device.type == "cuda" else "cpu")
    return bool(D.all_reduce_sum(t).item() > 0)


def _batch_psnr(out: torch.Tensor, x: torch.Tensor) -> float:
    mse = float(((out.detach().float() - x) ** 2).mean())
    peak = float(x.max())
    return 10.0 * math.log10(peak * peak / mse) if mse > 0 and peak > 0 else float("inf")


def _state_cpu(sd: Mapping[str, Any]) -> dict:
    return {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in sd.items()}


def _optimizer_state(opt: torch.optim.Optimizer) -> dict:
    sd = opt.state_dict()
    return {"state": {k: _state_cpu(v) for k, v in sd["state"].items()}, "param_groups": sd["param_groups"]}


def _ddp(module: Optional[nn.Module], device: torch.device) -> Optional[nn.Module]:
    if module is None or not D.is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)


class Trainer:
    """One training run (``cfg``) on ``device``: models, optimisers, data and :class:`TrainState`.

    Construction does the setup (run folder, data, models, optimisers, resume, DDP wrappers, the
    loader); :meth:`run` trains to ``cfg.epochs`` (or ``cfg.epoch_limit`` more epochs) and returns a
    :class:`TrainResult`. ``stop`` is set by SIGINT / SIGTERM; ``hooks`` run after every step.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device, stop: StopFlag,
                 hooks: tuple[Callable[["Trainer", dict], None], ...] = ()):
        self.cfg, self.device, self.stop, self.hooks = cfg, device, stop, tuple(hooks)
        self.main = D.rank() == 0
        self.out = Path(cfg.out_dir)
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        self.teacher_path, self.steps_path = self.out / "teacher_last.pt", self.out / "steps.csv"
        if self.main:
            ensure_dir(self.out, "run folder (--out)")
            # a process killed during a checkpoint write (kill -9) left its temporary file: this run owns
            # the folder now, so it is removed (the checkpoint it was replacing is intact)
            remove_stale_temporaries(self.out, [p.name for p in (self.last_path, self.best_path, self.teacher_path)])
        D.barrier()
        self.amp = cfg.amp and D.amp_dtype(device) is not None
        self.distill = cfg.mode == "distill"
        self.correction = self.distill and cfg.distill.correction
        self._setup_data()
        self._setup_models()
        self.rehearsal = None
        if self.correction and cfg.distill.t_rehearsal > 0:   # kdmri_lib.engine.rehearsal
            from kdmri_lib.engine.rehearsal import setup_rehearsal

            self.cfg, self.rehearsal = setup_rehearsal(self.cfg, self.teacher_record, verbose=self.main and cfg.verbose)
            cfg = self.cfg
        self._setup_optimisers()
        self.state, self.resumed = TrainState(), None
        self.step_rows: list[dict] = []
        if cfg.resume:
            self._resume()
        if self.main:
            write_json(self.out / "config.json", cfg.to_dict())
        self._wrap()

    # ---- setup ---------------------------------------------------------------------------------
    def _setup_data(self) -> None:
        from kdmri_lib.engine.reconstruct import open_split

        cfg = self.cfg
        self.train_ds = training_dataset(cfg)
        self.val_ds = open_split(cfg.data_dir, cfg.task, cfg.factor, "val", include=cfg.val_files)
        self.steps_per_epoch = cfg.steps_per_epoch or max(1, len(self.train_ds) // (cfg.batch_size * D.world_size()))
        self.total_steps = self.steps_per_epoch * cfg.epochs

    def _setup_models(self) -> None:
        from kdmri_lib.models import build_model

        cfg, dcfg = self.cfg, self.cfg.distill
        D.seed_everything(cfg.seed)
        self.model = build_model(cfg.model_kind, cfg.preset, cfg.task, cfg.factor, **cfg.model_overrides).to(self.device)
        self.teacher = self.adapters = self.teacher_anchor = self.teacher_record = None
        if not self.distill:
            return
        self.teacher, self.teacher_record = load_model(cfg.teacher_checkpoint, self.device,
                                     expect={"kind": "teacher", "task": cfg.task, "factor": cfg.factor,
                                             "preset": cfg.teacher_preset})
        if self.correction:
            self.teacher.train()
            if dcfg.t_params == "head":   # the body keeps the source domain's knowledge; the head adapts
                self.teacher.requires_grad_(False)
                for p in self.teacher.head_parameters():
                    p.requires_grad_(True)
        else:
            self.teacher.eval()
            self.teacher.requires_grad_(False)
        if dcfg.feature_kd:
            self.adapters = Adapters.for_models(self.model, self.teacher).to(self.device)
        # the pre-trained teacher, which the correction's L2-SP term keeps it near (captured before a
        # resumed run restores the corrected weights)
        if self.correction and dcfg.t_anchor > 0:
            self.teacher_anchor = [p.detach().clone() for p in self.teacher.parameters()]

    def _setup_optimisers(self) -> None:
        cfg, dcfg = self.cfg, self.cfg.distill
        params = list(self.model.parameters()) + (list(self.adapters.parameters()) if self.adapters is not None else [])
        self.train_params = [p for p in params if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        schedule = lr_lambda(cfg.schedule, self.total_steps, cfg.warmup_steps)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, schedule)
        self.t_opt = self.t_sched = None
        if self.correction:
            teacher_lr = dcfg.teacher_lr if dcfg.teacher_lr is not None else 0.1 * cfg.lr
            self.t_opt = torch.optim.AdamW([p for p in self.teacher.parameters() if p.requires_grad], lr=teacher_lr,
                                           weight_decay=cfg.weight_decay)
            self.t_sched = torch.optim.lr_scheduler.LambdaLR(self.t_opt, lr_lambda(cfg.schedule, self.total_steps,
                                                                                   cfg.warmup_steps))
        self.scaler = torch.amp.GradScaler(self.device.type) if D.needs_grad_scaler(self.device, self.amp) else None
        self.dstate = DistillState(dcfg.ema_decay, dcfg.dynamic_floor)

    def _resume(self) -> None:
        cfg = self.cfg
        if not self.last_path.exists():
            if cfg.verbose and self.main:
                print(f"[train] --resume: no {self.last_path} yet, starting from scratch", flush=True)
            return
        ckpt = load_checkpoint(self.last_path)
        check_resume(ckpt, cfg, self.last_path)
        self.model.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.sched.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        dd = ckpt.get("distill") or {}
        if self.correction:
            self.teacher.load_state_dict(dd["teacher"]["model"])
            self.t_opt.load_state_dict(dd["teacher"]["optimizer"])
            self.t_sched.load_state_dict(dd["teacher"]["scheduler"])
        if self.adapters is not None:
            self.adapters.load_state_dict(dd["adapters"])
        if self.distill and dd.get("state"):
            self.dstate.load_state_dict(dd["state"])
        self.state, self.resumed = TrainState.from_checkpoint(ckpt), ckpt
        if self.main:
            self.step_rows = read_steps(self.steps_path, self.state.global_step)
        if cfg.verbose and self.main:
            s = self.state
            if s.epoch >= cfg.epochs:
                print(f"[train] {self.last_path}: already trained for {s.epoch} epoch(s); nothing to do", flush=True)
            else:
                where = f"epoch {s.epoch + 1} step {s.step}" if s.step else f"epoch {s.epoch + 1}"
                print(f"[train] resuming {self.last_path} at {where} (global step {s.global_step})", flush=True)

    def _wrap(self) -> None:
        """DDP wrappers, the teacher memo (:mod:`kdmri_lib.distill.teacher_cache`) and the resumable loader."""
        cfg, dcfg = self.cfg, self.cfg.distill
        self.model_t, self.adapters_t = _ddp(self.model, self.device), _ddp(self.adapters, self.device)
        self.teacher_t = _ddp(self.teacher, self.device) if self.correction else self.teacher
        self.cache = None
        if (self.distill and cfg.teacher_cache and not D.is_distributed()
                and teacher_cache.usable(cfg.task, cfg.natural or cfg.augment, self.teacher)
                and (not self.correction or dcfg.t_params == "head")):
            from kdmri_lib.pretrained.index import resolve

            store = teacher_cache.shared_store(str(resolve(cfg.teacher_checkpoint)), frozen=not self.correction)
            self.teacher_t = self.cache = teacher_cache.TeacherCache(self.teacher, relabel_every=dcfg.relabel_every,
                                                                     store=store)
            saved = ((self.resumed or {}).get("distill") or {}).get("teacher_cache")
            if saved:
                self.cache.load_state(saved)
            elif self.correction and self.state.global_step:   # resuming a run that did not memoise
                self.cache.teacher_steps = -(-self.state.global_step // dcfg.t_every)   # one every t_every
                self.cache.version = self.cache.teacher_steps // dcfg.relabel_every
        self.sampler = EpochSampler(self.train_ds, D.world_size(), D.rank(), cfg.seed,
                                    self.steps_per_epoch * cfg.batch_size)
        self.loader_gen = torch.Generator()
        from kdmri_lib.datasets.data import collate

        self.loader = DataLoader(self.train_ds, batch_size=cfg.batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=cfg.num_workers, generator=self.loader_gen, collate_fn=collate,
                                 pin_memory=self.device.type == "cuda")

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train the remaining epochs (at most ``cfg.epoch_limit`` in this call)."""
        cfg, epochs_run = self.cfg, 0
        for epoch in range(self.state.epoch, cfg.epochs):
            if cfg.epoch_limit is not None and epochs_run >= cfg.epoch_limit:
                break
            t_epoch = time.perf_counter()
            sums = self.run_epoch(epoch)
            row = self.validate(epoch, sums, time.perf_counter() - t_epoch)
            self.save(row)
            epochs_run += 1
            self.resumed = None
        self.model.eval()
        if self.teacher is not None:
            self.teacher.eval()
        if not self.state.history and self.main and not self.last_path.exists():  # pragma: no cover
            raise ConfigError("no epoch was run")
        return TrainResult(history=self.state.history, best_checkpoint=self.best_path, last_checkpoint=self.last_path,
                           out_dir=self.out, model=self.model, teacher=self.teacher, steps_log=self.steps_path,
                           config=cfg, adapters=self.adapters)

    def run_epoch(self, epoch: int) -> EpochSums:
        """The steps of epoch ``epoch`` (0-based), after those an interrupted epoch already did."""
        from tqdm.auto import tqdm

        cfg, t_epoch = self.cfg, time.perf_counter()
        es = epoch_seed(cfg.seed, epoch)
        D.seed_everything(es)
        self.sampler.set_epoch(epoch)
        self.loader_gen.manual_seed(es)
        it = iter(self.loader)
        skip = self.state.step if (self.resumed is not None and epoch == self.state.epoch) else 0
        sums = EpochSums(self.resumed.get("epoch_sums") if skip else None)
        for _ in range(skip):
            next(it)
        if skip:
            restore_rng_state(self.resumed["rng"])
        self.model_t.train()
        if self.adapters is not None:
            self.adapters.train()
        bar = tqdm(total=self.steps_per_epoch, initial=skip, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   leave=False, disable=not (cfg.progress and self.main), dynamic_ncols=True)
        try:
            for step in range(skip, self.steps_per_epoch):
                if _any_rank(self.stop.set, self.device):
                    self._interrupt(epoch, step, sums.state(time.perf_counter() - t_epoch))
                row = self.train_step(next(it), epoch, step)
                sums.add(row)
                bar.update(1)
                if self.main and cfg.progress:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", psnr=f"{row['train_PSNR']:.2f}", refresh=False)
                for hook in (*_STEP_HOOKS, *self.hooks):
                    hook(self, row)
        finally:
            bar.close()
        return sums

    def train_step(self, batch: dict, epoch: int, step: int) -> dict:
        """One optimiser step on ``batch``; returns its log row (every loss term, weights, norms)."""
        t0 = time.perf_counter()
        row = self._optimise(batch, epoch, step)
        if self.cache is not None and row.get("t_step"):
            self.cache.step()
        self.sched.step()
        if self.t_sched is not None:
            self.t_sched.step()
        s = self.state
        s.global_step += 1
        row.update(global_step=s.global_step, epoch=epoch + 1, step=step + 1, lr=self.opt.param_groups[0]["lr"],
                   seconds=time.perf_counter() - t0)
        if self.t_opt is not None:
            row["t_lr"] = self.t_opt.param_groups[0]["lr"]
        if self.main and s.global_step % self.cfg.log_every == 0:
            self.step_rows.append(row)
        return row

    def _losses(self, batch: dict, op, x: torch.Tensor, t_step: bool):
        """``(student loss, teacher loss or None, log row, student output)`` of one batch."""
        cfg = self.cfg
        if self.distill:
            lb = distill_losses(self.model_t, self.teacher_t, self.adapters_t, batch["y"], op, x, cfg.distill,
                                self.dstate, teacher_grad=t_step, amp=self.amp, labelled=batch.get("labelled"),
                                teacher_anchor=self.teacher_anchor)
            row = lb.log_dict()
            row["t_step"] = float(t_step)
            return lb.total, (lb.teacher_total if t_step else None), row, lb.maps["student"]
        with D.autocast(self.device, self.amp):
            out = self.model_t(batch["y"], op)
        loss = reconstruction_loss(out.float(), x)
        return loss, None, {"loss": float(loss.detach()), "rec": float(loss.detach())}, out

    def _optimise(self, batch: dict, epoch: int, step: int) -> dict:
        from kdmri_lib.datasets.data import batch_operator, to_device

        cfg, device, scaler = self.cfg, self.device, self.scaler
        batch = to_device(batch, device)
        op = batch_operator(batch, cfg.task, cfg.factor)
        x = batch["target"].float()
        self.opt.zero_grad(set_to_none=True)
        if self.t_opt is not None:
            self.t_opt.zero_grad(set_to_none=True)
        t_step = self.t_opt is not None and self.dstate.steps % cfg.distill.t_every == 0   # a teacher step now
        k = self.dstate.steps // cfg.distill.t_every   # this teacher step's number
        loss, t_loss, row, out = self._losses(batch, op, x, t_step)
        if t_step and self.rehearsal is not None:
            r = self.rehearsal.loss(self.teacher_t, k, device, self.amp)
            t_loss, row["t_rehearsal"] = t_loss + r, float(r.detach())
        finite = math.isfinite(row["loss"]) and (t_loss is None or math.isfinite(row.get("t_loss", 0.0)))
        if _any_rank(not finite, device):
            self._diverged(epoch, step, row)
        both = loss if t_loss is None else loss + t_loss
        if scaler is not None:
            scaler.scale(both).backward()
            scaler.unscale_(self.opt)
            if t_step:
                scaler.unscale_(self.t_opt)
        else:
            both.backward()
        clip = cfg.grad_clip if cfg.grad_clip is not None else float("inf")
        gn = row["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.train_params, clip))
        tgn = None
        if t_step:
            tgn = row["t_grad_norm"] = float(torch.nn.utils.clip_grad_norm_(
                [p for p in self.teacher.parameters() if p.requires_grad], clip))
        if scaler is None and _any_rank(not (math.isfinite(gn) and (tgn is None or math.isfinite(tgn))), device):
            self._diverged(epoch, step, row, what="gradient norm")
        for opt in (self.opt, self.t_opt if t_step else None):
            if opt is not None:
                scaler.step(opt) if scaler is not None else opt.step()
        if scaler is not None:
            scaler.update()
        lab = batch.get("labelled")
        keep = slice(None) if lab is None else lab > 0.5   # PSNR only where there is a ground truth
        row["train_PSNR"] = _batch_psnr(out[keep], x[keep]) if bool((lab is None) or keep.any()) else float("nan")
        return row

    def validate(self, epoch: int, sums: EpochSums, seconds: float) -> dict:
        """The history row of epoch ``epoch``: its loss means and fastMRI's metrics on the validation
        slices (the student's, and the corrected teacher's)."""
        from kdmri_lib.engine.reconstruct import evaluate

        cfg = self.cfg
        kw = dict(amp=self.amp, per_slice=False, distributed=D.is_distributed())
        res = evaluate(self.model, self.val_ds, "val", cfg.task, cfg.factor, self.device, cfg.val_batch_size,
                       cfg.val_slices, **kw)
        means = sums.reduced_means()
        h: dict[str, Any] = {"epoch": epoch + 1, "train_loss": means.pop("loss", float("nan"))}
        h.update(means)
        h.update({f"val_{k}": res["means"][k] for k in ("PSNR", "SSIM", "NMSE", "MSE")})
        if self.correction:
            tres = evaluate(self.teacher, self.val_ds, "val", cfg.task, cfg.factor, self.device, cfg.val_batch_size,
                            cfg.val_slices, **kw)
            h.update({f"teacher_val_{k}": tres["means"][k] for k in ("PSNR", "SSIM", "NMSE")})
            self.teacher.train()
        h["lr"] = self.opt.param_groups[0]["lr"]
        h["steps"] = self.state.global_step
        h["seconds"] = sums.seconds + seconds
        return h

    # ---- checkpoints and logs --------------------------------------------------------------------
    def save(self, h: dict) -> None:
        """Record the finished epoch's row ``h`` and write last.pt (and best.pt, teacher_last.pt, logs)."""
        cfg, s = self.cfg, self.state
        s.history.append(h)
        is_best = s.best is None or h["val_PSNR"] > s.best["val_PSNR"]
        if is_best:
            s.best = {"epoch": h["epoch"], "val_PSNR": h["val_PSNR"]}
        s.epoch, s.step = h["epoch"], 0
        c = self.checkpoint_dict(interrupted=False, sums=None)
        D.barrier()
        if self.main:
            save_checkpoint(c, self.last_path)
            if is_best:
                with atomic_write(self.best_path) as tmp:
                    shutil.copyfile(self.last_path, tmp)
            if self.correction:
                save_checkpoint({**model_checkpoint(self.teacher), "epoch": s.epoch, "global_step": s.global_step,
                                 "source": "teacher corrected during distillation", "train_config": cfg.to_dict()},
                                self.teacher_path)
            self.write_logs()
        D.barrier()
        if cfg.verbose and self.main:
            extra = f" | teacher {h['teacher_val_PSNR']:.2f} dB" if self.correction else ""
            kd = f" | dyn {h['dynamic']:.2f}" if self.distill and "dynamic" in h else ""
            print(f"[{cfg.mode}] epoch {h['epoch']}/{cfg.epochs} | loss {h['train_loss']:.4f} | val PSNR "
                  f"{h['val_PSNR']:.2f} dB SSIM {h['val_SSIM']:.4f} NMSE {h['val_NMSE']:.4f}{extra}{kd} | "
                  f"lr {h['lr']:.2e} | {h['seconds']:.0f} s{' *' if is_best else ''}", flush=True)

    def checkpoint_dict(self, interrupted: bool, sums: Optional[dict]) -> dict:
        """Everything a resume needs (:mod:`kdmri_lib.models.checkpoint` describes the format)."""
        c = model_checkpoint(self.model)
        c.update(self.state.to_checkpoint())
        c.update(interrupted=interrupted, optimizer=_optimizer_state(self.opt), scheduler=self.sched.state_dict(),
                 scaler=self.scaler.state_dict() if self.scaler is not None else None, rng=plain_rng_state(),
                 train_config=self.cfg.to_dict(), epoch_sums=sums, steps_per_epoch=self.steps_per_epoch,
                 world_size=D.world_size())
        if self.distill:
            dd: dict[str, Any] = {"state": self.dstate.state_dict(), "teacher_checkpoint": str(self.cfg.teacher_checkpoint)}
            if self.correction:
                dd["teacher"] = {**model_checkpoint(self.teacher), "optimizer": _optimizer_state(self.t_opt),
                                 "scheduler": self.t_sched.state_dict()}
            if self.adapters is not None:
                dd["adapters"] = _state_cpu(self.adapters.state_dict())
                dd["adapters_config"] = self.adapters.config
            if self.cache is not None and self.correction:
                dd["teacher_cache"] = self.cache.state()
            c["distill"] = dd
        return c

    def write_logs(self) -> None:
        if not self.main:
            return
        write_text(self.steps_path, csv_text(self.step_rows, STEP_COLUMNS))
        write_text(self.out / "history.csv", csv_text(self.state.history, ("epoch", "train_loss")))
        write_json(self.out / "history.json", self.state.history)

    def _interrupt(self, epoch: int, step: int, sums: dict):
        """Write an interrupt checkpoint at this step boundary and raise :class:`TrainingInterrupted`."""
        self.state.epoch, self.state.step = epoch, step
        c = self.checkpoint_dict(interrupted=True, sums=sums)
        D.barrier()
        if self.main:
            save_checkpoint(c, self.last_path)
            self.write_logs()
        D.barrier()
        msg = f"interrupted at epoch {epoch + 1} step {step}; resume with --resume (checkpoint {self.last_path})"
        raise TrainingInterrupted(msg, epoch + 1, step, str(self.last_path))

    def _diverged(self, epoch: int, step: int, row: Mapping[str, Any], what: str = "loss"):
        cfg = self.cfg
        terms = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float) and k in
                          ("loss", "rec", "edge", "kd", "feat", "att", "t_loss", "grad_norm", "t_grad_norm"))
        keep = (f"the last good checkpoint {self.last_path} is kept" if self.last_path.exists()
                else "no checkpoint was written yet")
        raise TrainingDiverged(
            f"training diverged at epoch {epoch + 1} step {step + 1}: the {what} is not finite ({terms}); stopped "
            f"before the update, {keep}. Try a lower learning rate (lr is {cfg.lr:g}; e.g. --lr {cfg.lr / 10:g}), "
            f"gradient clipping (--grad-clip), or --no-amp.")

