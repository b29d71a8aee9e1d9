"""The audio-visual masked transformer (Visual Echoes, MAGE-style encoder/decoder); docs/method.md.

One bidirectional transformer over 256 image tokens followed by 265 audio tokens. Each modality has its
own embedding table of codebook+1 rows (the last row is [MASK]); the output layer reuses that table
(tied) plus a bias, over codebook entries only. Training masks a ratio per sample and modality drawn
from a truncated Gaussian, drops a fixed number of tokens per modality before the encoder (masked ones
first, so shapes are static), and the decoder sees the encoder output scattered back with every masked
or dropped position set to one learnable mask vector. With `drop_rule="masked"` every masked token is
dropped, in training and in `forward_logits` alike, so the encoder sees only what is visible (MAE).
Loss: label-smoothed cross-entropy on masked positions only, as one mean over all masked tokens of the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .config import AVConfig
from .geometry import AUDIO_GRID, IMAGE_GRID

LN_EPS = 1e-6
ENCODER_GROUPS = 4  # "masked" drop rule: a batch is encoded in this many groups of similar length
INIT_STD = 0.02  # MAGE: embeddings, position tables and the mask vector start N(0, INIT_STD)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, attend: Tensor | None = None) -> Tensor:
        """x [B, n, dim]; attend: optional Bool [B, 1, 1, n], the keys each query may look at."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attend,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class Block(nn.Module):
    """Pre-norm ViT block: 12·d² + 13·d parameters."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor, attend: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), attend)
        return x + self.mlp(self.norm2(x))


class MlmHead(nn.Module):
    """fc (dec_dim → dim) → GELU → LayerNorm → · tied table[:codebook]ᵀ + bias."""

    def __init__(self, dec_dim: int, dim: int, codebook: int, detach_tied: bool) -> None:
        super().__init__()
        self.codebook = codebook
        self.detach_tied = detach_tied
        self.fc = nn.Linear(dec_dim, dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.bias = nn.Parameter(torch.zeros(codebook))

    def forward(self, h: Tensor, table: Tensor) -> Tensor:
        w = table[: self.codebook]
        if self.detach_tied:
            w = w.detach()
        return F.linear(self.norm(F.gelu(self.fc(h))), w, self.bias)


def truncated_normal(n: int, mu: float, std: float, lo: float, hi: float, generator: torch.Generator | None,
                     device: torch.device | str) -> Tensor:
    """n draws from N(mu, std²) truncated to [lo, hi], by inverse CDF (float64, then float32)."""
    dt = torch.float64 if torch.device(device).type != "mps" else torch.float32
    a = 0.5 * (1.0 + math.erf((lo - mu) / (std * math.sqrt(2.0))))  # Φ of the bounds, on the host
    b = 0.5 * (1.0 + math.erf((hi - mu) / (std * math.sqrt(2.0))))
    u = torch.rand(n, generator=generator, device=device, dtype=dt)
    return (mu + std * torch.special.ndtri(a + u * (b - a))).clamp(lo, hi).float()


def sample_masks(ratios: Tensor, n: int, n_drop: int, drop_rule: str,
                 generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Masks for one modality. ratios [B] in (0, 1]. Returns (masked Bool[B, n], keep Long[B, n - drop]).

    One uniform noise per token ranks the tokens; the lowest ceil(n·r) are masked and the lowest
    `n_drop` are dropped, so dropped tokens are always the first of the masked ones.
    """
    bsz = ratios.shape[0]
    noise = torch.rand(bsz, n, generator=generator, device=ratios.device)
    order = noise.argsort(dim=1)
    rank = order.argsort(dim=1)
    n_mask = torch.ceil(ratios.double() * n - 1e-6).long().clamp(1, n)  # 1e-6: 0.2f·265 is 53, not 54
    if drop_rule == "clamp":  # drop masked tokens only (variable length, needs a host sync)
        n_drop = min(n_drop, int(n_mask.min()))
    masked = rank < n_mask[:, None]
    if drop_rule == "extend":  # a dropped visible token becomes a masked one
        masked = masked | (rank < n_drop)
    return masked, order[:, n_drop:]


