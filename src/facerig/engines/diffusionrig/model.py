"""DiffusionRig's learned parts: the ADM ("guided diffusion") pixel UNet and the global-code encoder.

:class:`DiffusionRigUNet` predicts the noise ``eps`` of a noisy image ``x_t`` (3 channels, [-1, 1])
given the physical buffers ``cond`` (9 channels, see :mod:`.buffers`), the timestep and a global
code (64-d, from :class:`GlobalEncoder`). Architecture (Dhariwal & Nichol's ADM as DiffusionRig
configures it, paper config = the defaults):

* sinusoidal timestep embedding (``model_channels`` wide, cos half first) -> Linear -> SiLU ->
  Linear (``4 * model_channels``);
* ``input_blocks``: a 3x3 conv on ``cat([x_t, cond])``, then per level ``num_res_blocks`` residual
  blocks (+ self-attention where the downsampling factor is in ``attention_resolutions``), and
  between levels a downsampling residual block (``resblock_updown``) or a strided conv;
* ``middle_block``: residual block, attention, residual block;
* ``output_blocks``: per level (deepest first) ``num_res_blocks + 1`` residual blocks on
  ``cat([h, skip])`` (+ attention), the last one of each level but the top followed by an
  upsampling residual block (or nearest x2 + conv);
* ``out``: GroupNorm -> SiLU -> 3x3 conv (zero-initialised) -> ``out_channels``.

Residual block (:class:`ResidualBlock`): ``h = conv(SiLU(GN(x)))`` (with the resampling between the
SiLU and the conv for up/down blocks); then with scale-shift norm
``h = GN(h) * (1 + s_t) + b_t`` from ``Linear(SiLU(temb))`` and *then*
``h = h * (1 + s_z) + b_z`` from ``Linear(SiLU(code))`` (DiffusionRig's global-code conditioning),
then ``conv(dropout(SiLU(h)))`` (zero-initialised) plus the skip path (identity, or a 1x1 conv
when the width changes). Group norms run in float32 with ``norm_num_groups`` groups (ADM: 32).

Group count and narrow models: a group norm removes each group's spatial mean, so with ONE channel
per group (32 groups over 32 channels) no per-channel mean of the input survives any norm, the
output head's included, and the network cannot follow the per-channel mean (DC) of the noise it has
to predict (measured on the 32-channel test model: slope 0.03 of predicted-noise DC on true-noise
DC, instead of 1). DDIM then never corrects the colour of the image: a single-sample overfit came
out about 0.3 off per channel (11 dB). The paper model has at least 4 channels per group (128 / 32);
:data:`TINY_UNET_CONFIG` keeps that ratio (8 groups over 32 channels).

Module and parameter names follow the released checkpoints one to one (``input_blocks.N.M....``,
``emb_layers``, ``cond_emb_layers``, ``out_layers``, ...), so loading them is a prefix strip (see
:mod:`.checkpoint` and docs/diffusionrig.md). The code here is facerig's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from facerig.errors import InvalidInput

__all__ = ["DiffusionRigUNet", "GlobalEncoder", "PAPER_UNET_CONFIG", "TINY_UNET_CONFIG"]

#: DiffusionRig's released 256 px configuration (the constructor's defaults).
PAPER_UNET_CONFIG: dict = dict(
    image_size=256,
    in_channels=12,
    out_channels=3,
    model_channels=128,
    channel_mult=(1, 1, 2, 2, 4, 4),
    num_res_blocks=2,
    attention_resolutions=(16,),
    dropout=0.1,
    num_heads=1,
    num_head_channels=-1,
    num_heads_upsample=-1,
    use_scale_shift_norm=True,
    resblock_updown=True,
    use_new_attention_order=False,
    latent_dim=64,
)

#: A CPU-test configuration that still has every block kind (plain/down/up residual blocks, a width
#: change with a 1x1 skip conv, attention in the input, middle and output path, 2 attention heads),
#: with the paper's 4 channels per norm group at the narrowest width (see the module docstring).
TINY_UNET_CONFIG: dict = dict(
    PAPER_UNET_CONFIG,
    image_size=32,
    model_channels=32,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(16,),
    dropout=0.0,
    num_head_channels=32,
    norm_num_groups=8,
)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (as ADM)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps).to(
            x.dtype
        )


def _norm(channels: int, groups: int = 32) -> GroupNorm32:
    return GroupNorm32(groups, channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class Resample(nn.Module):
    """x2 nearest upsampling or x2 average-pool downsampling, with an optional 3x3 conv.

    With a conv, the parameter lives at ``conv`` (up) or ``op`` (down, strided conv), as released.
    """

    def __init__(self, channels: int, mode: str, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.mode = mode
        self.channels = channels
        out_channels = out_channels or channels
        self.use_conv = use_conv
        if mode == "up":
            if use_conv:
                self.conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        elif mode == "down":
            if use_conv:
                self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
            elif out_channels != channels:
                raise InvalidInput("out_channels", f"{channels} for a conv-free downsampling", out_channels)
        else:
            raise InvalidInput("mode", "'up' or 'down'", mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            return self.conv(x) if self.use_conv else x
        if self.use_conv:
            return self.op(x)
        return F.avg_pool2d(x, kernel_size=2, stride=2)


class ResidualBlock(nn.Module):
    """ADM residual block with timestep and global-code conditioning (see the module docstring)."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = True,
        up: bool = False,
        down: bool = False,
        latent_dim: int = 64,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            _norm(channels, norm_num_groups), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up or down:
            mode = "up" if up else "down"
            self.h_upd: nn.Module = Resample(channels, mode, use_conv=False)
            self.x_upd: nn.Module = Resample(channels, mode, use_conv=False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        n_film = 2 * out_channels if use_scale_shift_norm else out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, n_film))
        # the global code always gives a (scale, shift) pair, as released; without scale-shift norm
        # the released block cannot use it (a 2C vector added to C channels), so neither can this one
        self.cond_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(latent_dim, 2 * out_channels))
        self.out_layers = nn.Sequential(
            _norm(out_channels, norm_num_groups),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, code: torch.Tensor | None) -> torch.Tensor:
        if self.updown:
            h = self.in_layers[1](self.in_layers[0](x))
            h = self.in_layers[2](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        t = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        z = self.cond_emb_layers(code).to(h.dtype)[:, :, None, None] if code is not None else None
        if self.use_scale_shift_norm:
            h = self.out_layers[0](h)
            scale, shift = t.chunk(2, dim=1)
            h = h * (1 + scale) + shift
            if z is not None:
                scale, shift = z.chunk(2, dim=1)
                h = h * (1 + scale) + shift
            for layer in cast(nn.Sequential, self.out_layers[1:]):  # a slice of a Sequential is a Sequential
                h = layer(h)
        else:
            if z is not None:
                raise InvalidInput("global_code", "None when use_scale_shift_norm is False", "a tensor")
            h = self.out_layers(h + t)
        return self.skip_connection(x) + h


class SelfAttention(nn.Module):
    """Spatial self-attention: GN -> 1x1 qkv (Conv1d) -> softmax(q k^T / sqrt(d)) v -> 1x1 proj
    (zero-initialised) -> residual. ``legacy_order``: the qkv channels are grouped per head as
    ``[q_h, k_h, v_h]`` (ADM's default); otherwise as ``[q (all heads), k, v]``."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        legacy_order: bool = True,
        norm_num_groups: int = 32,
    ):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise InvalidInput("num_head_channels", f"a divisor of {channels}", num_head_channels)
            self.num_heads = channels // num_head_channels
        self.legacy_order = legacy_order
        self.norm = _norm(channels, norm_num_groups)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = x.shape
        flat = x.reshape(b, c, hh * ww)
        qkv = self.qkv(self.norm(flat))  # (B, 3C, T)
        n, d = self.num_heads, c // self.num_heads
        if self.legacy_order:
            q, k, v = qkv.reshape(b, n, 3 * d, -1).split(d, dim=2)  # each (B, n, d, T)
        else:
            q, k, v = (t.reshape(b, n, d, -1) for t in qkv.chunk(3, dim=1))
        out = F.scaled_dot_product_attention(
            q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2)
        )  # (B, n, T, d)
        out = out.transpose(-1, -2).reshape(b, c, -1)
        return (flat + self.proj_out(out)).reshape(b, c, hh, ww)


class ConditionedSequential(nn.ModuleList):
    """A list of layers applied in order; residual blocks also receive (temb, code)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor, code: torch.Tensor | None) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb, code) if isinstance(layer, ResidualBlock) else layer(x)
        return x


