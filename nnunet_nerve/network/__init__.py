"""The FC-DenseNet of Balsiger et al. (2018): a plain ``torch.nn.Module`` that knows nothing of nnU-Net."""
from nnunet_nerve.network.fcdensenet import FCDenseNet

__all__ = ["FCDenseNet"]
