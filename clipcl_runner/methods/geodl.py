"""GeoDL (Simon et al., CVPR 2021, "On Learning the Geodesic Path for Incremental Learning").

Loss = CE + alpha * (D_img + D_txt). For each trained tower, D is the mean over the batch of
Δᵀ G Δ with Δ = new − old L2-normalised feature (the old features come from a frozen copy of
the model taken at each stage start, as in LwF), and G the geodesic flow kernel (Gong et al.,
CVPR 2012) between the PCA subspaces of the old and the new batch features. G is computed from
detached features: gradient flows through Δ only.

- D_img: on the current batch's image features.
- D_txt: on the class-prompt text features (student vs teacher) of every class seen so far
  (``text_classes=seen``; ``current``: the stage's classes only).
A tower that does not train (``part=image`` / ``part=text``) has Δ without gradient, so its
term is not computed and is logged as 0. The CE is the shared one (``trainer.train_head``,
``trainer.label_smoothing``).

``kernel``: ``exact`` is the closed-form GFK below; ``official`` is the approximation CL-CLIP's
code computes (:func:`official_kernel`). docs/fidelity.md lists the tests that pin both.
If the kernel cannot be computed for a step (too few samples, NaN features, an SVD that does
not converge), that step falls back to plain CE and a warning is logged once.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Method, RunContext
from .distill import StageTeacher

log = logging.getLogger(__name__)

# Below this principal angle the closed-form coefficients use their Taylor series (0/0 at 0).
_SMALL_ANGLE = 1e-3


def pca_subspace(features: Tensor, dim: int) -> Tensor:
    """Orthonormal basis (D x dim) of the top-``dim`` principal directions of the rows of ``features``."""
    centred = features - features.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return vh[:dim].t()


def geodesic_flow_kernel(old: Tensor, new: Tensor, subspace_dim: int) -> Tensor:
    """The geodesic flow kernel G (D x D) between the PCA subspaces of ``old`` and ``new`` (N x D each).

    Subspaces: the top d = min(N − 1, subspace_dim) principal directions of each batch (source
    P_S from ``old``, target P_T from ``new``). With the SVD P_Sᵀ P_T = U Γ Vᵀ, principal angles
    θ = arccos Γ, A = P_S U and C = P_T V the paired principal vectors, the geodesic from P_S to
    P_T is Φ(t) = A cos(tθ) + B sin(tθ), B = (C − A cos θ) / sin θ, and

        G = ∫₀¹ Φ(t) Φ(t)ᵀ dt
          = A diag(½ + sin2θ/4θ) Aᵀ + A diag(sin²θ/2θ) Bᵀ + B diag(sin²θ/2θ) Aᵀ + B diag(½ − sin2θ/4θ) Bᵀ,

    which is Gong et al.'s closed form (with the ½ of their released code, so identical
    subspaces give the projector P Pᵀ). B is never formed: its coefficients are folded into
    E = C − A cos θ (= B sin θ), so angles near 0 need no division by sin θ (series there).
    The complement of P_S is not needed explicitly, so d may exceed D/2.

    Computed in float64 without gradient; returns a symmetric PSD float32 matrix. Raises
    ``ValueError`` when the kernel is undefined (d < 1, shape mismatch, non-finite values) and
    ``torch.linalg.LinAlgError`` when an SVD fails.
    """
    if old.dim() != 2 or old.shape != new.shape:
        raise ValueError(
            f"old and new features must be N x D of equal shape, got {tuple(old.shape)} and {tuple(new.shape)}."
        )
    dim = min(old.shape[0] - 1, int(subspace_dim), old.shape[1])
    if dim < 1:
        raise ValueError(f"a PCA subspace needs at least 2 samples (got {old.shape[0]}) and subspace_dim >= 1.")
    with torch.no_grad():
        old64, new64 = old.detach().double(), new.detach().double()
        if not (torch.isfinite(old64).all() and torch.isfinite(new64).all()):
            raise ValueError("features are not finite.")
        source, target = pca_subspace(old64, dim), pca_subspace(new64, dim)
        u, cosines, vh = torch.linalg.svd(source.t() @ target)
        theta = torch.arccos(cosines.clamp(0.0, 1.0))
        a = source @ u
        e = target @ vh.t() - a * cosines.clamp(0.0, 1.0)  # = B sin θ, orthogonal to P_S
        # ∫cos²(tθ) = ½ + sin2θ/4θ;  ∫cos·sin / sinθ = sinθ/2θ;  ∫sin²(tθ) / sin²θ = (½ − sin2θ/4θ) / sin²θ
        c_aa = 0.5 + 0.5 * torch.sinc(2 * theta / math.pi)
        c_ae = 0.5 * torch.sinc(theta / math.pi)
        small = theta < _SMALL_ANGLE
        safe = torch.where(small, torch.ones_like(theta), theta)
        c_ee = torch.where(
            small,
            1.0 / 3.0 + 2.0 * theta**2 / 45.0,
            (0.5 - 0.5 * torch.sinc(2 * safe / math.pi)) / torch.sin(safe) ** 2,
        )
        cross = (a * c_ae) @ e.t()
        kernel = (a * c_aa) @ a.t() + cross + cross.t() + (e * c_ee) @ e.t()
        kernel = 0.5 * (kernel + kernel.t())
        if not torch.isfinite(kernel).all():
            raise ValueError("the geodesic flow kernel is not finite.")
    return kernel.float()


def per_sample_centred_pca(features: Tensor, dim: int) -> Tensor:
    """D x ``dim``: the top left singular vectors of featuresᵀ after subtracting each sample's own
    mean over its D coordinates (not the batch mean)."""
    columns = features.t()  # D x N
    centred = columns - columns.mean(dim=0, keepdim=True)
    u, _, _ = torch.linalg.svd(centred, full_matrices=False)
    return u[:, :dim]


def newton_schulz_inverse(matrix: Tensor) -> Tensor:
    """One Newton-Schulz iteration for X^(-1/2), squared: (½(3I − X/‖X‖_F))² / ‖X‖_F."""
    norm = torch.linalg.matrix_norm(matrix)
    step = 0.5 * (3.0 * torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device) - matrix / norm)
    return step @ step / norm


def official_kernel(new: Tensor, old: Tensor, null_space_dim: int = 60) -> Tensor:
    """The kernel CL-CLIP's GeoDL code builds from a batch of ``new`` (student) and ``old``
    (teacher) features (N x D, each row L2-normalised first), restated:

    - P_S: per-sample-centred PCA of the new features with d = N − 2 columns, extended by the
      first ``null_space_dim`` columns R of an orthonormal basis of its complement (the
      null space of P_Sᵀ from a full SVD; which columns is LAPACK's choice when D − d exceeds
      it); P_T: the same PCA of the old features.
    - A = P_Sᵀ P_T, B = Rᵀ P_T; an approximate two-matrix HOGSVD: S = ½(AᵀA (BᵀB)⁻¹ + BᵀB (AᵀA)⁻¹)
      with each inverse from one Newton-Schulz iteration, V = left singular vectors of S,
      Γ = column norms of A V, V1 = A V / Γ, V2 = −B V / (column norms of B V), θ = arccos Γ.
    - G = Q1 b1 Q1ᵀ + Q1 b2 Q2ᵀ + Q2 b2 Q1ᵀ + Q2 b4 Q2ᵀ with Q1 = P_S[:, :d] V1, Q2 = R V2,
      b1 = ½(1 + sin2θ/(2θ+ε)), b2 = ½(cos2θ − 1)/(2θ+ε), b4 = ½(1 − sin2θ/(2θ+ε)), ε = 1e-12.

    Not a projector: its eigenvalues exceed 1 (up to ~1.3 on CLIP features). Float64, no
    gradient; raises ``ValueError`` when N < 3 or the result is not finite.
    """
    if new.dim() != 2 or new.shape != old.shape:
        raise ValueError(
            f"new and old features must be N x D of equal shape, got {tuple(new.shape)} and {tuple(old.shape)}."
        )
    dim = new.shape[0] - 2
    if dim < 1 or dim >= new.shape[1]:
        raise ValueError(f"the official kernel needs 3 <= N < D + 2 samples (got N={new.shape[0]}, D={new.shape[1]}).")
    with torch.no_grad():
        source = F.normalize(new.detach().double(), dim=-1)
        target = F.normalize(old.detach().double(), dim=-1)
        if not (torch.isfinite(source).all() and torch.isfinite(target).all()):
            raise ValueError("features are not finite.")
        p_s, p_t = per_sample_centred_pca(source, dim), per_sample_centred_pca(target, dim)
        complement = torch.linalg.svd(p_s.t().cpu(), full_matrices=True)[2][dim:].t().to(p_s.device)
        rest = complement[:, :null_space_dim]
        a, b = p_s.t() @ p_t, rest.t() @ p_t
        gram_a, gram_b = a.t() @ a, b.t() @ b
        s_matrix = 0.5 * (gram_a @ newton_schulz_inverse(gram_b) + gram_b @ newton_schulz_inverse(gram_a))
        v = torch.linalg.svd(s_matrix)[0]
        av, bv = a @ v, b @ v
        gamma = torch.linalg.vector_norm(av, dim=0)
        v1, v2 = av / gamma, -bv / torch.linalg.vector_norm(bv, dim=0)
        theta = torch.arccos(gamma.clamp(-1.0, 1.0))
        ratio = torch.sin(2 * theta) / (2 * theta + 1e-12)
        b1, b2, b4 = 0.5 * (1 + ratio), 0.5 * (torch.cos(2 * theta) - 1) / (2 * theta + 1e-12), 0.5 * (1 - ratio)
        q1, q2 = p_s @ v1, rest @ v2
        cross = (q1 * b2) @ q2.t()
        kernel = (q1 * b1) @ q1.t() + cross + cross.t() + (q2 * b4) @ q2.t()
        if not torch.isfinite(kernel).all():
            raise ValueError("the official geodesic flow kernel is not finite.")
    return kernel.float()


def geodesic_distance(old: Tensor, new: Tensor, kernel: Tensor) -> Tensor:
    """Mean over the batch of Δᵀ G Δ, Δ = new − old (gradient flows through both features, not G)."""
    delta = (new - old).float()
    with torch.autocast(device_type=delta.device.type, enabled=False):  # fp32 even inside AMP
        return ((delta @ kernel.to(delta.device)) * delta).sum(dim=-1).mean()


KERNELS = ("official", "exact")
TEXT_CLASSES = ("seen", "current")


class GeoDL(StageTeacher, Method):
    def __init__(
        self,
        name: str = "geodl",
        alpha: float = 10.0,
        subspace_dim: int = 128,
        kernel: str = "exact",
        text_classes: str = "seen",
        null_space_dim: int = 60,
    ):
        super().__init__(name)
        if subspace_dim < 1:
            raise ValueError(f"method.subspace_dim={subspace_dim} must be >= 1.")
        if kernel not in KERNELS:
            raise ValueError(f"method.kernel='{kernel}' is not one of {KERNELS}.")
        if text_classes not in TEXT_CLASSES:
            raise ValueError(f"method.text_classes='{text_classes}' is not one of {TEXT_CLASSES}.")
        if null_space_dim < 0:
            raise ValueError(f"method.null_space_dim={null_space_dim} must be >= 0.")
        self.alpha, self.subspace_dim, self.kernel = alpha, subspace_dim, kernel
        self.text_classes, self.null_space_dim = text_classes, null_space_dim
        self._warned = False

    def begin_stage(self, run: RunContext) -> None:
        super().begin_stage(run)  # StageTeacher: the stage-start model, frozen
        self.text_names = run.seen_classnames() if self.text_classes == "seen" else list(run.stage.classnames)

    def distance(self, old: Tensor, new: Tensor) -> Tensor:
        if self.kernel == "official":
            return geodesic_distance(old, new, official_kernel(new, old, self.null_space_dim))
        return geodesic_distance(old, new, geodesic_flow_kernel(old, new, self.subspace_dim))

    def teacher_text_features(self, run: RunContext) -> Tensor:
        return self.frozen_class_features(run, self.teacher, self.text_names, run.stage.train_templates)

    def cross_entropy_with(self, run: RunContext, image_features: Tensor, labels: Tensor, text_features: Tensor | None):
        """The shared CE; when its classes are rows of the student's D_txt prompts, from those rows
        (one pass of the prompts through the text tower for both terms)."""
        training = run.training
        if (
            text_features is None
            or training.train_templates != run.stage.train_templates
            or not set(training.classnames) <= set(self.text_names)
        ):
            return self.cross_entropy(run, image_features, labels)
        rows = torch.tensor([self.text_names.index(n) for n in training.classnames], device=text_features.device)
        logits = run.model.logit_scale.exp() * image_features @ text_features.index_select(0, rows).t()
        return F.cross_entropy(logits, labels, label_smoothing=run.label_smoothing)

    def geodesic_terms(self, run: RunContext, images: Tensor, image_features: Tensor, text_features: Tensor | None):
        """(D_img, D_txt) for the trained towers (0 for a frozen tower); raises when a kernel fails."""
        zero = image_features.new_zeros(()).float()
        d_img = d_txt = zero
        if run.part in ("whole", "image"):
            old = self.teacher_image_features(images)
            d_img = self.distance(old, image_features)
        if run.part in ("whole", "text") and text_features is not None:
            d_txt = self.distance(self.teacher_text_features(run), text_features)
        return d_img, d_txt

    def training_loss(self, run: RunContext, images: Tensor, labels: Tensor):
        image_features = run.model.encode_image(images, normalize=True)
        text_features = None
        if run.part in ("whole", "text"):  # student class features, shared by CE and D_txt
            text_features = self.class_features(run, run.model, self.text_names, run.stage.train_templates)
        ce = self.cross_entropy_with(run, image_features, labels, text_features)
        try:
            d_img, d_txt = self.geodesic_terms(run, images, image_features, text_features)
        except (ValueError, RuntimeError) as error:  # torch.linalg.LinAlgError is a RuntimeError
            if not self._warned:
                log.warning("GeoDL: geodesic flow kernel failed (%s); plain CE for such steps.", error)
                self._warned = True
            zero = ce.detach().new_zeros(())
            return ce, {"ce": ce.detach(), "geodl_img": zero, "geodl_txt": zero, "geodl_fallback": zero + 1}
        loss = ce + self.alpha * (d_img + d_txt)
        terms = {"ce": ce.detach(), "geodl_img": d_img.detach(), "geodl_txt": d_txt.detach()}
        return loss, terms | {"geodl_fallback": ce.detach().new_zeros(())}