class DiffusionRigUNet(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers' own config_name clash
    """DiffusionRig's denoiser (ADM UNet + global-code scale-shift). See the module docstring.

    ``forward(sample, timestep, cond, global_code)``: ``sample`` (B, 3, H, W) noisy image,
    ``timestep`` int/float or (B,) in [0, num_train_timesteps), ``cond`` (B, in_channels - 3, H, W)
    physical buffers (:func:`facerig.engines.diffusionrig.buffers.model_buffers`), ``global_code``
    (B, latent_dim) or None -> predicted noise (B, out_channels, H, W).

    ``norm_num_groups``: groups of every group norm (ADM's 32; keep at least 4 channels per group,
    see the module docstring).

    ``face_model`` records the face model whose buffers the weights were trained on (a fingerprint
    such as ``"flame-..."`` or just a model name) and ``buffer_convention`` how they were encoded;
    the buffer adapter refuses other buffers.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        image_size: int = 256,
        in_channels: int = 12,
        out_channels: int = 3,
        model_channels: int = 128,
        channel_mult: Sequence[float] = (1, 1, 2, 2, 4, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = True,
        resblock_updown: bool = True,
        use_new_attention_order: bool = False,
        latent_dim: int = 64,
        face_model: str | None = None,
        buffer_convention: str = "deca-float",
        norm_num_groups: int = 32,
    ):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        channel_mult = tuple(channel_mult)
        widths = {int(m * model_channels) for m in channel_mult}
        if norm_num_groups < 1 or any(w % norm_num_groups for w in widths):
            raise InvalidInput(
                "norm_num_groups", f"a divisor of every width {sorted(widths)}", norm_num_groups
            )
        attention_ds = {image_size // int(r) for r in attention_resolutions}
        self.model_channels = model_channels
        self.gradient_checkpointing = False
        temb = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, temb), nn.SiLU(), nn.Linear(temb, temb))

        def res(ch_in, ch_out=None, **kw):
            return ResidualBlock(
                ch_in,
                temb,
                dropout,
                ch_out,
                use_scale_shift_norm,
                latent_dim=latent_dim,
                norm_num_groups=norm_num_groups,
                **kw,
            )

        def attn(ch, heads):
            return SelfAttention(
                ch,
                heads,
                num_head_channels,
                legacy_order=not use_new_attention_order,
                norm_num_groups=norm_num_groups,
            )

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([ConditionedSequential([nn.Conv2d(in_channels, ch, 3, padding=1)])])
        skips = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(ConditionedSequential(layers))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Resample(ch, "down", use_conv=True)
                self.input_blocks.append(ConditionedSequential([down]))
                skips.append(ch)
                ds *= 2
        self.middle_block = ConditionedSequential([res(ch), attn(ch, num_heads), res(ch)])
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skips.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(
                        res(ch, ch, up=True) if resblock_updown else Resample(ch, "up", use_conv=True)
                    )
                    ds //= 2
                self.output_blocks.append(ConditionedSequential(layers))
        self.out = nn.Sequential(
            _norm(ch, norm_num_groups), nn.SiLU(), _zero(nn.Conv2d(input_ch, out_channels, 3, padding=1))
        )

    @property
    def cond_channels(self) -> int:
        """Channels of the physical-buffer input (``in_channels - 3``)."""
        return int(self.config.in_channels) - 3  # type: ignore[attr-defined]  # diffusers FrozenDict: attribute access

    def _run(self, block: nn.Module, h: torch.Tensor, emb: torch.Tensor, code: torch.Tensor | None):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return self._gradient_checkpointing_func(block, h, emb, code)
        return block(h, emb, code)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        cond: torch.Tensor | None,
        global_code: torch.Tensor | None,
    ) -> torch.Tensor:
        b = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device)
        if t.ndim == 0:
            t = t.expand(b)
        emb = get_timestep_embedding(t, self.model_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
        emb = self.time_embed(emb.to(cast(nn.Linear, self.time_embed[0]).weight.dtype))
        x = sample if cond is None else torch.cat([sample, cond.to(sample.dtype)], dim=1)
        # the ignores below: diffusers' config is a FrozenDict with attribute access
        if x.shape[1] != self.config.in_channels:  # type: ignore[attr-defined]
            raise InvalidInput(
                "cond",
                f"{self.cond_channels} buffer channels (model input {self.config.in_channels})",  # type: ignore[attr-defined]
                x.shape[1] - sample.shape[1],
            )
        hs = []
        h = x.to(emb.dtype)
        for block in self.input_blocks:
            h = self._run(block, h, emb, global_code)
            hs.append(h)
        h = self._run(self.middle_block, h, emb, global_code)
        for block in self.output_blocks:
            h = self._run(block, torch.cat([h, hs.pop()], dim=1), emb, global_code)
        return self.out(h)


class BasicBlock(nn.Module):
    """ResNet basic block: 3x3 conv (stride) -> BN -> ReLU -> 3x3 conv -> BN, + shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        idt = x if self.downsample is None else self.downsample(x)
        return self.relu(out + idt)


class GlobalEncoder(ModelMixin, ConfigMixin):  # type: ignore[misc]  # diffusers' own config_name clash
    """ResNet-18 (trained from scratch) mapping the clean image in [-1, 1] (B, 3, H, W) to the global
    code (B, latent_dim). Parameter names are torchvision's ResNet names (``conv1``, ``bn1``,
    ``layer1.0.conv1``, ..., ``fc``), which is how the released checkpoints store the encoder."""

    @register_to_config
    def __init__(self, latent_dim: int = 64, in_channels: int = 3, layers: Sequence[int] = (2, 2, 2, 2)):
        super().__init__()
        widths = (64, 128, 256, 512)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (w, n) in enumerate(zip(widths, layers, strict=True)):
            blocks = [BasicBlock(cin, w, 1 if i == 0 else 2)] + [BasicBlock(w, w) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, latent_dim)
        for m in self.modules():  # torchvision's ResNet initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(image))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
