r"""The ViT teacher: a compact Swin image-restoration transformer (SwinIR-style), written here.

Architecture (Liang et al., "SwinIR", ICCVW 2021; classical-SR layout)::

    x0 = op.initial(y)                         complex (B,1,h,w)   sr: low-res, cs: zero-filled
    f0 = conv3x3(complex_to_channels(x0))      (B,C,h,w)           shallow features
    t  = LayerNorm(f0)                         tokens (B,h,w,C)
    G x residual Swin group:  t <- t + conv3x3( L x SwinLayer(t) )
         SwinLayer: t <- t + WindowAttention(LN(t)) (shifted windows on odd layers)
                    t <- t + MLP(LN(t))
    f  = conv3x3(LN(t)) + f0                   long skip
    sr: conv3x3 -> LeakyReLU -> [conv3x3 + PixelShuffle(2)] x log2(s) (or x3) -> conv3x3 -> 2 ch
    cs: conv3x3 -> 2 ch
    z  = base + head                           base = A^H y (sr: sinc-interpolated low-res image,
                                               cs: zero-filled image)
    dc_output: z <- z - A^H (A z - y)          projection onto the measurements (A A^H = I)
    out = |z|                                  magnitude in float32

For ``sr`` the whole transformer runs at the *low* resolution ``(H/s, W/s)`` and only the tail
up-samples (sub-pixel convolution), as SwinIR does; for ``cs`` it runs at full resolution. The
window attention uses :func:`torch.nn.functional.scaled_dot_product_attention` with the relative
position bias (and the shifted-window mask) as an additive ``attn_mask``. Inputs of any size are
padded (reflection) to a multiple of the window and the output is cropped back.

Features for distillation (``return_features=True``): the token map after each residual Swin
group, ``G`` maps of shape ``(B, embed_dim, h, w)`` at the working resolution (``sr``:
``(H/s, W/s)``; ``cs``: ``(H, W)``), padding removed.

Attention maps for the notebook: :meth:`SwinTeacher.attention_maps` (see :class:`AttentionMaps`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from kdmri_lib.core.errors import ConfigError, check_int
from kdmri_lib.models.common import ReconModel, crop_to, magnitude, pad_to_multiple, resolve_hparams, scale_init_
from kdmri_lib.mri.physics import Operator, channels_to_complex, complex_to_channels

#: teacher presets. ``paper`` is SwinIR's classical-SR configuration (embed 180, 6 groups x 6
#: layers, 6 heads, window 8, MLP ratio 2: 11.9M parameters at x4 with RGB in/out).
TEACHER_PRESETS: dict[str, dict] = {
    "tiny": dict(embed_dim=32, depths=[2, 2], num_heads=2, window_size=8, mlp_ratio=2.0, num_feat=32, dc_output=False, domain="complex"),
    "small": dict(embed_dim=60, depths=[4, 4, 4, 4], num_heads=6, window_size=8, mlp_ratio=2.0, num_feat=64,
                  dc_output=False, domain="complex"),
    "paper": dict(embed_dim=180, depths=[6, 6, 6, 6, 6, 6], num_heads=6, window_size=8, mlp_ratio=2.0, num_feat=64,
                  dc_output=False, domain="complex"),
}


# --------------------------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------------------------

def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * nW, ws*ws, C)``; windows in row-major order, per image."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B * (H // ws) * (W // ws), ws * ws, C)


def window_reverse(w: torch.Tensor, ws: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, ws*ws, C)`` -> ``(B, H, W, C)``."""
    C = w.shape[-1]
    B = w.shape[0] // ((H // ws) * (W // ws))
    x = w.view(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


def relative_position_index(ws: int) -> torch.Tensor:
    """``(ws*ws, ws*ws)`` long: index into the ``(2ws-1)^2`` relative-bias table for each token pair."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # N, N, 2 in [0, 2ws-2]
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def shift_mask(H: int, W: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """Additive mask ``(nW, N, N)`` of the shifted windows: ``-inf`` between tokens that the cyclic
    shift brought together from different image regions, 0 elsewhere (Swin's ``calculate_mask``)."""
    img = torch.zeros(1, H, W, 1, device=device)
    cnt = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img, ws).squeeze(-1)  # nW, N
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, float("-inf"))


# --------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------

