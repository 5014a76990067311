"""Time per image of each evaluation metric on this machine (CPU). Run: python benchmarks/bench_metrics.py

Uses package photos only (skimage astronaut, matplotlib grace_hopper); LPIPS/Inception run with
random weights in the real layouts (the cost does not depend on the values).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch


def _photos() -> list[np.ndarray]:
    import matplotlib
    from PIL import Image
    from skimage import data

    g = np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB"))
    return [data.astronaut(), np.ascontiguousarray(g[:512, :512])]


def timeit(label: str, fn, n_items: int, repeat: int = 3) -> None:  # noqa: ANN001
    fn()  # warm-up (lazy loads, caches)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    print(f"{label:58s} {1000 * best / n_items:9.1f} ms/image")


def main() -> None:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from facerig.eval import dlib_port as dp
    from facerig.eval import identity as idm
    from facerig.eval import image_quality as iq

    imgs = _photos()
    a, b = imgs
    print(f"torch threads: {torch.get_num_threads()}")
    t = time.perf_counter()
    dp._load_cached.cache_clear()
    dp.load_dlib_resnet(use_cache=False)
    print(f"{'dlib .dat -> torch conversion (first use, no cache)':58s} {1000 * (time.perf_counter() - t):9.1f} ms")
    net = dp.load_dlib_resnet()
    timeit("dlib_embed (HOG + 5pt + dlib ResNet), 512 px", lambda: idm.dlib_embed(imgs), 2)
    timeit("dlib_embed backend=port (HOG + 5pt + torch ResNet)", lambda: idm.dlib_embed(imgs, backend="port"), 2)
    pts = [idm.dlib_landmarks5(im) for im in imgs]
    timeit("dlib_embed given landmarks (dlib ResNet only)", lambda: idm.dlib_embed(imgs, landmarks5=pts), 2)
    x = torch.stack([torch.from_numpy(im.copy()).permute(2, 0, 1).float() / 255 for im in imgs])
    p5 = torch.from_numpy(np.stack(pts))
    with torch.no_grad():
        timeit("port_embed (torch chip warp + ResNet), no grad", lambda: idm.port_embed(x, p5, net), 2)
    loss = idm.IdentityLoss(net=net)
    loss.set_target(x, p5)

    def fwd_bwd() -> None:
        xx = x.clone().requires_grad_(True)
        loss(xx, p5).backward()

    timeit("IdentityLoss forward + backward", fwd_bwd, 2)
    timeit("psnr 512x512", lambda: iq.psnr(a, b), 1)
    timeit("ssim 512x512", lambda: iq.ssim(a, b), 1)
    lp = iq.LPIPS("alex")
    timeit("lpips alex 256x256 (random weights)", lambda: iq.lpips(x[:, :, :256, :256], x.flip(0)[:, :, :256, :256], lp), 2)
    lv = iq.LPIPS("vgg")
    timeit("lpips vgg 256x256 (random weights)", lambda: iq.lpips(x[:, :, :256, :256], x.flip(0)[:, :, :256, :256], lv), 2)
    inc = iq.InceptionV3FID().eval()
    timeit("Inception-v3 FID features (299x299, random weights)", lambda: iq.fid_features(x, inc), 2)
    f = np.random.default_rng(0).normal(size=(500, 2048))
    timeit("frechet_distance 2048-d, 500 vs 500 (per set)", lambda: iq.frechet_distance(f, f + 0.1), 1, repeat=1)

    from facerig.eval import video

    frames = [np.ascontiguousarray(np.roll(a, 2 * k, axis=1)) for k in range(4)]
    timeit("temporal_warping_error 512x512 (per frame pair)", lambda: video.temporal_warping_error(frames, frames), 3)
    from facerig.detect import FaceDetector

    det = FaceDetector()
    timeit("landmark_jitter (MediaPipe per frame)", lambda: video.landmark_jitter(frames, detector=det), 4)
    from facerig.eval.edit_accuracy import edit_accuracy
    from facerig.fit.api import FitConfig, fit_image

    p = fit_image(a, detector=det).params
    timeit("edit_accuracy re-fit (fit_image incl. photometric)", lambda: edit_accuracy(p, [a], detector=det), 1,
           repeat=1)
    cfg = FitConfig(photometric=False)
    timeit("edit_accuracy re-fit (landmarks only)", lambda: edit_accuracy(p, [a], detector=det, fit_config=cfg), 1,
           repeat=1)


if __name__ == "__main__":
    main()
