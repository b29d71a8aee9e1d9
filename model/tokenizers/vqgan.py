"""The VQGAN used by taming `vqgan_imagenet_f16_1024` (frames) and SpecVQGAN's VGGSound codebook (mels).

One module tree covers both (docs/formats.md, "Published weights"): the same 343 state_dict keys, only the
input/output channel count (3 vs 1) and the resolution that places attention (16 vs 53) differ.
The forward passes follow the reference code operation for operation, so that exact mode (fp32, no
TF32) reproduces its indices; fast mode swaps in autocast convs, channels_last and SDPA attention and
keeps the nearest-codebook search in fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry import AUDIO_GRID, MEL_FRAMES


@dataclass(frozen=True)
class VQGANConfig:
    """The ddconfig + quantizer sizes of a taming-style VQModel."""

    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    resolution: int = 256
    z_channels: int = 256
    embed_dim: int = 256
    n_embed: int = 1024
    extra: dict = field(default_factory=dict, compare=False)


TAMING_F16_1024 = VQGANConfig()
SPECVQGAN_VGGSOUND = VQGANConfig(in_channels=1, out_ch=1, attn_resolutions=(AUDIO_GRID[1],), resolution=MEL_FRAMES)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


def _swish(x: torch.Tensor, fast: bool, inplace: bool = False) -> torch.Tensor:
    # The reference writes x*sigmoid(x); F.silu is the same function in one fused kernel. In place
    # (x is a fresh GroupNorm output) the values are bit-identical and no new activation is allocated.
    if fast:
        return F.silu(x, inplace=inplace)
    return x.mul_(torch.sigmoid(x)) if inplace else x * torch.sigmoid(x)


def _inplace(module: nn.Module) -> bool:
    """In-place activations/residuals only where autograd cannot need the overwritten values."""
    return module.inplace and not torch.is_grad_enabled()


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.fast = False
        self.inplace = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = _inplace(self)
        h = self.conv1(_swish(self.norm1(x), self.fast, inplace))
        h = self.conv2(_swish(self.norm2(h), self.fast, inplace))  # dropout is 0.0 in both configs
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return h.add_(x) if inplace else x + h  # float addition commutes: same bits either way


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with head_dim = C, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)
        self.fast = False
        self.inplace = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        if self.fast:
            qs, ks, vs = (t.reshape(b, 1, c, hh * ww).transpose(2, 3) for t in (q, k, v))
            out = F.scaled_dot_product_attention(qs, ks, vs)  # [b, 1, hw, c]
            out = out.transpose(2, 3).reshape(b, c, hh, ww)
        else:
            # Same op order as the reference: bmm, scale, softmax over keys, bmm with the transpose.
            w = torch.bmm(q.reshape(b, c, hh * ww).permute(0, 2, 1), k.reshape(b, c, hh * ww))
            w = torch.softmax(w * (int(c) ** (-0.5)), dim=2)
            out = torch.bmm(v.reshape(b, c, hh * ww), w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        h = self.proj_out(out)
        return h.add_(x) if _inplace(self) else x + h


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a stride-2 3×3 conv without padding."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest ×2, then a 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: `block`, `attn` (maybe empty) and an optional `downsample`/`upsample`."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class _Mid(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.fast = False
        self.inplace = True
        ch, mult = cfg.ch, tuple(cfg.ch_mult)
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, 1, 1)
        in_mult = (1,) + mult
        curr_res = cfg.resolution
        self.down = nn.ModuleList()
        block_in = ch
        for i_level in range(len(mult)):
            level = _Level()
            block_in, block_out = ch * in_mult[i_level], ch * mult[i_level]
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if curr_res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i_level != len(mult) - 1:
                level.downsample = Downsample(block_in)
                curr_res //= 2
            self.down.append(level)
        self.mid = _Mid(block_in)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for i, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[i](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(_swish(self.norm_out(h), self.fast, _inplace(self)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.fast = False
        self.inplace = True
        ch, mult = cfg.ch, tuple(cfg.ch_mult)
        n_levels = len(mult)
        block_in = ch * mult[-1]
        curr_res = cfg.resolution // 2 ** (n_levels - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, block_in, 3, 1, 1)
        self.mid = _Mid(block_in)
        levels: list[_Level] = []
        for i_level in reversed(range(n_levels)):
            level = _Level()
            block_out = ch * mult[i_level]
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(block_in, block_out))
                block_in = block_out
                if curr_res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(block_in))
            if i_level != 0:
                level.upsample = Upsample(block_in)
                curr_res *= 2
            levels.insert(0, level)  # stored so that up[i] is level i
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(block_in)
        self.conv_out = nn.Conv2d(block_in, cfg.out_ch, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for i, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[i](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(_swish(self.norm_out(h), self.fast, _inplace(self)))  # no tanh, no clamp


class VectorQuantizer(nn.Module):
    """Nearest codebook entry by squared L2 distance, computed as in taming's VectorQuantizer2."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, C, H, W] → LongTensor [B, H*W], row-major over (h, w). Always fp32."""
        b, c, h, w = z.shape
        zf = z.float().permute(0, 2, 3, 1).reshape(-1, c)
        e = self.embedding.weight.float()
        d = (torch.sum(zf**2, dim=1, keepdim=True) + torch.sum(e**2, dim=1)
             - 2 * torch.einsum("bd,dn->bn", zf, e.t()))
        return torch.argmin(d, dim=1).view(b, h * w)

    def lookup(self, indices: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """LongTensor [B, H*W] → z_q [B, C, H, W]."""
        b = indices.shape[0]
        zq = self.embedding(indices.reshape(-1))
        return zq.view(b, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous()


class VQGAN(nn.Module):
    """encoder → quant_conv → quantize (indices); indices → post_quant_conv → decoder."""

    def __init__(self, cfg: VQGANConfig = TAMING_F16_1024):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        self.downsampling = 2 ** (len(cfg.ch_mult) - 1)

    def set_fast(self, fast: bool) -> None:
        """Fast mode: fused SiLU and SDPA attention (numerically equivalent, not bit-identical)."""
        for m in self.modules():
            if hasattr(m, "fast"):
                m.fast = fast

    def set_inplace(self, inplace: bool) -> None:
        """In-place activations and residual adds when grad is off (default on; same values, less memory)."""
        for m in self.modules():
            if hasattr(m, "inplace"):
                m.inplace = inplace

    def grid_for(self, height: int, width: int) -> tuple[int, int]:
        """Token grid of an input size (pad-then-stride: floor((n-2)/2)+1 per downsampling)."""
        for _ in range(len(self.cfg.ch_mult) - 1):
            height, width = (height - 2) // 2 + 1, (width - 2) // 2 + 1
        return height, width

    def encode_indices(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] → LongTensor [B, H'*W']."""
        return self.quantize.indices(self.quant_conv(self.encoder(x)))

    def decode_indices(self, indices: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """LongTensor [B, H'*W'] → reconstruction [B, out_ch, H, W]."""
        zq = self.quantize.lookup(indices, grid)
        return self.decoder(self.post_quant_conv(zq.to(self.post_quant_conv.weight.dtype)))


@contextlib.contextmanager
def exact_numerics() -> Iterator[None]:
    """Disable TF32 (and cuDNN autotuning) for the duration; restores the previous settings."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


def fast_dtype(device: torch.device) -> torch.dtype:
    """fp16 on GPUs (tensor cores on V100 as on A100/H100, and 3 more mantissa bits than bf16, so fewer
    nearest-code flips: on random weights bf16 agreed with fp32 on ~97% of indices); bf16 on CPU, where
    fp16 convolutions have no fast kernels. Overflow is caught by the caller (see VQGANTokenizer)."""
    if device.type == "cuda":
        return torch.float16
    # bf16 convolutions are fast only where oneDNN has native bf16 (AVX512-BF16/AMX); on other CPUs (AVX2)
    # they run a reference path far slower than fp32, so fast mode keeps fp32 there
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
