"""The PyTorch TV-L1 (datamodules/face/tvl1_torch.py) against OpenCV's DualTVL1 and known flow.

Expectations come from OpenCV (cv2.optflow.DualTVL1OpticalFlow, cv2.remap, cv2.resize,
cv2.medianBlur) or from the synthetic ground truth, never from the module's own layers.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import yaml
from jsonargparse import ArgumentError

from datamodules import SyntheticDataModule
from datamodules.databases.prepare import PrepareSettings
from datamodules.face.tvl1_torch import (
    TVL1Work, divergence, forward_gradient, median_filter, resize_linear, tvl1_flow, warp_bicubic,
)
from datamodules.preprocessing import TVL1Settings, flow_sequence
from experiments.main import mer_main
from experiments.prepare import build_parser

from tests.conftest import require_shared, run_in_process
from tests.helpers.release_replica import write_replica

SIZE = 80


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread each for torch and OpenCV: small images gain little from two, and a loaded CI
    machine makes two spinning threads crawl."""
    torch_threads, opencv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(torch_threads)
    cv2.setNumThreads(opencv_threads)


def end_point_error(flow: np.ndarray, reference: np.ndarray, margin: int = 0) -> float:
    """Mean Euclidean distance of two (2, H, W) flows, optionally without a border of `margin` px."""
    distance = np.sqrt(((flow - reference) ** 2).sum(axis=0))
    return float(distance[margin:distance.shape[0] - margin, margin:distance.shape[1] - margin].mean())


def textured_pair(seed: int, size: int = SIZE, amplitude: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, true flow): a smooth random texture and the same texture moved by a smooth
    sinusoidal field, second(x + u(x)) ≈ first(x) (second sampled at x - u, exact to first order)."""
    rng = np.random.default_rng(seed)
    texture = cv2.resize(rng.random((size // 4, size // 4)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    texture = cv2.GaussianBlur(texture, (0, 0), 1.0)
    first = (texture - texture.min()) / (texture.max() - texture.min()) * 200 + 20
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    a, b, c, d = (rng.random(4) * 2 * np.pi).astype(np.float32)
    u = amplitude * np.sin(2 * np.pi * xs / size + a) * np.cos(np.pi * ys / size + b)
    v = amplitude * np.cos(np.pi * xs / size + c) * np.sin(2 * np.pi * ys / size + d)
    second = cv2.remap(first, xs - u, ys - v, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return np.rint(first).astype(np.uint8), np.rint(second).astype(np.uint8), np.stack([u, v])


def opencv_flow(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    return cv2.optflow.DualTVL1OpticalFlow_create().calc(first, second, None).transpose(2, 0, 1)


def torch_flow(firsts: list[np.ndarray], seconds: list[np.ndarray]) -> np.ndarray:
    return tvl1_flow(torch.from_numpy(np.stack(firsts)).float(), torch.from_numpy(np.stack(seconds)).float()).numpy()


@pytest.fixture(scope="module")
def synthetic_pairs() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [textured_pair(seed) for seed in range(3)]


def test_flow_of_known_motion_matches_truth_and_opencv(synthetic_pairs):
    flows = torch_flow([p[0] for p in synthetic_pairs], [p[1] for p in synthetic_pairs])
    for (first, second, truth), flow in zip(synthetic_pairs, flows):
        reference = opencv_flow(first, second)
        ours, theirs = end_point_error(flow, truth, margin=8), end_point_error(reference, truth, margin=8)
        assert ours < 0.3, f"EPE against the true flow {ours:.3f} px"
        assert ours < theirs + 0.02, f"EPE against the truth: ours {ours:.3f}, OpenCV {theirs:.3f}"
        assert end_point_error(flow, reference) < 0.05  # the target is 0.1; measured ≤ 0.02


def test_pairs_are_independent_of_their_batch(synthetic_pairs):
    """A pair alone and among others (which converge after different numbers of iterations)."""
    first, second, _ = synthetic_pairs[0]
    alone = torch_flow([first], [second])[0]
    others = [textured_pair(seed, amplitude=3.0) for seed in (10, 11)]
    batched = torch_flow([others[0][0], first, others[1][0]], [others[0][1], second, others[1][1]])[1]
    assert np.abs(batched - alone).max() < 1e-4


@pytest.mark.gpu
def test_flow_on_cuda_matches_the_cpu_and_opencv(synthetic_pairs):
    """The same batch on the GPU: per pair, the CPU's flow within float rounding, and OpenCV's and the
    true flow as closely as on the CPU (TF32 off: the GPU computes in float32 like the CPU)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        firsts = torch.from_numpy(np.stack([p[0] for p in synthetic_pairs])).float()
        seconds = torch.from_numpy(np.stack([p[1] for p in synthetic_pairs])).float()
        on_gpu = tvl1_flow(firsts.cuda(), seconds.cuda())
        assert on_gpu.device.type == "cuda"
        on_gpu = on_gpu.cpu().numpy()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    on_cpu = tvl1_flow(firsts, seconds).numpy()
    for (first, second, truth), gpu, cpu in zip(synthetic_pairs, on_gpu, on_cpu):
        assert end_point_error(gpu, cpu) < 0.02  # torch vs OpenCV measured 0.002-0.025: the same rounding amplification
        assert end_point_error(gpu, opencv_flow(first, second)) < 0.05
        assert end_point_error(gpu, truth, margin=8) < 0.3


