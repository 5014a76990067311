"""Geometry fitting from dense landmarks (pure functions + a small driver).

The fast path (blendshape models, weak perspective) alternates two closed-form steps, batched over
images:

1. pose: Gauss-Newton on the 2D reprojection of the current shape (rotation increment, scale,
   translation), initialised by a 3D similarity Procrustes against MediaPipe's relative-depth points;
2. shape: regularised linear least squares for identity and expression (the projection is linear
   in both), with the expression kept in its box ([0, 1] for blendshapes) by an active-set loop.

Residuals are weighted by the model's per-landmark weights, by a robust Geman-McClure IRLS weight
(so a few badly detected points do not pull the fit), and by visibility (landmarks whose surface
faces away from the camera count less). MediaPipe's relative depth enters the joint step too
(``depth_weight``, 0.3 of an x/y residual; centred, since its offset is unknown): from 2D points
alone a turned or pitched head trades against a differently shaped one, and on synthetic heads
rendered at known angles (:mod:`facerig.eval.synthetic_head`) the 2D-only fit read yaw -20/+20 as
-24.1/+21.7 and looking down 20 as 9 degrees; with the depth term -20.5/+20.1 and 12. A gradient-based refinement (``refine_lbfgs``) serves the
models/cameras that are not linear (FLAME's jaw joint, perspective projection).

Targets are in the crop's NDC (x right, y down, in [-1, 1]); ``depth`` (larger = nearer, same
units) initialises the pose by Procrustes and, weighted by ``depth_weight``, is fitted with x/y.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from facerig.morphable.base import FaceModel
from facerig.render.camera import pose_vertices, project
from facerig.rotations import axis_angle_to_matrix, matrix_to_axis_angle

log = logging.getLogger(__name__)


@dataclass
class LandmarkFitConfig:
    iterations: int = 5
    identity_prior: float = 1e-7      # weight of ||identity||^2 (~N(0,1) coefficients) vs the mean squared NDC residual: (landmark sigma ~0.007 NDC)^2 / 478
    expression_prior: float = 1e-8    # weight of ||expression||^2 (blendshapes are also boxed to their range)
    robust_scale: float = 0.02        # Geman-McClure scale, NDC units (~1% of the crop side)
    visibility_floor: float = 0.25    # weight of a landmark whose normal faces away
    fit_identity: bool = True
    fit_expression: bool = True
    use_depth_init: bool = True
    depth_weight: float = 0.3         # weight of MediaPipe's relative depth (per landmark, vs an x/y residual)


@dataclass
class LandmarkFitResult:
    identity: torch.Tensor      # (B, K_id) or (1, K_id) when shared
    expression: torch.Tensor    # (B, K_exp)
    rotation: torch.Tensor      # (B, 3) axis-angle
    camera: torch.Tensor        # (B, 3) weak perspective (s, tx, ty)
    jaw_pose: torch.Tensor      # (B, 3)
    weights: torch.Tensor       # (B, L) final per-landmark weights (model x robust x visibility)
    residual_ndc: torch.Tensor  # (B, L) final 2D residual norms in NDC
    base_weights: torch.Tensor | None = None  # (B, L) model x visibility weights (no robust part)


# ------------------------------------------------------------------------------------------
# pure helpers


def similarity_procrustes(src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor | None = None):
    """Weighted Umeyama: find s, R, t minimising sum w |s R src + t - dst|^2. (B,N,3) -> s (B,), R, t."""
    if w is None:
        w = torch.ones(src.shape[:2], dtype=src.dtype, device=src.device)
    w = w / w.sum(1, keepdim=True)
    mu_s = (w[..., None] * src).sum(1)
    mu_d = (w[..., None] * dst).sum(1)
    xs = src - mu_s[:, None]
    xd = dst - mu_d[:, None]
    cov = torch.einsum("bn,bni,bnj->bij", w, xd, xs)
    u, sig, vh = torch.linalg.svd(cov)
    d = torch.ones_like(sig)
    d[:, 2] = torch.sign(torch.linalg.det(u @ vh))
    r = u @ torch.diag_embed(d) @ vh
    var_s = (w * (xs * xs).sum(-1)).sum(1)
    s = (sig * d).sum(1) / var_s.clamp_min(1e-12)
    t = mu_d - s[:, None] * torch.einsum("bij,bj->bi", r, mu_s)
    return s, r, t


def _geman_mcclure(res: torch.Tensor, scale: float) -> torch.Tensor:
    r2 = (res / scale) ** 2
    return 1.0 / (1.0 + r2) ** 2


def _project_wp(points_world: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """Weak perspective of world points -> NDC xy (y down)."""
    s = cam[:, None, 0:1]
    xy = s * (points_world[..., :2] + cam[:, None, 1:3])
    return torch.stack([xy[..., 0], -xy[..., 1]], -1)


def _pose_jacobian(x_model: torch.Tensor, target: torch.Tensor, rot: torch.Tensor, cam: torch.Tensor):
    """Jacobian (B,2L,6) of the weak-perspective NDC w.r.t. (left rotation increment, s, tx, ty),
    and the residual target - projection (B,2L); rows: all x then all y."""
    r = axis_angle_to_matrix(rot)
    y = x_model @ r.transpose(-1, -2)
    s, tx, ty = cam[:, 0:1], cam[:, 1:2], cam[:, 2:3]
    u = s * (y[..., 0] + tx)
    v = -s * (y[..., 1] + ty)
    yx, yy, yz = y.unbind(-1)
    zero = torch.zeros_like(yx)
    du = torch.stack([zero, s * yz, -s * yy, yx + tx, s.expand_as(yx), zero], -1)
    dv = torch.stack([s * yz, zero, -s * yx, -(yy + ty), zero, -s.expand_as(yx)], -1)
    return torch.cat([du, dv], 1), torch.cat([target[..., 0] - u, target[..., 1] - v], 1)


def _pose_step(x_model: torch.Tensor, target: torch.Tensor, w: torch.Tensor, rot: torch.Tensor,
               cam: torch.Tensor, damping: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """One Gauss-Newton step on (rotation increment, s, tx, ty) for weak perspective."""
    jac, res = _pose_jacobian(x_model, target, rot, cam)
    ww = torch.cat([w, w], 1)
    jtw = jac.transpose(1, 2) * ww[:, None]
    h = jtw @ jac
    g = (jtw @ res[..., None])[..., 0]
    h = h + damping * torch.diag_embed(1 + h.diagonal(dim1=1, dim2=2))
    delta = _spd_solve(h, g)
    r_new = axis_angle_to_matrix(delta[:, :3]) @ axis_angle_to_matrix(rot)
    return matrix_to_axis_angle(r_new), cam + delta[:, 3:]


def _basis_jacobian(model: FaceModel, which: str, k: int, rot: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """Jacobian (B, 2L, k) of the landmarks' weak-perspective NDC (x rows then y rows) w.r.t. the
    first ``k`` coefficients of the ``which`` ("identity" | "expression") basis; the projection is
    linear in them, so this is exact."""
    basis = model.landmarks_of_basis(which)[:k].to(rot.dtype)       # (K, L, 3)
    rb = torch.einsum("bij,klj->bkli", axis_angle_to_matrix(rot), basis)  # (B,K,L,3)
    s = cam[:, 0, None, None]
    return torch.cat([s * rb[..., 0], -s * rb[..., 1]], 2).transpose(1, 2)


def _depth_rows(model: FaceModel, x_model: torch.Tensor, depth: torch.Tensor, w: torch.Tensor, rot: torch.Tensor,
                cam: torch.Tensor, n_id: int, n_exp: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Jacobian (B, L, n_id + 6 + n_exp) and residual (B, L) of the landmarks' weak-perspective depth
    ``s (R x)_z`` against a relative depth target, both centred by their ``w``-weighted mean (the
    target's depth offset is unknown). Unknowns ordered as in the joint step: identity, (rotation
    increment, s, tx, ty), expression."""
    r = axis_angle_to_matrix(rot)
    y = x_model @ r.transpose(-1, -2)
    s = cam[:, 0:1]
    yx, yy, yz = y.unbind(-1)
    zero = torch.zeros_like(yz)
    blocks = []
    if n_id:
        b_id = model.landmarks_of_basis("identity")[:n_id].to(rot.dtype)
        blocks.append(s[..., None] * torch.einsum("bj,klj->blk", r[:, 2], b_id))
    blocks.append(torch.stack([s * yy, -s * yx, zero, yz, zero, zero], -1))
    if n_exp:
        b_ex = model.landmarks_of_basis("expression")[:n_exp].to(rot.dtype)
        blocks.append(s[..., None] * torch.einsum("bj,klj->blk", r[:, 2], b_ex))
    jac = torch.cat(blocks, 2)
    wn = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    jac = jac - (wn[..., None] * jac).sum(1, keepdim=True)
    pred = s * yz
    res = (depth - (wn * depth).sum(1, keepdim=True)) - (pred - (wn * pred).sum(1, keepdim=True))
    return jac, res


