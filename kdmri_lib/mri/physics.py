r"""MRI physics: centred orthonormal FFTs and the two acquisition operators of the toolkit.

Conventions (one contract for both tasks)
-----------------------------------------
* Images are single-coil, shape ``(B, 1, H, W)``, real (magnitude) or complex. Real inputs are
  treated as complex images with zero imaginary part. Outputs of ``forward``/``adjoint`` are
  complex (``complex64`` for float32 inputs).
* k-space uses the *centred, orthonormal* 2-D FFT of fastMRI (``fastmri.fft2c`` /
  ``fastmri.ifft2c``): the DC sample sits at index ``(H // 2, W // 2)`` and
  :math:`\|F x\| = \|x\|`.
* ``sr`` -- low-resolution acquisition (the paper's setting): only the central
  ``H/s x W/s`` block of k-space is measured, ``A = crop_centre o F`` and
  ``A^H = F^H o zero_pad``. The measurement ``y`` has shape ``(B, 1, H/s, W/s)``.
* ``cs`` -- Cartesian under-sampling (fastMRI's setting): ``A = M o F`` with a column mask
  ``M``; ``A^H = F^H o M``. ``y`` has shape ``(B, 1, H, W)`` with zeros in unmeasured columns.
* ``cs`` on raw, larger k-space (fastMRI knee: 640 x 368 k-space, 320 x 320 image, readout
  oversampling): :class:`CroppedCartesianMask`, ``A = M o F o P`` with ``P`` the zero-padding of
  the ``(H, W)`` image to the k-space grid, ``A^H = C o F^H o M`` with ``C`` the centre crop
  (``C = P^H``). ``y`` has the k-space shape; ``initial(y)`` is fastMRI's zero-filled,
  centre-cropped image. Built by ``build_operator("cs", ..., kspace_shape=(640, 368))``.

Every operator offers ``forward(x)`` (= ``A x``), ``adjoint(y)`` (= ``A^H y``),
``initial(y)`` (the image a network starts from) and ``simulate(image)`` (a measurement of a
ground-truth image, optionally with complex Gaussian noise). The adjoint identity
:math:`\langle A x, y\rangle = \langle x, A^H y\rangle` holds to float precision.

The public entry point is :func:`build_operator`.
"""

from __future__ import annotations

from typing import Optional, Sequence

import fastmri
import torch

from kdmri_lib.core.errors import ConfigError, check_choice, check_float, check_int
from kdmri_lib.mri import masks as _masks

TASKS = ("sr", "cs")


# --------------------------------------------------------------------------------------------
# FFTs on complex tensors (fastMRI's implementation underneath)
# --------------------------------------------------------------------------------------------

