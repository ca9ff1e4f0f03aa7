"""Registry -> nnU-Net raw dataset, in the spirit of nnunetv2/dataset_conversion: the conversion
itself lives in ``nnunet_nerve.registry.conversion`` (``nnunet-nerve convert`` calls it)."""
from nnunet_nerve.registry.conversion import convert_registry  # noqa: F401

if __name__ == "__main__":
    import sys

    from nnunet_nerve.app.cli import main

    sys.exit(main(["convert", *sys.argv[1:]]))