def _spd_solve(h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Solve H x = g for batched symmetric positive definite H (B,K,K), g (B,K) by Cholesky."""
    chol, info = torch.linalg.cholesky_ex(h)
    if bool((info != 0).any()):
        jitter = 1e-9 * h.diagonal(dim1=-2, dim2=-1).abs().mean(-1).clamp_min(1e-12)
        chol = torch.linalg.cholesky(h + torch.diag_embed(jitter[:, None].expand(-1, h.shape[-1]) * 1e3))
    return torch.cholesky_solve(g[..., None], chol)[..., 0]


def _solve_box(h: torch.Tensor, g: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
               iterations: int = 12) -> torch.Tensor:
    """Minimise 0.5 x'Hx - g'x subject to lo <= x <= hi (batched, H positive definite).

    Active-set method: variables that leave their box are fixed at the bound; a fixed variable is
    released again when its gradient points back into the box (KKT check), until nothing changes.
    """
    eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
    at_lo = torch.zeros_like(g, dtype=torch.bool)
    at_hi = torch.zeros_like(g, dtype=torch.bool)
    x = _spd_solve(h, g)
    for _ in range(iterations):
        viol_lo = (x < lo - 1e-9) & ~at_lo & ~at_hi
        viol_hi = (x > hi + 1e-9) & ~at_lo & ~at_hi
        changed = viol_lo | viol_hi
        at_lo = at_lo | viol_lo
        at_hi = at_hi | viol_hi
        if not bool(changed.any()):
            grad = (h @ x[..., None])[..., 0] - g
            release = (at_lo & (grad < -1e-12)) | (at_hi & (grad > 1e-12))
            if not bool(release.any()):
                break
            at_lo = at_lo & ~release
            at_hi = at_hi & ~release
        active = at_lo | at_hi
        fixed = torch.where(at_lo, lo, torch.where(at_hi, hi, torch.zeros_like(x)))
        free = (~active).to(h.dtype)
        h2 = h * free[:, :, None] * free[:, None, :] + eye * (1 - free)[:, :, None]
        g2 = (g - (h @ fixed[..., None])[..., 0]) * free
        x = _spd_solve(h2, g2) * free + fixed
    return x.clamp(lo, hi)


def _landmark_normals_z(model: FaceModel, verts_world: torch.Tensor) -> torch.Tensor:
    """z of the surface normal at each landmark (world frame, +z faces the camera)."""
    tri = model.faces[model.landmark_faces]
    p = verts_world[:, tri]                         # (B,L,3,3)
    n = torch.cross(p[:, :, 1] - p[:, :, 0], p[:, :, 2] - p[:, :, 0], dim=-1)
    n = torch.nn.functional.normalize(n, dim=-1)
    return n[..., 2]


# ------------------------------------------------------------------------------------------
# the driver


@contextlib.contextmanager
def small_problem_threads(n: int = 1):
    """Run a block of many tiny tensor ops on ``n`` intra-op threads (restored afterwards).

    The solvers work on ~150x150 matrices, where OpenMP/MKL threading only adds synchronisation:
    measured here, one fit took 34 ms on 1 thread and 176 ms on 2 threads while the other core was
    busy. Only applies on the CPU; torch's thread count is process-global while the block runs."""
    old = torch.get_num_threads()
    if old <= n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def fit_landmarks(
    model: FaceModel,
    target: torch.Tensor,
    depth: torch.Tensor | None = None,
    config: LandmarkFitConfig | None = None,
    share_identity: bool = False,
    fixed_identity: torch.Tensor | None = None,
    init: LandmarkFitResult | None = None,
) -> LandmarkFitResult:
    """Fit identity, expression and weak-perspective pose to landmarks.

    ``target`` (B, L, 2): NDC of the model's landmarks (ordered as ``model.landmark_index``);
    ``depth`` (B, L) optional relative depth in the same NDC units (larger = nearer) for the
    initial 3D alignment and the depth term (``config.depth_weight``). ``share_identity``: one identity for the whole batch (an album or a video);
    ``fixed_identity`` (1 or B, K_id): keep identity fixed.
    """
    if target.device.type == "cpu":
        with small_problem_threads(1):
            return _fit_landmarks(model, target, depth, config, share_identity, fixed_identity, init)
    return _fit_landmarks(model, target, depth, config, share_identity, fixed_identity, init)


def _fit_landmarks(model, target, depth, config, share_identity, fixed_identity, init) -> LandmarkFitResult:
    cfg = config or LandmarkFitConfig()
    dtype = target.dtype
    dev = target.device
    b, n_lm = target.shape[:2]
    n_id = model.n_identity if cfg.fit_identity else 0
    n_exp = model.n_expression if cfg.fit_expression else 0
    lw = model.landmark_weight.to(dtype)[None].expand(b, -1)

    identity = torch.zeros(b, model.n_identity, dtype=dtype, device=dev)
    if fixed_identity is not None:
        identity = fixed_identity.to(dtype).expand(b, -1).clone()
        n_id = 0
    expression = torch.zeros(b, model.n_expression, dtype=dtype, device=dev)
    jaw = torch.zeros(b, 3, dtype=dtype, device=dev)

    def shape_vertices() -> torch.Tensor:
        return model(identity, expression, jaw).to(dtype)

    # ---- initial pose: 3D similarity on the mean shape --------------------------------
    if init is not None:
        rot, cam = init.rotation.to(dtype).clone(), init.camera.to(dtype).clone()
        if fixed_identity is None:
            identity = init.identity.to(dtype).expand(b, -1).clone()
        expression = init.expression.to(dtype).clone()
    else:
        lm0 = model.landmarks(shape_vertices())
        if depth is not None and cfg.use_depth_init:
            dst = torch.stack([target[..., 0], -target[..., 1], depth], -1)
            # the depth offset is unknown: centre both
            dst = dst - dst.mean(1, keepdim=True)
            s, r, t = similarity_procrustes(lm0, dst, lw)
        else:
            # 2D-only: assume frontal, fit scale + translation
            dst2 = torch.stack([target[..., 0], -target[..., 1]], -1)
            src2 = lm0[..., :2]
            ms, md = src2.mean(1), dst2.mean(1)
            s = ((dst2 - md[:, None]) * (src2 - ms[:, None])).sum((1, 2)) / ((src2 - ms[:, None]) ** 2).sum((1, 2))
            r = torch.eye(3, dtype=dtype, device=dev).expand(b, 3, 3)
            t = torch.cat([md - s[:, None] * ms, torch.zeros(b, 1, dtype=dtype, device=dev)], 1)
        rot = matrix_to_axis_angle(r)
        # world = R x ; ndc = s (world + t') -> t' = t / s (x, y); y of dst is "up"
        cam = torch.stack([s, t[:, 0] / s, t[:, 1] / s], 1)

    robust = torch.ones(b, n_lm, dtype=dtype, device=dev)
    vis = torch.ones(b, n_lm, dtype=dtype, device=dev)
    # unknowns of the joint Gauss-Newton step: [identity (n_id) | pose (6) | expression (n_exp)]
    k_all = n_id + 6 + n_exp
    lo = torch.full((b, k_all), -1e4, dtype=dtype, device=dev)
    hi = torch.full((b, k_all), 1e4, dtype=dtype, device=dev)
    prior = torch.cat([torch.full((n_id,), cfg.identity_prior), torch.zeros(6),
                       torch.full((n_exp,), cfg.expression_prior)]).to(dtype=dtype, device=dev)
    rng = model.expression_range if n_exp else None

    # pose only first (two steps on the mean / initial shape)
    lm = model.landmarks(shape_vertices())
    for _ in range(3):
        rot, cam = _pose_step(lm, target, lw, rot, cam)

    for it in range(cfg.iterations):
        verts = shape_vertices()
        lm = model.landmarks(verts)
        w = lw * robust * vis
        jp, res = _pose_jacobian(lm, target, rot, cam)             # (B,2L,6), (B,2L)
        blocks = []
        if n_id:
            blocks.append(_basis_jacobian(model, "identity", n_id, rot, cam))
        blocks.append(jp)
        if n_exp:
            blocks.append(_basis_jacobian(model, "expression", n_exp, rot, cam))
        jac = torch.cat(blocks, 2)                                  # (B,2L,k_all)
        ww = torch.cat([w, w], 1)
        if depth is not None and cfg.depth_weight > 0:
            # MediaPipe's relative depth: pins the rotation that 2D landmarks leave ambiguous with
            # the shape (a pitched face vs a shorter one)
            jd, rd = _depth_rows(model, lm, depth, w, rot, cam, n_id, n_exp)
            jac = torch.cat([jac, jd], 1)
            res = torch.cat([res, rd], 1)
            ww = torch.cat([ww, cfg.depth_weight * w], 1)
        jtw = jac.transpose(1, 2) * ww[:, None]
        h = jtw @ jac
        g = (jtw @ res[..., None])[..., 0]
        wsum = w.sum(1).clamp_min(1e-6)[:, None]
        cur = torch.cat([identity[:, :n_id], torch.zeros(b, 6, dtype=dtype, device=dev), expression[:, :n_exp]], 1)
        # loss = sum w |r|^2 + sum(w) * prior . x^2  ->  (J'WJ + P) d = J'W r - P x
        pd = prior[None] * wsum
        h = h + torch.diag_embed(pd)
        h = h + torch.diag_embed(1e-6 * (1 + h.diagonal(dim1=1, dim2=2)))  # LM damping
        g = g - pd * cur
        if rng is not None:
            lo[:, n_id + 6:] = rng[0] - expression
            hi[:, n_id + 6:] = rng[1] - expression
        if share_identity and n_id > 0 and b > 1:
            d = _solve_shared(h, g, n_id, lo, hi)
        else:
            d = _solve_box(h, g, lo, hi)
        if n_id:
            identity = identity + d[:, :n_id]
        dp = d[:, n_id:n_id + 6]
        rot = matrix_to_axis_angle(axis_angle_to_matrix(dp[:, :3]) @ axis_angle_to_matrix(rot))
        cam = cam + dp[:, 3:]
        if n_exp:
            expression = expression + d[:, n_id + 6:]
            if rng is not None:
                expression = expression.clamp(rng[0], rng[1])
        # robust + visibility weights from the current fit
        verts = shape_vertices()
        world = pose_vertices(verts, rot)
        lm_ndc = _project_wp(model.landmarks(world), cam)
        r_norm = (lm_ndc - target).norm(dim=-1)
        if it >= 2:
            robust = _geman_mcclure(r_norm, cfg.robust_scale)
        nz = _landmark_normals_z(model, world)
        vis = cfg.visibility_floor + (1 - cfg.visibility_floor) * torch.sigmoid((nz + 0.1) * 12)

    if share_identity and identity.shape[0] > 1:
        identity = identity[:1].expand(b, -1).clone()
    verts = shape_vertices()
    world = pose_vertices(verts, rot)
    lm_ndc = _project_wp(model.landmarks(world), cam)
    r_norm = (lm_ndc - target).norm(dim=-1)
    return LandmarkFitResult(identity, expression, rot, cam, jaw, lw * robust * vis, r_norm, lw * vis)


def _solve_shared(h: torch.Tensor, g: torch.Tensor, n_id: int, lo: torch.Tensor, hi: torch.Tensor,
                  rounds: int = 4) -> torch.Tensor:
    """Per-image systems coupled by one shared identity block (the first ``n_id`` unknowns).

    The identity comes from the exact Schur complement of the per-image blocks (ignoring the box),
    then the box-constrained per-image unknowns and the identity are polished by block descent.
    """
    b, k, _ = h.shape
    hii, hio, hoo = h[:, :n_id, :n_id], h[:, :n_id, n_id:], h[:, n_id:, n_id:]
    gi, go = g[:, :n_id], g[:, n_id:]
    chol, _ = torch.linalg.cholesky_ex(hoo)
    hoo_inv_hoi = torch.cholesky_solve(hio.transpose(1, 2), chol)           # (B, k_o, n_id)
    hoo_inv_go = torch.cholesky_solve(go[..., None], chol)[..., 0]          # (B, k_o)
    schur = (hii - hio @ hoo_inv_hoi).sum(0)
    rhs = (gi - torch.einsum("bij,bj->bi", hio, hoo_inv_go)).sum(0)
    ident = _spd_solve(schur[None], rhs[None])[0]
    own = torch.zeros(b, k - n_id, dtype=h.dtype, device=h.device)
    for _ in range(rounds):
        go2 = go - torch.einsum("bji,j->bi", hio, ident)
        own = _solve_box(hoo, go2, lo[:, n_id:], hi[:, n_id:])
        gi2 = gi - torch.einsum("bij,bj->bi", hio, own)
        ident_new = _spd_solve(hii.sum(0)[None], gi2.sum(0)[None])[0]
        if torch.allclose(ident_new, ident, atol=1e-10, rtol=1e-8):
            break
        ident = ident_new
    return torch.cat([ident[None].expand(b, -1), own], 1)


def refine_lbfgs(
    model: FaceModel,
    target: torch.Tensor,
    weights: torch.Tensor,
    identity: torch.Tensor,
    expression: torch.Tensor,
    jaw_pose: torch.Tensor,
    rotation: torch.Tensor,
    camera: torch.Tensor,
    camera_kind: str = "weak_perspective",
    focal: float = 12.0,
    steps: int = 30,
    identity_prior: float = 1e-7,
    expression_prior: float = 1e-8,
    fit_identity: bool = True,
    robust_scale: float = 0.05,
) -> dict[str, torch.Tensor]:
    """Gradient refinement of all parameters (any model, any camera) with L-BFGS.

    ``weights`` (B, L): per-landmark weights, best without a robust part (``base_weights`` of the
    Gauss-Newton result): the pseudo-Huber loss here does its own outlier handling."""
    params = {
        "identity": identity.detach().clone().requires_grad_(fit_identity),
        "expression": expression.detach().clone().requires_grad_(True),
        "jaw_pose": jaw_pose.detach().clone().requires_grad_(model.has_jaw_joint),
        "rotation": rotation.detach().clone().requires_grad_(True),
        "camera": camera.detach().clone().requires_grad_(True),
    }
    train = [p for p in params.values() if p.requires_grad]
    opt = torch.optim.LBFGS(train, lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")
    rng = model.expression_range
    w = weights.detach()
    n = w.sum()
    delta2 = robust_scale ** 2

    def closure():
        opt.zero_grad()
        e = params["expression"]
        if rng is not None:
            e = e.clamp(rng[0], rng[1]) + 0 * e
        v = model(params["identity"], e, params["jaw_pose"])
        world = pose_vertices(v, params["rotation"])
        ndc = project(model.landmarks(world), params["camera"], camera_kind, focal)[..., :2]
        r2 = ((ndc - target) ** 2).sum(-1)
        # pseudo-Huber: quadratic near 0, linear for residuals beyond robust_scale (outliers count less,
        # but a part the linear fit could not explain, e.g. a jaw joint, still pulls)
        loss = (w * delta2 * (torch.sqrt(1 + r2 / delta2) - 1)).sum() / n
        loss = loss + identity_prior * (params["identity"] ** 2).sum() / target.shape[0] / target.shape[1]
        loss = loss + expression_prior * (params["expression"] ** 2).sum() / target.shape[0] / target.shape[1]
        loss = loss + 1e-7 * (params["jaw_pose"] ** 2).sum() / target.shape[0]
        loss.backward()
        return loss

    opt.step(closure)
    out = {k: v.detach() for k, v in params.items()}
    if rng is not None:
        out["expression"] = out["expression"].clamp(rng[0], rng[1])
    return out
