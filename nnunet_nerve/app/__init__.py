"""The application layer: the command line `nnunet-nerve` (parsing, dispatch to nnunet_nerve.api, printing)."""