def grid_sincos(dim: int) -> Tensor:
    """[256 + 265, dim] position codes: for the image grid, then the audio grid, dim/2 sine-cosine features
    of the row and dim/2 of the column (frequencies 1/10000^(k/(dim/4))), scaled to an RMS of INIT_STD (the
    normal init's std)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))

    def one_axis(pos: Tensor) -> Tensor:
        ang = pos.double()[:, None] * omega[None]
        return torch.cat([ang.sin(), ang.cos()], dim=1)

    tables = []
    for rows, cols in (IMAGE_GRID, AUDIO_GRID):
        r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")  # row-major
        tables.append(torch.cat([one_axis(r.reshape(-1)), one_axis(c.reshape(-1))], dim=1))
    return (torch.cat(tables) * INIT_STD * math.sqrt(2)).float()  # sin, cos: RMS 1/√2


class AVTransformer(nn.Module):
    """Masked generative transformer over [image tokens (256) | audio tokens (265)]."""

    def __init__(self, cfg: AVConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.grad_checkpoint = cfg.grad_checkpoint
        d, dd = cfg.dim, cfg.dec_dim
        n = cfg.image_tokens + cfg.audio_tokens
        self.image_mask_id = cfg.image_codebook
        self.audio_mask_id = cfg.audio_codebook
        self.image_embed = nn.Embedding(cfg.image_codebook + 1, d)
        self.audio_embed = nn.Embedding(cfg.audio_codebook + 1, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, n, d))
        self.modality_embed = nn.Parameter(torch.zeros(2, d))
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=LN_EPS)
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(dd))
        self.dec_pos_embed = nn.Parameter(torch.zeros(1, n, dd))
        self.dec_modality_embed = nn.Parameter(torch.zeros(2, dd))
        self.dec_blocks = nn.ModuleList(Block(dd, cfg.dec_heads, cfg.mlp_ratio, cfg.dropout)
                                        for _ in range(cfg.dec_depth))
        self.dec_norm = nn.LayerNorm(dd, eps=LN_EPS)
        self.image_head = MlmHead(dd, d, cfg.image_codebook, cfg.detach_tied)
        self.audio_head = MlmHead(dd, d, cfg.audio_codebook, cfg.detach_tied)
        modality = torch.cat([torch.zeros(cfg.image_tokens), torch.ones(cfg.audio_tokens)]).long()
        self.register_buffer("modality_ids", modality, persistent=False)
        self.init_weights()

    def init_weights(self) -> None:
        """MAGE init: Linear xavier-uniform, bias 0; embeddings, positions, mask vector N(0, 0.02); LN (1, 0)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=INIT_STD)
        for p in (self.pos_embed, self.modality_embed, self.mask_token, self.dec_pos_embed,
                  self.dec_modality_embed):
            nn.init.normal_(p, std=INIT_STD)
        nn.init.zeros_(self.image_head.bias)
        nn.init.zeros_(self.audio_head.bias)
        if self.cfg.pos_init == "sincos":  # after the draws above: every other parameter keeps its values
            with torch.no_grad():
                self.pos_embed.copy_(grid_sincos(self.cfg.dim)[None])
                self.dec_pos_embed.copy_(grid_sincos(self.cfg.dec_dim)[None])

    # -- pieces shared by training and inference -------------------------------------------------------
    def _run(self, blocks: nn.ModuleList, x: Tensor, attend: Tensor | None = None) -> Tensor:
        for blk in blocks:
            if self.grad_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, attend, use_reentrant=False)
            else:
                x = blk(x, attend)
        return x

    def _encode_visible(self, x: Tensor, visible: Tensor) -> Tensor:
        """Encode only the visible positions of x [B, n, dim] (Bool visible [B, n]); return the decoder
        input [B, n, dec_dim] with the mask vector everywhere else ("masked" drop rule).

        Samples are sorted by how many tokens they show and encoded in ENCODER_GROUPS groups, each padded
        to its longest member with padded keys masked out, so a batch costs about what its visible tokens
        cost rather than its longest sample (docs/method.md, "The demo").
        """
        bsz, n, dim = x.shape
        counts = visible.sum(dim=1)
        # visible positions first, in sequence order (stable sort of "is masked")
        order = (~visible).to(torch.uint8).argsort(dim=1, stable=True)
        mask_vec = self.mask_token.to(x.dtype)
        full = mask_vec.expand(bsz, n, -1).clone()
        groups = counts.argsort(stable=True).chunk(min(ENCODER_GROUPS, bsz))
        lengths = torch.stack([counts[rows].max() for rows in groups]).clamp(min=1).tolist()  # one host sync
        for rows, length in zip(groups, lengths, strict=True):
            idx = order[rows, :length]
            slot = torch.arange(length, device=x.device)[None, :]
            valid = slot < counts[rows, None]
            # a sample showing nothing attends to one (ignored) slot, so its softmax stays finite
            h = self._encoder(torch.gather(x[rows], 1, idx[..., None].expand(-1, -1, dim)),
                              (valid | (slot == 0))[:, None, None, :])
            full[rows] = torch.scatter(full[rows], 1, idx[..., None].expand(-1, -1, h.shape[-1]), h)
        # padded slots wrote their (ignored) outputs onto masked positions: those get the mask vector back
        return torch.where(visible[..., None], full, mask_vec)

    def _encoder(self, x: Tensor, attend: Tensor | None = None) -> Tensor:
        """Encoder blocks, final norm and the map to the decoder width: [B, n, dim] → [B, n, dec_dim]."""
        return self.decoder_embed(self.norm(self._run(self.blocks, x, attend)))

    def _embed(self, image_in: Tensor, audio_in: Tensor) -> Tensor:
        x = torch.cat([self.image_embed(image_in), self.audio_embed(audio_in)], dim=1)
        # index_select, not table[ids]: the latter's backward adds the 521 rows' gradients with parallel atomic
        # adds once a [521, dim] tensor passes the CPU grain (dim >= 63), in a different order each run;
        # index_select's backward adds them in position order, the same bits at any thread count
        return x + self.pos_embed + torch.index_select(self.modality_embed, 0, self.modality_ids)

    def _decode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder input [B, n, dec_dim] (mask vector already in place) → (image logits, audio logits)."""
        x = x + self.dec_pos_embed + torch.index_select(self.dec_modality_embed, 0, self.modality_ids)
        x = self.dec_norm(self._run(self.dec_blocks, x))
        ni = self.cfg.image_tokens
        return (self.image_head(x[:, :ni], self.image_embed.weight),
                self.audio_head(x[:, ni:], self.audio_embed.weight))

    def sample_ratios(self, batch: int, generator: torch.Generator | None,
                      device: torch.device) -> tuple[Tensor, Tensor]:
        """Mask ratios [B] for image and audio from the truncated Gaussian (per sample or per batch)."""
        c = self.cfg
        k = batch if c.ratio_per == "sample" else 1
        r = truncated_normal(2 * k, c.mask_mu, c.mask_std, c.mask_min, c.mask_max, generator, device)
        ri, ra = r[:k], r[k:]
        if c.full_mask_prob > 0:  # drawn only when on, so the default keeps its random stream
            u = torch.rand(k, generator=generator, device=device)
            ri = torch.where(u < c.full_mask_prob / 2, 1.0, ri)
            ra = torch.where((u >= c.full_mask_prob / 2) & (u < c.full_mask_prob), 1.0, ra)
        return ri.expand(batch), ra.expand(batch)

    # -- training -------------------------------------------------------------------------------------
    def forward(self, image_tokens: Tensor, audio_tokens: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Mask, drop, encode, decode; return (loss, detached stats). Tokens: Long[B, 256], Long[B, 265]."""
        c = self.cfg
        image_tokens, audio_tokens = image_tokens.long(), audio_tokens.long()
        bsz, ni = image_tokens.shape
        na = audio_tokens.shape[1]
        ri, ra = self.sample_ratios(bsz, generator, image_tokens.device)
        drop = 0.0 if c.drop_rule == "masked" else c.drop_ratio  # "masked" drops by the mask, not a count
        mi, keep_i = sample_masks(ri, ni, int(ni * drop), c.drop_rule, generator)
        ma, keep_a = sample_masks(ra, na, int(na * drop), c.drop_rule, generator)
        masked = torch.cat([mi, ma], dim=1)
        x = self._embed(torch.where(mi, self.image_mask_id, image_tokens),
                        torch.where(ma, self.audio_mask_id, audio_tokens))
        if c.drop_rule == "masked":
            full = self._encode_visible(x, ~masked)
        else:
            keep = torch.cat([keep_i, keep_a + ni], dim=1)
            x = self._encoder(torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1])))
            mask_vec = self.mask_token.to(x.dtype)
            full = torch.scatter(mask_vec.expand(bsz, ni + na, -1), 1,
                                 keep[..., None].expand(-1, -1, x.shape[-1]), x)
            full = torch.where(masked[..., None], mask_vec, full)
        logits_i, logits_a = self._decode(full)

        eps = c.label_smoothing
        total = image_tokens.new_zeros((), dtype=torch.float32)
        stats: dict[str, Tensor] = {}
        for name, logits, target, m in (("image", logits_i, image_tokens, mi), ("audio", logits_a, audio_tokens, ma)):
            logp = logits.float().log_softmax(-1)
            nll = -logp.gather(-1, target[..., None]).squeeze(-1)
            ce = (1 - eps) * nll - eps * logp.mean(-1)  # = F.cross_entropy(label_smoothing=eps)
            mf = m.float()
            total = total + (ce * mf).sum()
            with torch.no_grad():
                cnt = mf.sum()
                stats[f"nll_{name}"] = (nll * mf).sum() / cnt
                stats[f"acc_{name}"] = ((logits.argmax(-1) == target).float() * mf).sum() / cnt
                stats[f"mask_{name}"] = mf.mean()
        count = (mi.sum() + ma.sum()).float()
        return total / count, stats

    # -- inference ------------------------------------------------------------------------------------
    def forward_logits(self, image_tokens: Tensor, audio_tokens: Tensor, image_known: Tensor,
                       audio_known: Tensor) -> tuple[Tensor, Tensor]:
        """Logits with nothing dropped: ([B, 256, image_codebook], [B, 265, audio_codebook]) float32.

        Positions with known=False become the modality's [MASK] id (their values are ignored) and the
        mask vector at the decoder, as in training. Call under torch.no_grad()/inference_mode().
        """
        image_known = image_known.bool().expand(image_tokens.shape)
        audio_known = audio_known.bool().expand(audio_tokens.shape)
        x = self._embed(torch.where(image_known, image_tokens.long(), self.image_mask_id),
                        torch.where(audio_known, audio_tokens.long(), self.audio_mask_id))
        known = torch.cat([image_known, audio_known], dim=1)
        if self.cfg.drop_rule == "masked":
            x = self._encode_visible(x, known)
        else:
            x = torch.where(known[..., None], self._encoder(x), self.mask_token.to(x.dtype))
        logits_i, logits_a = self._decode(x)
        return logits_i.float(), logits_a.float()


