"""MAE: mask 75 % of the patches, encode the visible ones with a ViT, reconstruct the missing
pixels with a lightweight decoder.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022. Recipe (Sec. 3, Sec. 4
Table 1, Appendix A.1 Table 8): mask ratio 0.75 (random, per sample); decoder 8 blocks of width
512 (16 heads) with fixed sine-cosine position embeddings; loss = MSE on the masked patches only,
each target patch normalised by its own mean and variance ("norm pix loss", Table 1d); AdamW with
betas (0.9, 0.95), LR = 1.5e-4 x B/256, weight decay 0.05 (not on biases and norm layers), 40
warmup epochs of 800 then cosine, batch 4096; one view: random resized crop (scale 0.2-1) and flip
(here the 8 dihedral flips/rotations, as nothing has a canonical orientation from above).
Encoder: a timm ViT wrapped by lightly's MaskedVisionTransformerTIMM (MAE's initialisation, fixed
sine-cosine position embeddings); decoder: lightly's MaskedVisionTransformerDecoderTIMM.

Override from `recipe:` in the pretrain config; method keys: mask_ratio, decoder_dim,
decoder_depth, decoder_heads, norm_pix_loss. Table 1a shows a 1-block decoder (`decoder_depth: 1`)
is as good for fine-tuning and much cheaper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM, MaskedVisionTransformerTIMM
from lightly.models.modules.masked_vision_transformer_timm import init_weights
from torch import nn

from rsbench.contracts.architectures import is_vit_name
from rsbench.errors import ConfigError
from rsbench.models import backbone_info
from rsbench.ssl.augment import MultiView, crop_flip_transform
from rsbench.ssl.base import SSLMethod
from rsbench.ssl.catalog import CATALOG


class MAE(SSLMethod):
    card = CATALOG["mae"]  # name, paper, default backbone and recipe
    num_views = 1
    default_min_scale = 0.2
    monitor_collapse = False  # a reconstruction loss has no constant solution to collapse to

    @classmethod
    def view_transform(
        cls, image_size: int, in_chans: int, min_scale: float | None = None, patch_size: int | None = None, **options
    ):
        # MAE uses no colour augmentation (Sec. 4, "Data augmentation"): `options` do not apply.
        return MultiView([crop_flip_transform(image_size, cls.default_min_scale if min_scale is None else min_scale)])

    def __init__(self, arch: str, *args, **kwargs):
        if not is_vit_name(arch):
            raise ConfigError(f"{self.name} needs a ViT backbone (e.g. vit_tiny_patch16_224), got '{arch}'")
        super().__init__(arch, *args, **kwargs)
        r = self.recipe
        vit = self.backbone
        if vit.num_prefix_tokens != 1:  # lightly's random_token_mask keeps exactly one prefix token
            raise ConfigError(
                f"{self.name} needs a ViT with one class token, '{arch}' has {vit.num_prefix_tokens} prefix tokens"
            )
        self.patch_size = backbone_info(vit).patch_size
        # The encoder wraps (shares) the exported timm ViT; it only adds token selection.
        self.encoder = MaskedVisionTransformerTIMM(vit=vit)
        self.sequence_length = self.encoder.sequence_length
        self.decoder_embed = nn.Linear(vit.embed_dim, r["decoder_dim"])
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=vit.patch_embed.num_patches,
            embed_dim=r["decoder_dim"],
            depth=r["decoder_depth"],
            num_heads=r["decoder_heads"],
            num_prefix_tokens=vit.num_prefix_tokens,
        )
        self.prediction_head = nn.Linear(r["decoder_dim"], self.patch_size**2 * self.hparams.in_chans)
        self.decoder_embed.apply(init_weights)
        self.prediction_head.apply(init_weights)

    def masked_targets(self, images: torch.Tensor, idx_mask: torch.Tensor) -> torch.Tensor:
        """Pixels of the masked patches (B, n_masked, p*p*C), per-patch normalised if norm_pix_loss."""
        patches = utils.patchify(images, self.patch_size)
        # idx_mask counts the class token at position 0; patches do not.
        target = utils.get_at_index(patches, idx_mask - self.backbone.num_prefix_tokens)
        return utils.normalize_mean_var(target, dim=-1) if self.recipe["norm_pix_loss"] else target

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        images = views[0]
        idx_keep, idx_mask = utils.random_token_mask(
            size=(images.shape[0], self.sequence_length), mask_ratio=self.recipe["mask_ratio"], device=images.device
        )
        encoded = self.encoder.encode(images=images, idx_keep=idx_keep)
        tokens = self.decoder_embed(encoded)
        # Scatter the visible tokens into a full-length sequence; the decoder fills the masked slots
        # with its mask token and adds position embeddings.
        full = tokens.new_zeros(images.shape[0], self.sequence_length, tokens.shape[-1])
        full = utils.set_at_index(full, idx_keep, tokens)
        decoded = self.decoder(full, idx_mask=idx_mask)
        pred = self.prediction_head(utils.get_at_index(decoded, idx_mask))
        return F.mse_loss(pred, self.masked_targets(images, idx_mask)), encoded[:, 0]
