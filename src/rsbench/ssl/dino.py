"""DINO: self-distillation - a student matches the centred, sharpened output of an EMA teacher
across multi-crop views. ViT (as in the paper) or ResNet.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021. Recipe
(Sec. 3.1, Sec. 4 "Implementation details", Appendix; official code defaults): AdamW, LR = 5e-4 x
B/256, 10 warmup epochs then cosine to 1e-6 (here: min_lr_fraction of the peak); weight decay
cosine from 0.04 to 0.4; gradient clipping 3.0; batch 1024; 100-epoch ablation schedule.
Head: 3-layer MLP (2048 hidden, GELU) -> 256 bottleneck -> L2 norm -> weight-normalised linear to
K = 65536; last layer frozen during the first epoch. Student temperature 0.1, teacher temperature
warmed up linearly from 0.04 to 0.07 over the first 30 epochs; centre momentum 0.9; teacher EMA
momentum cosine from 0.996 to 1. Multi-crop: 2 global crops (scale 0.4-1, the code default) and
8 local crops of 96/224 of the global side (scale 0.05-0.4); global views get blur p 1.0 / 0.1 and
solarize p 0 / 0.2, local views blur p 0.5. Loss: lightly's DINOLoss (centering included).

Schedules given in epochs of the 100-epoch reference run are applied as fractions of this run:
warmup 0.1, teacher-temperature warmup 0.3, frozen last layer 0.01.
`model.backbone` is the student; the exported backbone is the EMA teacher, which the paper evaluates
(Sec. 5.2 / Fig. 6: the teacher beats the student throughout training; the official k-NN and linear
evaluations load `--checkpoint_key teacher`).

Override from `recipe:` in the pretrain config; method keys: out_dim, hidden_dim, bottleneck_dim,
student_temp, teacher_temp, warmup_teacher_temp, teacher_temp_warmup_fraction, center_momentum,
momentum_start, momentum_end, freeze_last_layer_fraction, norm_last_layer, batch_norm_head, n_local
(number of local crops; 0 gives the 2-global-crop variant of the paper's multi-crop ablation). On CPU,
`out_dim: 4096` keeps the head small.
"""

from __future__ import annotations

import warnings

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad

from rsbench.contracts.architectures import is_vit_name
from rsbench.ssl.augment import MultiView, local_crop_size, ssl_view_transform
from rsbench.ssl.base import SSLMethod
from rsbench.ssl.catalog import CATALOG
from rsbench.ssl.momentum import make_teacher


class DINO(SSLMethod):
    card = CATALOG["dino"]  # name, paper, default backbone and recipe
    default_min_scale = 0.4  # global crops
    view_options = ("n_local",)
    exported_module = "teacher_backbone"

    @classmethod
    def view_transform(
        cls,
        image_size: int,
        in_chans: int,
        min_scale: float | None = None,
        patch_size: int | None = None,
        n_local: int | None = None,
        **options,
    ):
        scale = cls.default_min_scale if min_scale is None else min_scale
        n_local = cls.default_recipe["n_local"] if n_local is None else n_local  # the recipe holds the default
        local = local_crop_size(image_size, patch_size or 16)
        views = [
            ssl_view_transform(image_size, in_chans, min_scale=scale, blur_p=1.0, **options),
            ssl_view_transform(image_size, in_chans, min_scale=scale, blur_p=0.1, solarize_p=0.2, **options),
        ]
        local_view = ssl_view_transform(local, in_chans, min_scale=0.05, max_scale=scale, blur_p=0.5, **options)
        return MultiView(views + [local_view] * n_local)

    @classmethod
    def backbone_options(cls, arch: str) -> dict:
        # Local crops are smaller than global ones: a ViT resamples its position embeddings per input.
        return {"dynamic_img_size": True} if is_vit_name(arch) else {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        r = self.recipe
        head = dict(
            input_dim=self.feature_dim,
            hidden_dim=r["hidden_dim"],
            bottleneck_dim=r["bottleneck_dim"],
            output_dim=r["out_dim"],
            batch_norm=r["batch_norm_head"],
        )
        with warnings.catch_warnings():  # lightly's head uses the deprecated nn.utils.weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            # weight_norm modules cannot be deep-copied: build the teacher head and copy the weights.
            self.student_head, self.teacher_head = self.make_head(head, student=True), self.make_head(head)
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        deactivate_requires_grad(self.teacher_head)
        self.teacher_backbone = make_teacher(self.backbone)
        self.criterion = DINOLoss(
            output_dim=r["out_dim"],
            teacher_temp=r["teacher_temp"],
            student_temp=r["student_temp"],
            center_momentum=r["center_momentum"],
        )

    def make_head(self, head: dict, student: bool = False) -> DINOProjectionHead:
        return DINOProjectionHead(**head, **({"norm_last_layer": self.recipe["norm_last_layer"]} if student else {}))

    def teacher_temp_at(self, step: int) -> float:
        """Linear warmup from warmup_teacher_temp to teacher_temp, then constant (DINO Sec. 4)."""
        r = self.recipe
        warmup = r["teacher_temp_warmup_fraction"] * self.total_steps
        if step >= warmup:
            return r["teacher_temp"]
        return r["warmup_teacher_temp"] + (r["teacher_temp"] - r["warmup_teacher_temp"]) * step / warmup

    def ema_pairs(self):
        return [(self.backbone, self.teacher_backbone), (self.student_head, self.teacher_head)]

    def on_after_backward(self) -> None:
        # The output layer stays fixed at first: it stabilises the start of training (DINO App.).
        self.student_head.freeze_last_layer = self.recipe["freeze_last_layer_fraction"] * self.total_steps
        self.student_head.cancel_last_layer_gradients(self.global_step)

    def training_loss(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            teacher_out = list(self.teacher_head(self.teacher_backbone(torch.cat(views[:2]))).chunk(2))
        # Same-size views go through the backbone together (one forward per resolution).
        student_out = []
        for group in (views[:2], views[2:]):
            if group:
                out = self.student_head(self.backbone(torch.cat(group)))
                student_out.extend(out.chunk(len(group)))
        loss = self.criterion(teacher_out, student_out, teacher_temp=self.teacher_temp_at(self.global_step))
        return loss, student_out[0]