def video_frames(path: str, start: int, count: int, size: int = 144) -> np.ndarray:
    """`count` grey frames from `start`, the central square resized to size² (a face crop stand-in)."""
    capture = cv2.VideoCapture(path)
    capture.set(cv2.CAP_PROP_POS_FRAMES, start)
    frames = []
    for _ in range(count):
        ok, frame = capture.read()
        assert ok, f"{path}: cannot read frame"
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        height, width = grey.shape
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        frames.append(cv2.resize(grey[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA))
    capture.release()
    return np.stack(frames)


@pytest.mark.slow
@pytest.mark.parametrize("video", ["single_face.mp4", "WolfgangLanger_Pexels.mp4"])
def test_flow_of_real_face_video_matches_opencv(video):
    path = require_shared(f"data/video/{video}")
    grey = video_frames(str(path), start=10, count=4)
    ours = flow_sequence(grey, backend="torch")  # frame k against frame 0, as the pipeline does
    for flow, frame in zip(ours, grey[1:]):
        assert end_point_error(flow, opencv_flow(grey[0], frame)) < 0.05  # the target is 0.1; measured ≤ 0.03


def test_flow_backend_in_the_cache_key_only_when_torch(tmp_path):
    default = SyntheticDataModule(cache_dir=str(tmp_path)).cache_settings()
    assert "flow_backend" not in default and "flow_backend" not in PrepareSettings().as_dict()
    assert SyntheticDataModule(cache_dir=str(tmp_path), flow="torch").cache_settings() == {**default, "flow_backend": "torch"}
    assert PrepareSettings(flow_backend="torch").as_dict()["flow_backend"] == "torch"


def test_mer_prepare_takes_the_flow_backend():
    assert build_parser().parse_args(["casme2", "--flow", "torch"]).data.flow == "torch"
    with pytest.raises(ArgumentError, match="cuda"):  # `mer prepare` words it in one line (exit code 2)
        build_parser().parse_args(["casme2", "--flow", "cuda"])


def test_mer_prepare_flow_torch_matches_opencv_on_a_release(tmp_path, capsys):
    """`mer prepare --config ... --flow torch` on a replica of a CASME II release: a second cache
    whose flow (and the composite apex image made from it) follows OpenCV's."""
    replica = write_replica("casme2", tmp_path / "release", n_subjects=1, clips_per_subject=2, breaks=())
    init_args = {"root": str(replica.root), "annotations": str(replica.sheet), "release": replica.release,
                 "num_frames": 3, "image_size": 64, "tvl1": {"nscales": 3}, "cache_dir": str(tmp_path / "cache"),
                 "prepare_workers": 1}
    config = tmp_path / "casme2.yaml"
    config.write_text(yaml.safe_dump({"data": {"class_path": "datamodules.CASME2DataModule", "init_args": init_args}}))
    caches = {}
    for flow in ("opencv", "torch"):
        code, out, err = run_in_process(mer_main, ["prepare", "--config", str(config), "--flow", flow], capsys)
        assert code == 0, err
        caches[flow] = next(line.split()[1] for line in out.splitlines() if line.startswith("cache: "))
    assert caches["opencv"] != caches["torch"]
    ours, theirs = (np.load(f"{caches[flow]}/flow.npy").astype(np.float32) for flow in ("torch", "opencv"))
    assert ours.shape == theirs.shape and np.abs(theirs).max() > 0.1
    for a, b in zip(ours.reshape(-1, *ours.shape[-3:]), theirs.reshape(-1, *theirs.shape[-3:])):
        assert end_point_error(a, b) < 0.05


def test_synthetic_cache_with_torch_flow_matches_opencv_cache(tmp_path):
    settings = {"n_subjects": 2, "clips_per_subject": 1, "image_size": 48, "num_frames": 3, "prepare_workers": 1,
                "cache_dir": str(tmp_path), "tvl1": TVL1Settings(nscales=3)}
    torch_cache = SyntheticDataModule(**settings, flow="torch").cache
    opencv_cache = SyntheticDataModule(**settings).cache
    assert torch_cache.directory != opencv_cache.directory
    ours, theirs = np.asarray(torch_cache.array("flow"), np.float32), np.asarray(opencv_cache.array("flow"), np.float32)
    assert ours.shape == theirs.shape and np.abs(theirs).max() > 0.1
    for a, b in zip(ours.reshape(-1, *ours.shape[-3:]), theirs.reshape(-1, *theirs.shape[-3:])):
        assert end_point_error(a, b) < 0.1


def test_work_counts_and_bad_input():
    first, second, _ = textured_pair(0, size=32)
    work = TVL1Work()
    tvl1_flow(torch.from_numpy(first)[None].float(), torch.from_numpy(second)[None].float(), nscales=1, warps=2, work=work)
    assert work.warps == 2 * 32 * 32 and 0 < work.iterations <= 2 * 300 * 32 * 32 and work.medians > 0
    with pytest.raises(ValueError, match="shape"):
        tvl1_flow(torch.zeros(1, 8, 8), torch.zeros(1, 8, 9))
    with pytest.raises(ValueError, match="backend"):
        flow_sequence(np.zeros((2, 8, 8), np.uint8), backend="cuda")


# -- the building blocks against OpenCV ------------------------------------------------------------

@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return (np.random.default_rng(0).random((37, 45)) * 255).astype(np.float32)


def test_pyramid_and_upsampling_resize_match_cv2(image):
    down = cv2.resize(image, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    ours = resize_linear(torch.from_numpy(image)[None], down.shape, 1 / 0.8)[0].numpy()
    np.testing.assert_allclose(ours, down, atol=1e-3)
    up = cv2.resize(down, (45, 37), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(resize_linear(torch.from_numpy(down)[None], (37, 45))[0].numpy(), up, atol=1e-3)


def test_bicubic_warp_matches_cv2_remap_with_zero_border(image):
    flow = (np.random.default_rng(1).random((2, 37, 45)) * 8 - 4).astype(np.float32)  # reaches past the borders
    ys, xs = np.mgrid[0:37, 0:45].astype(np.float32)
    expected = cv2.remap(image, xs + flow[0], ys + flow[1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ours = warp_bicubic(torch.from_numpy(image)[None, None], torch.from_numpy(flow)[None])[0, 0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-2)


@pytest.mark.parametrize("size", [3, 5])
def test_median_filter_equals_cv2_median_blur(image, size):
    ours = median_filter(torch.from_numpy(image)[None, None], size)[0, 0].numpy()
    np.testing.assert_array_equal(ours, cv2.medianBlur(image, size))


def test_divergence_is_the_negative_adjoint_of_the_forward_gradient():
    """<∇u, p> = -<u, div p> for any u and p (IPOL eq. 25), checked with random fields."""
    rng = np.random.default_rng(2)
    u = torch.from_numpy(rng.standard_normal((1, 1, 9, 11))).double()
    p = torch.from_numpy(rng.standard_normal((1, 2, 1, 9, 11))).double()
    grad = forward_gradient(u, torch.zeros_like(p))
    p[:, 0, ..., -1] = 0  # the dual lives where the gradient is defined (OpenCV's p stays 0 there)
    p[:, 1, ..., -1, :] = 0
    assert torch.isclose((grad * p).sum(), -(u * divergence(p)).sum())
