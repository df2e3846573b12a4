"""A simulated single-coil acquisition (the demo data's recipe, also used for the real-data
scripts' images): a smooth random phase, the centred FFT, complex Gaussian noise at a given SNR.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["smooth_phase", "simulate_kspace", "noise_sigma", "foreground_mean", "simulate_volume"]


def smooth_phase(shape: tuple[int, int], rng: np.random.Generator, scale: float) -> np.ndarray:
    """A smooth random phase map: a 2-D quadratic polynomial with N(0, scale^2) coefficients."""
    H, W = shape
    y, x = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    c = rng.normal(0.0, scale, size=6)
    return (c[0] + c[1] * x + c[2] * y + 0.5 * (c[3] * x * x + c[4] * x * y + c[5] * y * y)).astype(np.float32)


def simulate_kspace(image: np.ndarray, rng: np.random.Generator, sigma: float, max_phase: float) -> np.ndarray:
    """``fft2c(image * exp(i phi)) + noise`` for a real ``(H, W)`` image; complex64 ``(H, W)``."""
    from kdmri_lib.mri.physics import fft2c

    phase = smooth_phase(image.shape, rng, max_phase)
    cimg = image.astype(np.complex64) * np.exp(1j * phase).astype(np.complex64)
    k = fft2c(torch.from_numpy(cimg)).numpy()
    noise = (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape)) * (sigma / np.sqrt(2.0))
    return (k + noise).astype(np.complex64)


def noise_sigma(foreground_mean: float, snr_db: float) -> float:
    """Noise standard deviation for an SNR of ``20 log10(foreground_mean / sigma)`` dB."""
    return float(foreground_mean) / 10 ** (float(snr_db) / 20)


def foreground_mean(images: np.ndarray, threshold: float = 0.1) -> float:
    """Mean magnitude of the pixels above ``threshold`` (the signal level the SNR refers to)."""
    images = np.asarray(images)
    fg = images[images > threshold]
    return float(fg.mean()) if fg.size else 0.0


def simulate_volume(images, rng: np.random.Generator, sigma: float, max_phase: float) -> tuple[np.ndarray, np.ndarray]:
    """Simulated single-coil acquisition of a stack of real images (the demo data's recipe).

    Args:
        images: sequence of real ``(H, W)`` images (magnitudes, about [0, 1]).
        rng: random stream (phase and noise, drawn image by image).
        sigma: complex noise standard deviation per k-space sample (see :func:`noise_sigma`).
        max_phase: scale of the smooth random phase (radians).

    Returns:
        ``kspace`` complex64 ``(slices, H, W)`` = ``fft2c(image * exp(i phi)) + noise`` and the
        fastMRI-style target float32 ``(slices, H, W)`` = ``|ifft2c(kspace)|``.
    """
    from kdmri_lib.mri.physics import ifft2c

    kspace = np.stack([simulate_kspace(im, rng, sigma, max_phase) for im in images])
    target = ifft2c(torch.from_numpy(kspace)).abs().numpy().astype(np.float32)
    return kspace, target
