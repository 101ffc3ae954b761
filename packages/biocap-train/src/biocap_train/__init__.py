"""biocap-train: the BioCAP training loop, from a laptop demo to multi-node torchrun.

Python API::

    from biocap_train import TrainConfig, train
    result = train(TrainConfig(train_data="shards/shard-{000000..000159}.tar", model="ViT-B-16",
                               pretrained="openai", epochs=50, lr=1e-4, warmup=500))
    result.checkpoint, result.zeroshot
"""

from importlib.metadata import version as _version

__version__ = _version("biocap-train")

from biocap_train.config import TrainConfig
from biocap_train.trainer import TrainingDiverged, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "__version__", "train"]