def to_complex(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` as a complex tensor (real inputs get a zero imaginary part).

    Integer, bool and half-precision (``float16`` / ``bfloat16``) inputs become ``complex64``;
    ``float64`` inputs become ``complex128``.
    """
    if x.is_complex():
        return x.to(torch.complex64) if x.dtype == torch.complex32 else x
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()   # integer / bool images, and half precision (FFTs need at least float32 on CPU)
    return torch.complex(x, torch.zeros_like(x))


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT over the last two axes.

    Args:
        x: ``(..., H, W)`` real or complex tensor.

    Returns:
        complex tensor ``(..., H, W)``; equals ``fftshift(fft2(ifftshift(x), norm="ortho"))``.
    """
    x = to_complex(x)
    return torch.view_as_complex(fastmri.fft2c(torch.view_as_real(x.contiguous())).contiguous())


def ifft2c(k: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2-D FFT over the last two axes (inverse of :func:`fft2c`)."""
    k = to_complex(k)
    return torch.view_as_complex(fastmri.ifft2c(torch.view_as_real(k.contiguous())).contiguous())


def complex_to_channels(x: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` complex -> ``(B, 2, H, W)`` real (real, imaginary)."""
    x = to_complex(x)
    return torch.cat([x.real, x.imag], dim=1)


def channels_to_complex(x: torch.Tensor) -> torch.Tensor:
    """``(B, 2, H, W)`` real (real, imaginary) -> ``(B, 1, H, W)`` complex."""
    if x.shape[1] != 2:
        raise ConfigError(f"expected 2 channels (real, imaginary), got shape {tuple(x.shape)}")
    return torch.complex(x[:, :1].float(), x[:, 1:].float())


def centre_crop(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Crop the last two axes of ``x`` to ``shape`` around the centred-FFT origin ``(H//2, W//2)``."""
    h, w = shape
    H, W = x.shape[-2:]
    if h > H or w > W:
        raise ConfigError(f"cannot crop {(H, W)} to the larger {(h, w)}")
    top, left = H // 2 - h // 2, W // 2 - w // 2
    return x[..., top: top + h, left: left + w]


def centre_pad(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Zero-pad the last two axes of ``x`` to ``shape`` (adjoint of :func:`centre_crop`)."""
    H, W = shape
    h, w = x.shape[-2:]
    if h > H or w > W:
        raise ConfigError(f"cannot pad {(h, w)} to the smaller {(H, W)}")
    top, left = H // 2 - h // 2, W // 2 - w // 2
    out = x.new_zeros(x.shape[:-2] + (H, W))
    out[..., top: top + h, left: left + w] = x
    return out


# --------------------------------------------------------------------------------------------
# Operators
# --------------------------------------------------------------------------------------------

class Operator:
    """Base class of the acquisition operators (not an ``nn.Module``: it has no parameters).

    Attributes:
        task: "sr" or "cs".
        factor: scale (sr) or acceleration (cs).
        shape: ``(H, W)`` of the full-resolution image.
        meas_shape: ``(h, w)`` of the measurement ``y``.
        initial_shape: ``(h, w)`` of the image returned by :meth:`initial`.
    """

    task: str
    factor: int
    shape: tuple[int, int]
    meas_shape: tuple[int, int]
    initial_shape: tuple[int, int]

    # -- to implement -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def initial(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def to(self, device: torch.device | str) -> "Operator":
        return self

    # -- shared ---------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """``A^H A x``."""
        return self.adjoint(self.forward(x))

    def data_grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gradient of ``0.5 * ||A x - y||^2`` w.r.t. ``x``: ``A^H (A x - y)`` (complex)."""
        return self.adjoint(self.forward(x) - y)

    def simulate(self, image: torch.Tensor, noise_std: float = 0.0,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Measure a ground-truth image: ``y = A x + n``.

        Args:
            image: ``(B, 1, H, W)`` real or complex ground truth.
            noise_std: standard deviation of the complex Gaussian noise per k-space sample
                (real and imaginary parts each get ``noise_std / sqrt(2)``); with the
                orthonormal FFT this is also the noise level in the image domain.
            generator: optional torch generator for reproducible noise.
        """
        self._check_image(image)
        noise_std = check_float("noise_std", noise_std, minimum=0.0)
        if not bool(torch.isfinite(image).all()):
            raise ConfigError("image to simulate contains NaN or Inf values; a ground-truth image must be finite")
        y = self.forward(image)
        if noise_std > 0:
            n = torch.randn(y.shape + (2,), generator=generator, dtype=y.real.dtype,
                            device="cpu" if generator is not None else y.device).to(y.device)
            y = y + (noise_std / 2 ** 0.5) * torch.view_as_complex(n)
            y = self._restrict(y)
        return y

    def _restrict(self, y: torch.Tensor) -> torch.Tensor:
        """Project a measurement-shaped tensor onto what is measured (identity by default)."""
        return y

    def _check_image(self, x: torch.Tensor, what: str = "image") -> None:
        if not isinstance(x, torch.Tensor):
            raise ConfigError(f"{what} must be a torch.Tensor of shape (B, 1, {self.shape[0]}, {self.shape[1]}); got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != tuple(self.shape) or x.shape[0] == 0:
            raise ConfigError(
                f"{what} must have shape (B, 1, {self.shape[0]}, {self.shape[1]}) with B >= 1 for this {self.task} "
                f"operator; got {tuple(x.shape)}"
            )

    def _check_meas(self, y: torch.Tensor) -> None:
        if not isinstance(y, torch.Tensor):
            raise ConfigError(f"measurement must be a torch.Tensor; got {type(y).__name__}")
        if y.dim() != 4 or y.shape[1] != 1 or tuple(y.shape[-2:]) != tuple(self.meas_shape) or y.shape[0] == 0:
            raise ConfigError(
                f"measurement must have shape (B, 1, {self.meas_shape[0]}, {self.meas_shape[1]}) with B >= 1 for this "
                f"{self.task} x{self.factor} operator; got {tuple(y.shape)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, factor={self.factor}, shape={self.shape})"


class LowResolution(Operator):
    """Task ``sr``: measure the central ``H/s x W/s`` block of k-space.

    ``forward``: ``(B,1,H,W) -> (B,1,H/s,W/s)`` complex; ``adjoint``: the reverse, by zero-padding
    then inverse FFT. ``initial(y)`` is the low-resolution image ``ifft2c(y) / s`` of shape
    ``(B,1,H/s,W/s)``; the ``1/s`` keeps its intensities on the scale of the full-resolution image
    (the orthonormal FFTs of the two sizes differ by that factor), so for an image band-limited to
    the measured block it equals ``x[..., ::s, ::s]`` exactly.
    """

    task = "sr"

    def __init__(self, scale: int, shape: Sequence[int]):
        self.factor = check_int("scale", scale, minimum=1)
        H, W = _check_shape(shape)
        if H % self.factor or W % self.factor:
            raise ConfigError(
                f"scale {self.factor} does not divide the image size {H}x{W}: "
                f"the sr task needs H and W divisible by the scale"
            )
        self.shape = (H, W)
        self.meas_shape = (H // self.factor, W // self.factor)
        self.initial_shape = self.meas_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        return centre_crop(fft2c(x), self.meas_shape)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_meas(y)
        return ifft2c(centre_pad(to_complex(y), self.shape))

    def initial(self, y: torch.Tensor) -> torch.Tensor:
        self._check_meas(y)
        return ifft2c(y) / self.factor

    def upsample(self, x_lr: torch.Tensor) -> torch.Tensor:
        """Band-limited (sinc) interpolation of a low-resolution image to ``shape``: ``s * A^H F x_lr``."""
        return self.adjoint(fft2c(x_lr)) * self.factor


class CartesianMask(Operator):
    """Task ``cs``: measure the k-space columns selected by a fastMRI mask.

    The mask is stored as a float tensor ``(M, 1, 1, W)`` where ``M`` is 1 (one mask for the
    whole batch) or the batch size (one mask per sample, as a training batch has).
    ``forward``/``adjoint`` keep the full size ``(B, 1, H, W)``; ``initial(y) = A^H y`` is the
    zero-filled image.
    """

    task = "cs"

    def __init__(
        self,
        acceleration: int,
        shape: Sequence[int],
        center_fraction: Optional[float] = None,
        mask_type: str = "random",
        seed: Optional[int | tuple] = 0,
        mask: Optional[torch.Tensor] = None,
    ):
        self.factor = check_int("acceleration", acceleration, minimum=1)
        H, W = _check_shape(shape)
        self.shape = (H, W)
        self.meas_shape = (H, W)
        self.initial_shape = (H, W)
        self.mask_type = check_choice("mask_type", mask_type, _masks.MASK_TYPES)
        self.center_fraction = (_masks.default_center_fraction(self.factor)
                                if center_fraction is None else center_fraction)
        if mask is None:
            m = _masks.make_mask(W, self.factor, self.center_fraction, mask_type, seed)
            mask = m.reshape(1, 1, 1, W)
        else:
            if not isinstance(mask, torch.Tensor):
                try:
                    mask = torch.as_tensor(mask)
                except (TypeError, ValueError, RuntimeError):
                    raise ConfigError(f"mask must be a tensor of 0/1 values with {W} columns; got {type(mask).__name__}") from None
            if mask.dim() == 0 or mask.shape[-1] != W or mask.numel() == 0 or mask.is_complex():
                raise ConfigError(f"mask must be a real tensor (..., {W}) of 0/1 values (one column per image column); "
                                  f"got {mask.dtype} {tuple(mask.shape)}")
            mask = mask.reshape(-1, 1, 1, W).to(torch.float32)
            if mask.device.type == "cpu":   # on a GPU the mask comes from a data batch: no sync per step
                if not bool(((mask == 0) | (mask == 1)).all()):
                    raise ConfigError("mask values must be 0 or 1 (NaN / Inf / other values found)")
                if not bool(mask.any(dim=-1).all()):
                    raise ConfigError("mask measures no k-space column (all zeros); every mask needs at least one column")
        self.mask = mask

    def to(self, device: torch.device | str) -> "CartesianMask":
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.mask = self.mask.to(device)
        return new

    def _m(self, like: torch.Tensor) -> torch.Tensor:
        m = self.mask
        if m.device != like.device:
            m = m.to(like.device)
        if m.shape[0] not in (1, like.shape[0]):
            raise ConfigError(f"operator holds {m.shape[0]} masks but the batch has {like.shape[0]} images")
        return m.to(like.real.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        k = fft2c(x)
        return k * self._m(k)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_meas(y)
        y = to_complex(y)
        return ifft2c(y * self._m(y))

    def initial(self, y: torch.Tensor) -> torch.Tensor:
        return self.adjoint(y)

    def _restrict(self, y: torch.Tensor) -> torch.Tensor:
        return y * self._m(y)

    @property
    def acceleration(self) -> float:
        """The realised acceleration (columns / measured columns, mean over masks)."""
        return _masks.realised_acceleration(self.mask)

    def __repr__(self) -> str:
        return (f"CartesianMask(acceleration={self.factor}, shape={self.shape}, mask_type={self.mask_type!r}, "
                f"center_fraction={self.center_fraction}, masks={self.mask.shape[0]})")


class CroppedCartesianMask(CartesianMask):
    """Task ``cs`` on a k-space grid larger than the image (fastMRI knee: readout oversampling).

    Real fastMRI single-coil knee k-space is ``640 x 368`` (2x readout oversampling, plus
    zero-padded phase encodes) while the image that is reconstructed and scored is the central
    ``320 x 320`` crop. This operator keeps the measured raw k-space as it is:

    * ``forward``: ``(B,1,H,W)`` image -> zero-pad to ``kspace_shape`` -> ``fft2c`` -> mask;
      ``A = M F P``, output ``(B,1,Hk,Wk)``.
    * ``adjoint``: mask -> ``ifft2c`` -> centre crop to ``(H, W)``; ``A^H = C F^H M`` with
      ``C = P^H``, so ``<A x, y> = <x, A^H y>`` holds exactly.
    * ``initial(y) = A^H y``: fastMRI's zero-filled image (mask the raw k-space, inverse FFT,
      centre crop), the input of its U-Net baseline.

    The mask is over the ``Wk`` k-space columns, so the validation mask of a file with seed
    ``tuple(map(ord, fname))`` is the one fastMRI's own ``MaskFunc`` draws for that file.
    Signal outside the cropped field of view (e.g. tissue in the columns beyond the central 320)
    is measured but cannot be represented by an ``(H, W)`` image: the least-squares fit of
    ``A x = y`` ignores it, exactly as the crop of fastMRI's zero-filled image does.
    """

    def __init__(
        self,
        acceleration: int,
        shape: Sequence[int],
        kspace_shape: Sequence[int],
        center_fraction: Optional[float] = None,
        mask_type: str = "random",
        seed: Optional[int | tuple] = 0,
        mask: Optional[torch.Tensor] = None,
    ):
        H, W = _check_shape(shape)
        Hk, Wk = _check_shape(kspace_shape)
        if H > Hk or W > Wk:
            raise ConfigError(f"kspace_shape {(Hk, Wk)} must be at least the image shape {(H, W)} in both axes")
        super().__init__(acceleration, (Hk, Wk), center_fraction=center_fraction, mask_type=mask_type,
                         seed=seed, mask=mask)
        self.kspace_shape = (Hk, Wk)
        self.shape = (H, W)
        self.meas_shape = (Hk, Wk)
        self.initial_shape = (H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_image(x)
        k = fft2c(centre_pad(to_complex(x), self.kspace_shape))
        return k * self._m(k)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        self._check_meas(y)
        y = to_complex(y)
        return centre_crop(ifft2c(y * self._m(y)), self.shape)

    def measure(self, kspace: torch.Tensor) -> torch.Tensor:
        """The measurement of a fully-sampled raw k-space ``(B,1,Hk,Wk)``: ``M k`` (complex)."""
        self._check_meas(kspace)
        kspace = to_complex(kspace)
        return kspace * self._m(kspace)

    def __repr__(self) -> str:
        return (f"CroppedCartesianMask(acceleration={self.factor}, shape={self.shape}, kspace_shape={self.kspace_shape}, "
                f"mask_type={self.mask_type!r}, center_fraction={self.center_fraction}, masks={self.mask.shape[0]})")


def _check_shape(shape) -> tuple[int, int]:
    try:
        H, W = shape
    except (TypeError, ValueError):
        raise ConfigError(f"shape must be a pair (H, W); got {shape!r}") from None
    return check_int("shape[0] (H)", H, minimum=2), check_int("shape[1] (W)", W, minimum=2)


def build_operator(
    task: str,
    factor: int,
    shape: Sequence[int],
    seed: Optional[int | tuple] = 0,
    *,
    center_fraction: Optional[float] = None,
    mask_type: str = "random",
    mask: Optional[torch.Tensor] = None,
    kspace_shape: Optional[Sequence[int]] = None,
) -> Operator:
    """Build the acquisition operator of a task (the toolkit's fixed public API).

    Args:
        task: ``"sr"`` (low resolution; ``factor`` = scale) or ``"cs"`` (Cartesian
            under-sampling; ``factor`` = acceleration).
        factor: scale (2, 4, ...) or acceleration (4, 8, ...).
        shape: ``(H, W)`` of the full-resolution image.
        seed: mask seed for ``cs`` (``None`` draws a random mask); unused for ``sr``.
        center_fraction: ``cs`` only; fastMRI's 0.08 for 4x and 0.04 for 8x when ``None``.
        mask_type: ``cs`` only; one of :data:`kdmri_lib.mri.masks.MASK_TYPES`.
        mask: ``cs`` only; an explicit mask ``(W,)`` or ``(B, 1, 1, W)`` (e.g. from a data batch).
        kspace_shape: ``cs`` only; a k-space grid ``(Hk, Wk)`` larger than ``shape`` (raw fastMRI
            knee k-space, 640 x 368): returns a :class:`CroppedCartesianMask` whose mask has ``Wk``
            columns. ``None`` or equal to ``shape``: the plain :class:`CartesianMask`.

    Examples:
        >>> op = build_operator("sr", 4, shape=(256, 256))
        >>> y = op.simulate(image)          # (B, 1, 64, 64) complex
        >>> x0 = op.initial(y)              # low-resolution image
    """
    check_choice("task", task, TASKS)
    if task == "sr":
        return LowResolution(factor, shape)
    if kspace_shape is not None and tuple(int(v) for v in kspace_shape) != tuple(int(v) for v in shape):
        return CroppedCartesianMask(factor, shape, kspace_shape, center_fraction=center_fraction,
                                    mask_type=mask_type, seed=seed, mask=mask)
    return CartesianMask(factor, shape, center_fraction=center_fraction, mask_type=mask_type, seed=seed, mask=mask)


def band_split(image: torch.Tensor, keep: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split an image into the part carried by the central ``keep`` fraction of k-space (per axis)
    and the rest: ``image = low + high``. Shows what the centre (contrast) and the edges
    (edges, detail) of k-space carry.

    Args:
        image: ``(..., H, W)`` real or complex.
        keep: fraction in (0, 1] of rows and columns kept around the k-space centre.
    """
    keep = check_float("keep", keep, minimum=0.0, maximum=1.0, strict_min=True)
    k = fft2c(image)
    H, W = k.shape[-2:]
    h, w = max(1, round(H * keep)), max(1, round(W * keep))
    low = ifft2c(centre_pad(centre_crop(k, (h, w)), (H, W)))
    return low, to_complex(image) - low