def param_groups(model: AVTransformer) -> list[tuple[str, int]]:
    """(group, parameter count) rows for a parameter table; the sum is model's total."""
    rows: dict[str, int] = {}
    for name, p in model.named_parameters():
        top = name.split(".")[0]
        if top in ("blocks", "dec_blocks"):
            top = f"{top} ({len(getattr(model, top))}×)"
        rows[top] = rows.get(top, 0) + p.numel()
    return list(rows.items())


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def n_encoder_tokens(cfg: AVConfig) -> int:
    """Encoder length in training ("extend" rule): tokens kept after the fixed drop (for "masked", which
    keeps only the visible tokens of each sample, this fixed length is an upper bound)."""
    return (cfg.image_tokens - int(cfg.image_tokens * cfg.drop_ratio)
            + cfg.audio_tokens - int(cfg.audio_tokens * cfg.drop_ratio))


def flops_per_sample(cfg: AVConfig, training: bool = True) -> float:
    """Matmul FLOPs per sample (docs/method.md, "Size and cost"): forward, ×3 for a training step.

    Per block on n tokens 24·d²·n + 4·n²·d; plus decoder_embed 2·d·dd·n_enc, MLM fc 2·dd·d·n_dec and the
    tied logits 2·d·(256·image_codebook + 265·audio_codebook). Inference uses the full length in the encoder.
    """
    d, dd = cfg.dim, cfg.dec_dim
    n_dec = cfg.image_tokens + cfg.audio_tokens
    n_enc = n_encoder_tokens(cfg) if training else n_dec
    fwd = cfg.depth * (24 * d * d * n_enc + 4 * n_enc * n_enc * d)
    fwd += cfg.dec_depth * (24 * dd * dd * n_dec + 4 * n_dec * n_dec * dd)
    fwd += 2 * d * dd * n_enc + 2 * dd * d * n_dec
    fwd += 2 * d * (cfg.image_tokens * cfg.image_codebook + cfg.audio_tokens * cfg.audio_codebook)
    return float(3 * fwd if training else fwd)


__all__ = ["AVConfig", "AVTransformer", "flops_per_sample", "num_params", "param_groups", "truncated_normal",
           "sample_masks"]