class WindowAttention(nn.Module):
    """Multi-head self-attention inside ``ws x ws`` windows with a relative position bias.

    Input / output: ``(B * nW, N, C)`` tokens, ``N = ws * ws``. ``mask``: optional ``(nW, N, N)``
    additive shifted-window mask (windows ordered per image, as :func:`window_partition` does).
    """

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.dim, self.ws, self.heads = dim, window_size, num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_bias_table, std=0.02)
        self.register_buffer("relative_index", relative_position_index(window_size), persistent=False)
        self.store_attention = False
        self.last_attention: Optional[torch.Tensor] = None

    def relative_bias(self) -> torch.Tensor:
        """``(heads, N, N)`` bias added to the attention logits."""
        N = self.ws * self.ws
        return self.relative_bias_table[self.relative_index.reshape(-1)].view(N, N, self.heads).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        Bn, N, C = x.shape
        d = C // self.heads
        qkv = self.qkv(x).reshape(Bn, N, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # Bn, heads, N, d
        bias = self.relative_bias()
        if mask is None:
            attn_mask = bias.unsqueeze(0)  # 1, heads, N, N (broadcast)
        else:
            nW = mask.shape[0]
            attn_mask = bias.unsqueeze(0) + mask.unsqueeze(1)  # nW, heads, N, N
            if Bn != nW:
                attn_mask = attn_mask.repeat(Bn // nW, 1, 1, 1)
        attn_mask = attn_mask.to(q.dtype)
        if self.store_attention:
            logits = (q.float() @ k.float().transpose(-2, -1)) * d ** -0.5 + attn_mask.float()
            self.last_attention = logits.softmax(-1).detach()
        # 4-D inputs: on CPU this is the fused flash kernel (5x faster than the math path)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(Bn, N, C))


class SwinLayer(nn.Module):
    """One Swin transformer layer on channels-last tokens ``(B, H, W, C)`` (H, W multiples of ws)."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift: int, mlp_ratio: float):
        super().__init__()
        self.ws, self.shift = window_size, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def effective_shift(self, H: int, W: int) -> int:
        """The cyclic shift used at this size (0 when the image is a single window, as in SwinIR)."""
        return self.shift if min(H, W) > self.ws else 0

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        B, H, W, C = x.shape
        s = self.effective_shift(H, W)
        h = self.norm1(x)
        if s:
            h = torch.roll(h, shifts=(-s, -s), dims=(1, 2))
        h = self.attn(window_partition(h, self.ws), mask if s else None)
        h = window_reverse(h, self.ws, H, W)
        if s:
            h = torch.roll(h, shifts=(s, s), dims=(1, 2))
        x = x + h
        return x + self.mlp(self.norm2(x))


class SwinGroup(nn.Module):
    """Residual Swin group (SwinIR's RSTB): ``t + conv3x3(layers(t))`` on ``(B, H, W, C)`` tokens."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float):
        super().__init__()
        self.layers = nn.ModuleList(
            SwinLayer(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio)
            for i in range(depth)
        )
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        h = x
        for layer in self.layers:
            h = layer(h, mask)
        h = self.conv(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x + h


class Upsample(nn.Sequential):
    """SwinIR's sub-pixel up-sampler: ``[conv3x3(C -> 4C) + PixelShuffle(2)] x log2(s)`` or one x3 stage."""

    def __init__(self, scale: int, num_feat: int):
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(scale.bit_length() - 1):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, padding=1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, padding=1), nn.PixelShuffle(3)]
        else:
            raise ConfigError(f"the teacher up-samples by 2^n or 3; got scale {scale}")
        super().__init__(*layers)


@dataclass
class AttentionMaps:
    """Attention weights of one Swin layer, for display.

    Attributes:
        weights: float32 ``(B, nWh, nWw, heads, N, N)``, ``N = ws*ws``: for window ``(i, j)``
            (row-major over the *padded, shifted* token grid) and head ``k``, row ``q`` holds the
            softmax weights of query token ``q`` over the window's ``N`` key tokens (rows sum to 1).
        window_size: ``ws``.
        shift: the cyclic shift of this layer (0 or ``ws // 2``).
        token_shape: ``(h, w)`` of the token grid without padding (sr: low resolution).
        padded_shape: ``(Hp, Wp)`` of the padded grid the windows tile.
    """

    weights: torch.Tensor
    window_size: int
    shift: int
    token_shape: tuple[int, int]
    padded_shape: tuple[int, int]

    def query(self, row: int, col: int, batch: int = 0, head: Optional[int] = None) -> torch.Tensor:
        """Where token ``(row, col)`` of image ``batch`` looks: a ``(h, w)`` map on the token grid.

        Zero outside the query's window; the values inside sum to 1 (per head, and for the mean
        over heads when ``head`` is None). Takes the cyclic shift into account, so the map shows
        image positions.
        """
        h, w = self.token_shape
        Hp, Wp = self.padded_shape
        ws, s = self.window_size, self.shift
        row, col = check_int("row", row, 0, h - 1), check_int("col", col, 0, w - 1)
        heads = self.weights.shape[3]
        a = self.weights[batch]  # nWh, nWw, heads, N, N
        r, c = (row - s) % Hp, (col - s) % Wp  # position in the shifted frame
        wi, wj, qi = r // ws, c // ws, (r % ws) * ws + (c % ws)
        if head is None:
            att = a[wi, wj, :, qi].mean(0)
        else:
            att = a[wi, wj, check_int("head", head, 0, heads - 1), qi]
        out = torch.zeros(Hp, Wp, dtype=att.dtype, device=att.device)
        rows = (wi * ws + torch.arange(ws, device=att.device) + s) % Hp
        cols = (wj * ws + torch.arange(ws, device=att.device) + s) % Wp
        out[rows[:, None], cols[None, :]] = att.view(ws, ws)
        return out[:h, :w]


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------

def project_onto_measurements(z: torch.Tensor, y: torch.Tensor, op: Operator) -> torch.Tensor:
    """``z - A^H (A z - y)``: the estimate whose measured samples equal ``y`` and whose unmeasured
    ones are ``z``'s (an orthogonal projection, as ``A A^H = I`` for the toolkit's operators)."""
    return z - op.adjoint(op.forward(z) - y)


class SwinTeacher(ReconModel):
    """Swin image-restoration transformer teacher (see the module docstring).

    Args:
        preset: ``"tiny"``, ``"small"`` or ``"paper"`` (:data:`TEACHER_PRESETS`).
        task, factor: ``"sr"`` + scale (2, 3, 4, 8) or ``"cs"`` + acceleration.
        **overrides: any preset hyper-parameter (``embed_dim``, ``depths``, ``num_heads``,
            ``window_size``, ``mlp_ratio``, ``num_feat``).

    Features: ``G`` token maps ``(B, embed_dim, h, w)`` after each residual group (working
    resolution: ``sr`` low-res ``(H/s, W/s)``, ``cs`` ``(H, W)``).
    """

    kind = "teacher"

    def __init__(self, preset: str = "tiny", task: str = "sr", factor: int = 4, **overrides):
        hp = resolve_hparams("teacher", TEACHER_PRESETS, preset, overrides)
        super().__init__(preset, task, factor, hp, overrides)
        C = check_int("embed_dim", hp["embed_dim"], minimum=1)
        self.window_size = check_int("window_size", hp["window_size"], minimum=2)
        depths = [check_int("depths[i]", d, minimum=1) for d in hp["depths"]]
        if not depths:
            raise ConfigError("depths must list at least one group")
        heads = check_int("num_heads", hp["num_heads"], minimum=1)
        self.embed_dim = C
        if not isinstance(hp["dc_output"], bool):
            raise ConfigError(f"dc_output must be True or False; got {hp['dc_output']!r}")
        self.dc_output = hp["dc_output"]
        if hp["domain"] not in ("complex", "magnitude"):
            raise ConfigError(f"domain must be 'complex' or 'magnitude'; got {hp['domain']!r}")
        if hp["domain"] == "magnitude" and self.dc_output:
            raise ConfigError("dc_output needs domain='complex' (a magnitude estimate has no k-space to project)")
        self.domain = hp["domain"]
        ch = 2 if self.domain == "complex" else 1
        self.conv_first = nn.Conv2d(ch, C, 3, padding=1)
        self.embed_norm = nn.LayerNorm(C)
        self.groups = nn.ModuleList(SwinGroup(C, d, heads, self.window_size, float(hp["mlp_ratio"])) for d in depths)
        self.norm = nn.LayerNorm(C)
        self.conv_after_body = nn.Conv2d(C, C, 3, padding=1)
        if self.task == "sr":
            nf = check_int("num_feat", hp["num_feat"], minimum=1)
            self.tail = nn.Sequential(
                nn.Conv2d(C, nf, 3, padding=1), nn.LeakyReLU(0.01),
                Upsample(self.factor, nf),
                nn.Conv2d(nf, ch, 3, padding=1),
            )
        else:
            self.tail = nn.Sequential(nn.Conv2d(C, ch, 3, padding=1))
        scale_init_(self.tail[-1], 0.1)

    @property
    def feature_channels(self) -> list[int]:
        return [self.embed_dim] * len(self.groups)

    def _shift_mask(self, Hp: int, Wp: int, device: torch.device) -> Optional[torch.Tensor]:
        ws = self.window_size
        if min(Hp, Wp) <= ws:
            return None
        return shift_mask(Hp, Wp, ws, ws // 2, device)

    def reconstruct(self, y: torch.Tensor, op: Operator, return_features: bool):
        body = self.body(y, op, return_features)
        return self.head(body, y, op), body["features"]

    def body(self, y: torch.Tensor, op: Operator, return_features: bool = False) -> dict:
        """Everything up to the reconstruction head: ``{"f": (B, C, h, w) deep features after
        ``conv_after_body`` + the shallow skip, "features": the groups' token maps ``[(B, C, h, w)]``
        (empty without ``return_features``), "std": (B, 1, 1, 1) input scale (magnitude domain) or None, "hw": the image's (h, w) before
        padding to the window size}``.

        :meth:`head` maps it to the image; split so that a teacher whose body is frozen can be
        memoised per measurement (:class:`kdmri_lib.distill.teacher_cache.TeacherCache`) while its head learns."""
        x0 = op.initial(y)                                   # complex (B,1,h,w)
        h, w = x0.shape[-2:]
        std = None
        if self.domain == "magnitude":   # fastMRI's U-Net input: the magnitude, normalised per image
            m0 = magnitude(x0)
            mean = m0.mean(dim=(-2, -1), keepdim=True)
            std = m0.std(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
            inp, _ = pad_to_multiple((m0 - mean) / std, self.window_size)
        else:
            inp, _ = pad_to_multiple(complex_to_channels(x0), self.window_size)
        Hp, Wp = inp.shape[-2:]
        mask = self._shift_mask(Hp, Wp, inp.device)
        f0 = self.conv_first(inp)
        t = self.embed_norm(f0.permute(0, 2, 3, 1))
        features = []
        for g in self.groups:
            t = g(t, mask)
            if return_features:
                features.append(crop_to(t.permute(0, 3, 1, 2), (h, w)))
        f = self.conv_after_body(self.norm(t).permute(0, 3, 1, 2)) + f0
        return {"f": f, "features": features, "std": std, "hw": (h, w)}

    def head_parameters(self) -> list:
        """The parameters of :meth:`head` (the correction's ``t_params="head"`` subset)."""
        return list(self.tail.parameters())

    def head(self, body: dict, y: torch.Tensor, op: Operator, tail: Optional[nn.Module] = None) -> torch.Tensor:
        """The reconstruction head on :meth:`body`'s output: the residual image + data consistency,
        magnitude ``(B, 1, *op.shape)``. ``tail``: a stand-in for ``self.tail`` (a snapshot of it)."""
        h, w = body["hw"]
        s = self.factor if self.task == "sr" else 1
        head = crop_to((self.tail if tail is None else tail)(body["f"]), (h * s, w * s))
        base = op.adjoint(y)                                 # sr: sinc-interpolated, cs: zero-filled
        if self.domain == "magnitude":
            return magnitude(base) + body["std"] * head
        z = base + channels_to_complex(head)
        if self.dc_output:   # the measured k-space samples exactly as measured
            z = project_onto_measurements(z, y, op)
        return magnitude(z)

    @torch.no_grad()
    def attention_maps(self, y: torch.Tensor, op: Operator, group: int = 0, layer: int = 0) -> AttentionMaps:
        """Attention weights of layer ``layer`` of group ``group`` for the measurement ``y``.

        Runs one forward pass (no gradient) and returns an :class:`AttentionMaps`; its
        ``weights`` have shape ``(B, nWh, nWw, heads, N, N)`` and ``query(row, col)`` gives a
        token's attention as a map on the token grid (``sr``: the low-resolution grid).
        """
        group = check_int("group", group, 0, len(self.groups) - 1)
        layer = check_int("layer", layer, 0, len(self.groups[group].layers) - 1)
        blk = self.groups[group].layers[layer]
        y = self.check_inputs(y, op)
        blk.attn.store_attention = True
        try:
            self.reconstruct(y, op, False)
            a = blk.attn.last_attention
        finally:
            blk.attn.store_attention = False
            blk.attn.last_attention = None
        h, w = op.initial_shape
        ws = self.window_size
        Hp, Wp = -(-h // ws) * ws, -(-w // ws) * ws
        B = y.shape[0]
        a = a.view(B, Hp // ws, Wp // ws, *a.shape[1:]).float()
        return AttentionMaps(a, ws, blk.effective_shift(Hp, Wp), (h, w), (Hp, Wp))
