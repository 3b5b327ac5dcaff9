import torch

from . import _library


def info() -> dict:
    """What was built (torch/Triton/CUDA versions, arch, compiled variants) and what runs now."""
    build = _library.build_info()
    return {
        "version": build["version"],
        "torch_build": build["torch"],
        "torch_runtime": torch.__version__,
        "triton_build": build["triton"],
        "cuda_build": build["cuda"],
        "arch": build["arch"],
        "cuda_available": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "variants": _library.kernel_catalog(),
    }
