"""nnunet-nerve: the FC-DenseNet of Balsiger et al. (Front. Neurol. 2018) as an nnU-Net v2 plug-in."""
__version__ = "0.1.0"

__all__ = ["FCDenseNet", "__version__"]


def __getattr__(name):
    # The network pulls in torch; keep `import nnunet_nerve` (and the CLI's --help) light.
    if name == "FCDenseNet":
        from nnunet_nerve.network.fcdensenet import FCDenseNet
        return FCDenseNet
    raise AttributeError(f"module 'nnunet_nerve' has no attribute {name!r}")
