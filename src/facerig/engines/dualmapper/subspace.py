"""Target CLIP embeddings by subspace projection (METHODS.md, "Dual Mappers", objective).

The edited image should look like the source with the target expression stronger, everything else
kept. In CLIP space: write the source image embedding as the part inside the span of the text
embeddings of a set of expression prompts plus a residual outside it, amplify the target prompt's
share of the in-span part, add the residual back.

Formula (all in float64, every embedding L2-normalised first; ``e`` one image embedding (D,),
``T`` the (P, D) prompt embeddings, row ``k`` the target prompt ``t_k``):

* coefficients ``c = argmin_c ||T^T c - e||`` with the minimum norm (the pseudo-inverse through an
  SVD of ``T``; singular values below ``rtol * s_max`` count as zero, so duplicated or dependent
  prompts are handled: a prompt given twice shares its coefficient equally between its copies);
* in-span part ``e_s = T^T c`` (the orthogonal projection of ``e`` on span(T)); residual
  ``e_r = e - e_s`` (orthogonal to every prompt);
* the target component, ``component="coefficient"`` (default): ``a = c_k t_k``, the target prompt's
  term in the least-squares expansion of ``e_s`` over the prompts (it depends on the other prompts:
  what they explain is not counted); ``component="projection"``: ``a = (e . t_k) t_k``, the
  projection on the target direction (independent of the other prompts: then the span plays no
  role and the result is ``e`` moved along ``t_k``);
* target ``= normalise(e_r + (e_s - a) + alpha * a) = normalise(e + (alpha - 1) a)``.

``alpha = 1`` gives the (normalised) image embedding back. With ``component="coefficient"`` a
source whose target coefficient ``c_k`` is negative (the other prompts over-explain it) is pushed
AWAY from the target prompt by ``alpha > 1``: a warning is logged; use ``"projection"`` (``e . t_k``
is positive for any image that CLIP finds at all similar to the prompt) or a larger prompt set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import torch

from facerig.errors import InvalidInput

__all__ = ["DEFAULT_PROMPTS", "EXPRESSION_TARGETS", "NEUTRAL_PROMPT", "default_prompts", "subspace_coefficients",
           "subspace_target", "target_index"]

log = logging.getLogger(__name__)

#: the neutral prompt of the default set
NEUTRAL_PROMPT = "a photo of a person with a neutral expression"

#: the paper's six target expressions -> their prompts, then the neutral prompt
DEFAULT_PROMPTS: Mapping[str, str] = MappingProxyType({
    "smile": "a photo of a person who is smiling",
    "angry": "a photo of a person with an angry face",
    "sad": "a photo of a person with a sad face",
    "close_eyes": "a photo of a person with closed eyes",
    "raise_brows": "a photo of a person raising the eyebrows",
    "frown_brows": "a photo of a person frowning with furrowed brows",
    "neutral": NEUTRAL_PROMPT,
})

#: the six targets one mapper pair is trained for (the keys of :data:`DEFAULT_PROMPTS` but neutral)
EXPRESSION_TARGETS: tuple[str, ...] = tuple(k for k in DEFAULT_PROMPTS if k != "neutral")


def default_prompts() -> tuple[list[str], list[str]]:
    """(names, prompts) of the default set, neutral last."""
    return list(DEFAULT_PROMPTS), list(DEFAULT_PROMPTS.values())


def target_index(target: str | int, names: Sequence[str]) -> int:
    """Index of ``target`` (a name in ``names`` or an int) with a typed error."""
    if isinstance(target, int) and not isinstance(target, bool):
        if not 0 <= target < len(names):
            raise InvalidInput("target_index", f"an index in [0, {len(names)})", target)
        return target
    key = str(target).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in names:
        raise InvalidInput("target", f"one of {', '.join(names)}", target)
    return list(names).index(key)


def _prepare(image_emb: torch.Tensor, text_embs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(image_emb, torch.Tensor) or image_emb.ndim != 2:
        raise InvalidInput("image_emb", "a (B, D) tensor", getattr(image_emb, "shape", type(image_emb).__name__))
    if not isinstance(text_embs, torch.Tensor) or text_embs.ndim != 2 or text_embs.shape[1] != image_emb.shape[1]:
        raise InvalidInput("text_embs", f"a (P, {image_emb.shape[1]}) tensor",
                           getattr(text_embs, "shape", type(text_embs).__name__))
    e = image_emb.detach().to(torch.float64)
    t = text_embs.detach().to(torch.float64)
    for name, x in (("image_emb", e), ("text_embs", t)):
        n = torch.linalg.vector_norm(x, dim=1)
        if not torch.isfinite(x).all() or bool((n <= 1e-12).any()):
            raise InvalidInput(name, "finite rows of non-zero norm", f"norms {n.tolist()}")
    return e / torch.linalg.vector_norm(e, dim=1, keepdim=True), t / torch.linalg.vector_norm(t, dim=1, keepdim=True)


def subspace_coefficients(image_emb: torch.Tensor, text_embs: torch.Tensor, rtol: float = 1e-8) -> torch.Tensor:
    """Minimum-norm least-squares coefficients ``c`` (B, P) with ``T^T c`` the projection of each
    normalised image embedding on span(normalised text embeddings); float64, no gradients."""
    e, t = _prepare(image_emb, text_embs)
    u, s, vh = torch.linalg.svd(t, full_matrices=False)  # t = u diag(s) vh
    keep = s > rtol * s.max()
    u, s, vh = u[:, keep], s[keep], vh[keep]
    # pinv(t^T) = u diag(1/s) vh  ->  c = e vh^T diag(1/s) u^T
    return (e @ vh.T / s) @ u.T


def subspace_target(image_emb: torch.Tensor, text_embs: torch.Tensor, target_index: int, amplify: float = 2.0,
                    *, component: str = "coefficient", rtol: float = 1e-8) -> torch.Tensor:
    """The (B, D) unit target embeddings ``normalise(e + (amplify - 1) a)`` of the module docstring
    (``a`` the target component by ``component``), float64, detached. ``amplify=1`` returns the
    normalised image embeddings."""
    if component not in ("coefficient", "projection"):
        raise InvalidInput("component", "'coefficient' or 'projection'", component)
    e, t = _prepare(image_emb, text_embs)
    k = int(target_index)
    if not 0 <= k < t.shape[0]:
        raise InvalidInput("target_index", f"an index in [0, {t.shape[0]})", target_index)
    if component == "coefficient":
        ck = subspace_coefficients(e, t, rtol)[:, k]
    else:
        ck = e @ t[k]
    if float(amplify) > 1 and bool((ck <= 0).any()):
        log.warning("subspace_target: the target prompt's %s is <= 0 for %d of %d images (%s); amplify=%.2f moves "
                    "them away from the prompt", component, int((ck <= 0).sum()), len(ck),
                    ", ".join(f"{v:.3f}" for v in ck.tolist()[:4]), amplify)
    out = e + (float(amplify) - 1.0) * ck[:, None] * t[k][None]
    n = torch.linalg.vector_norm(out, dim=1, keepdim=True)
    if bool((n <= 1e-12).any()):
        raise InvalidInput("amplify", "a factor that leaves a non-zero target embedding", amplify)
    return out / n
