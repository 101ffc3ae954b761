"""The --gpu-decode path gives the tensors of core's PIL preprocessing, on CPU and (where present)
CUDA.

Tolerance: decoders and bicubic resamplers round differently, so a value may differ by a few uint8
levels on edges. On CPU (libjpeg in both paths) we allow 3 levels per value (3/255 over the smallest
std, 0.046 after normalisation) and a mean difference of 0.002; on CUDA (nvJPEG's own IDCT and
chroma upsampling) a mean difference of 0.01 (below one uint8 level) and 0.25 per value.
"""

from __future__ import annotations

import gc
import io
import random

import pytest
import torch
from PIL import Image

from biocap_core.errors import GpuDecodeUnavailable
from biocap_core.gpu_decode import DevicePreprocess, require_cuda
from biocap_core.preprocess import decode_image, image_transform
from biocap_core.toy import BACKGROUNDS, TILTS, make_species, render

# At most 5 levels of 255 on any pixel: PIL's and torchvision's antialiased resizes differ most on
# hard high-contrast edges (a toy's marks with their pale rims); the mean bound keeps the whole
# image within 0.002.
CPU_MAX, CPU_MEAN = 5 / 255 / 0.2613, 0.002
CUDA_MAX, CUDA_MEAN = 0.25, 0.01


def _photo(i: int, size: tuple[int, int], mode: str = "RGB", fmt: str = "JPEG") -> bytes:
    """A toy organism photo (smooth shapes and edges, like a real one) encoded at ``size``."""
    rng = random.Random(i)
    img = render(make_species(4)[i % 4], rng, 256, rng.choice(list(BACKGROUNDS)), rng.choice(TILTS))
    buf = io.BytesIO()
    img.resize(size, Image.BICUBIC).convert(mode).save(
        buf, fmt, **({"quality": 90} if fmt == "JPEG" else {})
    )
    return buf.getvalue()


@pytest.fixture(scope="module")
def sources() -> list[bytes]:
    return [
        _photo(0, (500, 375)),
        _photo(1, (375, 500)),
        _photo(2, (224, 224)),
        _photo(3, (1024, 683)),
        _photo(4, (300, 150), mode="L"),  # greyscale JPEG: decoded to RGB
        _photo(5, (320, 240), fmt="PNG"),  # not a JPEG: decoded by PIL in the worker
        _photo(6, (200, 180), mode="CMYK"),
    ]  # CMYK JPEG: decoded by PIL in the worker


def _assert_close(out: torch.Tensor, ref: torch.Tensor, max_diff: float, mean_diff: float) -> None:
    assert out.shape == ref.shape and out.dtype == torch.float32
    diff = (out.float().cpu() - ref).abs()
    assert diff.amax() <= max_diff, diff.amax(dim=(1, 2, 3))
    assert diff.mean(dim=(1, 2, 3)).amax() <= mean_diff, diff.mean(dim=(1, 2, 3))


def _device_batch(prep: DevicePreprocess, sources, device, dtype=torch.float32) -> torch.Tensor:
    """The whole batch as the device path gives it: encoded in the workers, decoded on
    ``device``."""
    images, kept, failed = prep.apply(
        prep.collate([prep.encode(s) for s in sources]), device, dtype
    )
    assert kept == list(range(len(sources))) and not failed, failed
    return images


def _eval_reference(sources, size):
    return torch.stack([image_transform(size, train=False)(decode_image(s)) for s in sources])


def _train_pair(sources, size, device):
    """(device path, PIL path) of the train transform, each from the same seed."""
    prep, pil = DevicePreprocess(size, train=True), image_transform(size, train=True)
    torch.manual_seed(7)
    out = _device_batch(prep, sources, device)
    torch.manual_seed(7)
    ref = torch.stack([pil(decode_image(s)) for s in sources])
    return out, ref


def test_eval_batch_matches_the_pil_transform_on_cpu(sources):
    out = _device_batch(DevicePreprocess(224, train=False), sources, "cpu")
    _assert_close(out, _eval_reference(sources, 224), CPU_MAX, CPU_MEAN)


def test_train_batch_draws_the_pil_transforms_crops_from_the_same_seed(sources):
    out, ref = _train_pair(sources, 96, "cpu")
    _assert_close(out, ref, CPU_MAX, CPU_MEAN)


def test_workers_hand_over_jpeg_bytes_and_decode_only_the_rest(sources):
    prep = DevicePreprocess(224, train=False)
    batch = prep.collate([prep.encode(s) for s in sources])
    assert [x.ndim for x in batch.images] == [1, 1, 1, 1, 1, 3, 3]
    assert bytes(batch.images[0].numpy()) == sources[0] and batch.boxes is None


@pytest.mark.filterwarnings("error")  # an unclosed file warns (ResourceWarning) when collected
def test_a_file_is_read_to_its_bytes_and_closed(sources, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(sources[0])
    pixels, box = DevicePreprocess(224, train=False).encode(path)
    gc.collect()
    assert bytes(pixels.numpy()) == sources[0] and box is None


def test_a_truncated_jpeg_fails_in_the_worker_like_the_cpu_path(sources):
    with pytest.raises(OSError):
        DevicePreprocess(224, train=False).encode(sources[0][: len(sources[0]) // 2])


def test_a_jpeg_only_the_device_finds_broken_is_reported_at_its_position(sources):
    broken = bytearray(sources[2])
    broken[sources[2].index(b"\xff\xda") + 5] = 9  # the scan names a component the frame lacks
    prep = DevicePreprocess(64, train=False)
    batch = prep.collate([prep.encode(s) for s in (sources[0], bytes(broken), sources[5])])
    images, kept, failed = prep.apply(batch, "cpu")
    assert (
        kept == [0, 2]
        and [i for i, _ in failed] == [1]
        and "cannot decode as an image" in failed[0][1]
    )
    _assert_close(images, _eval_reference([sources[0], sources[5]], 64), CPU_MAX, CPU_MEAN)


def test_pure_bf16_runs_get_the_batch_in_their_dtype(sources):
    prep = DevicePreprocess(64, train=False)
    assert _device_batch(prep, sources[:2], "cpu", dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvJPEG)")
def test_eval_and_train_batches_match_the_pil_transform_on_cuda(sources):
    out = _device_batch(DevicePreprocess(224, train=False), sources, "cuda")
    assert out.device.type == "cuda"
    _assert_close(out, _eval_reference(sources, 224), CUDA_MAX, CUDA_MEAN)
    _assert_close(*_train_pair(sources, 224, "cuda"), CUDA_MAX, CUDA_MEAN)


def test_gpu_decode_is_refused_without_cuda(monkeypatch):
    with pytest.raises(GpuDecodeUnavailable, match="--gpu-decode needs CUDA"):
        require_cuda("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GpuDecodeUnavailable, match="no CUDA device is available"):
        require_cuda("cuda")
